"""What a model card says about its training data: counts and fingerprints, never paths or IDs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from synth_core.data import discover_subjects, recover_split, split_subjects, subjects_fingerprint
from synth_core.training.card import public_card, scrub_text, training_data_summary
from synth_core.zoo import CARD, bundled_dir

ROOT = Path(__file__).resolve().parents[2]


def test_card_of_a_trained_run_names_its_data_without_path_or_ids(trained, tiny_cohort):
    card = json.loads((trained["pix2pix"].run_dir / CARD).read_text(encoding="utf-8"))
    data = card["training_data"]
    assert str(tiny_cohort) not in json.dumps(card) and "subject_ids" not in json.dumps(card)
    records = discover_subjects(tiny_cohort)
    split = split_subjects([r for r in records if "t1" in r.paths and "pet" in r.paths], seed=0)
    assert data["splits"]["test"]["subjects_sha256"] == subjects_fingerprint(split.ids()["test"])
    assert data["subjects_sha256"] == subjects_fingerprint([r.subject_id for r in records])
    assert (data["n_subjects"], data["mode"], data["split_seed"]) == (6, "paired", 0)
    assert "phantom" not in data  # the tiny cohort has no cohort.json
    assert recover_split([records], data).ids() == split.ids()


def test_a_phantom_cohort_is_named_by_its_seed_and_preset(tiny_cohort, tmp_path):
    data = shutil.copytree(tiny_cohort, tmp_path / "cohort")
    (data / "cohort.json").write_text(json.dumps(
        {"Synthetic": True, "seed": 11, "preset": "small", "n_subjects": 6, "subjects": {}}))
    records = discover_subjects(data)
    summary = training_data_summary(data, records, split_subjects(records, seed=3), mode="paired",
                                    split_seed=3)
    assert summary["phantom"] == {"seed": 11, "preset": "small", "n_subjects": 6}
    assert summary["split_seed"] == 3 and str(tmp_path) not in json.dumps(summary)


def test_an_older_card_is_scrubbed_and_its_split_still_found(tiny_cohort):
    records = discover_subjects(tiny_cohort)
    split = split_subjects(records, seed=0)
    old = {
        "method": "pix2pix", "paper": "paper 001", "sha256": "abc",
        "training_data": {"n_subjects": 6, "path": "/home/someone/study-4411/data",
                          "splits": {k: {"n": len(v), "subject_ids": v} for k, v in split.ids().items()}},
        "bundle_note": "trained with: modality-synth train --data /home/someone/study-4411/data "
                       "--out=/scratch/r1 --from t1 --to pet (log in /var/log/x.txt)",
    }
    card = public_card(old, paper="Isola et al., CVPR 2017")
    text = json.dumps(card)
    assert "/home" not in text and "/scratch" not in text and "sub-0" not in text
    assert "study-4411" not in text and "subject_ids" not in text
    assert card["bundle_note"] == ("trained with: modality-synth train --data DATA --out=RUN "
                                   "--from t1 --to pet (log in PATH)")
    assert card["paper"] == "Isola et al., CVPR 2017" and card["sha256"] == "abc"
    assert card["training_data"]["subjects_sha256"] == subjects_fingerprint([r.subject_id for r in records])
    assert recover_split([records], card["training_data"]).ids() == split.ids()
    assert public_card(card) == card  # idempotent
    assert old["training_data"]["path"]  # the input is not changed


def test_scrub_text_keeps_relative_paths_and_urls():
    text = "python scripts/calibrate_dual_glow.py RUN cohort/ see https://example.org/a/b; T1/T2"
    assert scrub_text(text) == text


@pytest.mark.parametrize("folder", sorted(p for p in bundled_dir().iterdir() if (p / CARD).is_file()),
                         ids=lambda p: p.name)
def test_bundled_cards_carry_no_path_or_subject_ids(folder):
    """Run scripts/scrub_cards.py on the bundled cards when this fails."""
    card = json.loads((folder / CARD).read_text(encoding="utf-8"))
    text = json.dumps(card)
    assert "subject_ids" not in text and "path" not in card["training_data"]
    assert scrub_text(text) == text, "an absolute path in the card"
    assert "paper 0" not in card.get("paper", "")
