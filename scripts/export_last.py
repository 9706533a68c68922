"""Export a run's latest training state (``last.ckpt``) as a checkpoint folder.

    .venv/bin/python scripts/export_last.py RUN_DIR OUT_DIR

See ``synth_core.training.export_last``: a run exports its best validation step; this
exports the step it has reached (e.g. DUAL-GLOW's state at a chosen step, docs/methods/dual-glow.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

from synth_core.errors import UserError
from synth_core.training import export_last

if __name__ == "__main__":
    try:
        info = export_last(Path(sys.argv[1]), Path(sys.argv[2]))
    except UserError as exc:
        sys.exit(f"error: {exc}")
    print(f"exported step {info.card['steps']} of {sys.argv[1]} to {sys.argv[2]}")
