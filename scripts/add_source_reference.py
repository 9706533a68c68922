"""Add the source modality's intensity reference to a bidirectional checkpoint's card.

    .venv/bin/python scripts/add_source_reference.py CHECKPOINT_DIR DATA_DIR

Cards written before ``source_reference`` existed bring a ``--reverse`` synthesis back
with the input's own intensity map; this computes the map training now records (the
median over the card's training subjects, ``synth_core.data.target_norm_reference``)
and writes it into ``model.json`` atomically. The weights, and so the sha256, are unchanged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from synth_core.data import VolumeStore, discover_subjects, target_norm_reference
from synth_core.io import atomic_write_json

if __name__ == "__main__":
    folder, data = Path(sys.argv[1]), Path(sys.argv[2])
    card = json.loads((folder / "model.json").read_text())
    records = discover_subjects(data)
    train_ids = set(card["training_data"]["splits"]["train"]["subject_ids"])
    store = VolumeStore(records)
    ids = [r.subject_id for r in records if r.subject_id in train_ids and card["source"] in r.paths]
    card["normalisation"]["source_reference"] = target_norm_reference(store, ids, card["source"])
    atomic_write_json(folder / "model.json", card, overwrite=True)
    print(json.dumps(card["normalisation"]["source_reference"]))
