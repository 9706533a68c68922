"""Bundle a trained run's weights inside the package (float16, a few MB).

    .venv/bin/python scripts/bundle_checkpoint.py RUN_DIR NAME "the training command"

The card is made fit to share as it is copied (``synth_core.training.card.public_card``:
no data path, no subject IDs, absolute paths in the command replaced by placeholders).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from synth_core.io import atomic_write_json
from synth_core.methods import get_method_class
from synth_core.training.card import public_card, scrub_text
from synth_core.zoo import CARD, bundled_dir, export_copy

if __name__ == "__main__":
    run, name, command = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    info = export_copy(run, bundled_dir() / name, dtype="float16",
                       note=f"trained with: {scrub_text(command)}")
    card = json.loads((info.directory / CARD).read_text())
    atomic_write_json(info.directory / CARD, public_card(card, paper=get_method_class(card["method"]).paper),
                      overwrite=True)
    size = (info.directory / "model.safetensors").stat().st_size / 2**20
    print(f"bundled {name}: {size:.1f} MB, sha256 {info.sha256[:16]}")
