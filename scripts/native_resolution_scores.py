"""Score checkpoints at a phantom cohort's own resolution, with the noise floor beside them.

    .venv/bin/python scripts/native_resolution_scores.py DATA_DIR NAME:METHOD [NAME:METHOD ...]

DATA_DIR: a phantom cohort written with --clean (see docs/benchmarks.md). Prints a markdown
table (synth_core.benchmark_native.score_table) and the rows as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from synth_core.benchmark_native import score_native, score_table

if __name__ == "__main__":
    data = Path(sys.argv[1])
    pairs = [tuple(arg.rsplit(":", 1)) for arg in sys.argv[2:]]
    rows = score_native(data, pairs)  # type: ignore[arg-type]
    print(score_table(rows))
    print(json.dumps(rows))
