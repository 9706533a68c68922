"""Bundle a trained run's weights inside the package (float16, a few MB).

    .venv/bin/python scripts/bundle_checkpoint.py RUN_DIR NAME "the training command"
"""

from __future__ import annotations

import sys
from pathlib import Path

from synth_core.zoo import bundled_dir, export_copy

if __name__ == "__main__":
    run, name, command = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    info = export_copy(run, bundled_dir() / name, dtype="float16", note=f"trained with: {command}")
    size = (info.directory / "model.safetensors").stat().st_size / 2**20
    print(f"bundled {name}: {size:.1f} MB, sha256 {info.sha256[:16]}")
