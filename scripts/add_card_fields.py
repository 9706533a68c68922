"""Add the fields training now writes to an older checkpoint's card.

    python scripts/add_card_fields.py CHECKPOINT_DIR DATA_DIR

``intended_use`` and ``training_data.description`` (from DATA_DIR's ``cohort.json``: a
phantom cohort says so), and ``input_reference`` (the shared input check's reference,
``synth_core.input_check``) from up to 32 of the card's training subjects read as
``translate`` reads an input. DATA_DIR must be the cohort the checkpoint was trained
on, or the first subjects of it (regenerate a phantom cohort with its
``modality-synth phantom`` command and seed: subject i depends only on i and the seed).
The card is rewritten atomically; the weights, and so the sha256, are unchanged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from synth_core.data import discover_subjects
from synth_core.input_check import MIN_REFERENCE_SUBJECTS
from synth_core.io import atomic_write_json
from synth_core.methods import get_method_class
from synth_core.training.run import _data_description, _input_references, _intended_use

if __name__ == "__main__":
    folder, data = Path(sys.argv[1]), Path(sys.argv[2])
    card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    # Cards shared without subject IDs: every subject of DATA stands for the training inputs.
    listed = card["training_data"].get("splits", {}).get("train", {}).get("subject_ids")
    records = [r for r in discover_subjects(data) if listed is None or r.subject_id in set(listed)]
    train_ids = listed if listed is not None else [r.subject_id for r in records]
    # Phantom subject i depends only on (i, seed, preset): a smaller cohort of the same seed
    # holds the first training subjects unchanged.
    if len(records) < MIN_REFERENCE_SUBJECTS:
        sys.exit(f"{data} holds {len(records)} of the card's {len(train_ids)} training subjects; "
                 f"give the cohort the checkpoint was trained on (at least {MIN_REFERENCE_SUBJECTS})")
    inputs = [card["source"]]
    if get_method_class(card["method"]).capabilities.bidirectional:
        inputs.append(card["target"])
    card["intended_use"] = _intended_use(data)
    card["training_data"]["description"] = _data_description(data)
    card["input_reference"] = _input_references(records, inputs, card.get("spacing"))
    atomic_write_json(folder / "model.json", card, overwrite=True)
    print(json.dumps({k: card[k] for k in ("intended_use", "input_reference")}, indent=1)[:2000])
