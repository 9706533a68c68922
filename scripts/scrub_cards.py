"""Make model cards fit to share: no data path, no subject IDs, no machine paths in notes.

    .venv/bin/python scripts/scrub_cards.py [CHECKPOINT_DIR ...] [--data DIR ...]

Without folders, every bundled checkpoint (``src/synth_core/checkpoints/*``). Each card
(``model.json``) is rewritten atomically by ``synth_core.training.card.public_card``: the
training data's ``path`` is dropped, each split's subject ID list becomes its fingerprint,
absolute paths in free-text notes become placeholders (``DATA``, ``RUN``, ``PATH``), and
``paper`` is the method's current citation. A ``--data`` folder (a phantom cohort
regenerated with the seed and size the card's note states) with as many subjects as a card's
data, which reproduce its split, adds that cohort's seed and preset to the card. The weights are not touched, so every sha256
still holds. Running it twice changes nothing the second time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from synth_core.data import discover_subjects, recover_split
from synth_core.errors import UserError
from synth_core.io import atomic_write_json
from synth_core.methods import get_method_class
from synth_core.training.card import public_card
from synth_core.zoo import CARD, bundled_dir


def _matching_folder(card: dict, folders: list[Path]) -> Path | None:
    """The first folder with as many subjects as the card's data that reproduce its split.

    Subject IDs (or their fingerprints) cannot tell two phantom cohorts of one size apart
    (both are sub-001 ... sub-N): the folder is trusted to be the one the note names."""
    for folder in folders:
        records = discover_subjects(folder)
        if len(records) != card["training_data"].get("n_subjects"):
            continue
        paired = [r for r in records if card["source"] in r.paths and card["target"] in r.paths]
        try:
            recover_split([paired, records], card["training_data"])
        except UserError:
            continue
        return folder
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="*", type=Path)
    parser.add_argument("--data", action="append", type=Path, default=[])
    args = parser.parse_args()
    folders = args.checkpoints or sorted(p for p in bundled_dir().iterdir() if (p / CARD).is_file())
    for folder in folders:
        card = json.loads((folder / CARD).read_text(encoding="utf-8"))
        data = _matching_folder(card, args.data)
        new = public_card(card, paper=get_method_class(card["method"]).paper, data_folder=data)
        if new != card:
            atomic_write_json(folder / CARD, new, overwrite=True)
        origin = new["training_data"].get("phantom")
        print(f"{folder.name}: {'scrubbed' if new != card else 'unchanged'}"
              + (f"; phantom seed {origin['seed']}, preset {origin['preset']}" if origin else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
