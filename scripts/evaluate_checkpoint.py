"""Score a checkpoint on its held-out phantom subjects, with the noise floor beside it.

    .venv/bin/python scripts/evaluate_checkpoint.py CHECKPOINT METHOD DATA_DIR [--reverse]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from synth_core.benchmark import evaluate_checkpoint

if __name__ == "__main__":
    ckpt, method, data = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    report = evaluate_checkpoint(ckpt, method, data, reverse="--reverse" in sys.argv)
    print(f"{report['checkpoint']} ({report['direction']}, sha256 {report['sha256'][:12]}), "
          f"{report['split']} subjects {', '.join(report['subjects'])}")
    for key, (mean, sd) in report["mean_sd"].items():
        print(f"  {key:<17} {mean:8.4f} +- {sd:.4f}")
    print(json.dumps(report))
