"""The checkpoints shipped inside the package: intact, small, honest about their data, in
their target's units, and above the quality floor on subjects they never saw."""

from __future__ import annotations

import functools
import json
import re

import numpy as np
import pytest

from synth_core import zoo
from synth_core.heldout import (
    CT_SCALE_HU,
    HELDOUT_SEED,
    SCALE_RATIO_RANGE,
    floor_verdict,
    heldout_preset,
    scale_check,
    score_mask,
)
from synth_core.inference import translate
from synth_core.methods import get_method_class
from synth_core.metrics import evaluate

BUNDLED = zoo._scan(zoo.bundled_dir(), "bundled")
SCALE_SUBJECTS = 5  # the first subjects of the held-out cohort: a median over doses, fast
# A 1 mm subject takes a minute or more to generate: a 1 mm checkpoint is checked on one.
SCALE_SUBJECTS_BY_PRESET = {"small": SCALE_SUBJECTS, "full": 2, "fine": 1}


def _directions(info: zoo.CheckpointInfo) -> list[tuple[str, str]]:
    """The (source, target) pairs a checkpoint serves: both ways for a bidirectional one,
    every ordered pair of its modalities for an any-to-any one."""
    if info.any_to_any:
        return [(a, b) for a in info.modalities for b in info.modalities if a != b]
    pairs = [(info.source, info.target)]
    if get_method_class(info.method).capabilities.bidirectional:
        pairs.append((info.target, info.source))
    return pairs


DIRECTIONS = [(c, src, tgt) for c in BUNDLED for src, tgt in _directions(c)]


def _direction_id(value):
    if isinstance(value, str):
        return value
    return value.name


@functools.lru_cache(maxsize=32)
def _heldout_subject(index: int, preset: str, subjects: int, lesion_fraction: float):
    """Subject ``index`` of the held-out cohort as ``heldout.score_checkpoint`` draws it
    (tumours, for an any-to-any card scored with them, planned over the cohort's size)."""
    from synth_core.phantom import generate_subject
    from synth_core.phantom.cohort import _lesion_plan

    lesion = _lesion_plan(subjects, HELDOUT_SEED, lesion_fraction, 0.0)[index]
    return generate_subject(index, seed=HELDOUT_SEED, preset=preset, lesion=lesion)


def test_bundles_are_small():
    sizes = [c.weights.stat().st_size for c in BUNDLED]
    assert sum(sizes) < 64 * 2**20
    assert all(s < 20 * 2**20 for s in sizes)


@pytest.mark.parametrize("info", BUNDLED, ids=[c.name for c in BUNDLED])
def test_bundled_card_is_intact_path_free_and_states_its_use(info):
    card = info.card
    assert card["storage_dtype"] == "float16"
    assert info.sha256 == zoo.sha256_file(info.weights)
    text = json.dumps(card)
    assert not re.search(r'(?<![\w.])/(work|tmp|home|root|Users)/', text), "a machine path"
    assert "synthetic phantom data only: not validated on real scans" in card["intended_use"]
    data = card["training_data"]
    assert "path" not in data and "subject_ids" not in text  # identifiers stay out of cards
    assert len(data["subjects_sha256"]) == 64
    assert all(len(split["subjects_sha256"]) == 64 for split in data["splits"].values())
    assert data["phantom"]["seed"] != HELDOUT_SEED
    assert data["phantom"]["n_subjects"] == data["n_subjects"]
    method = zoo.load_method(info)
    assert all(p.dtype.is_floating_point for p in method.parameters())


@pytest.mark.parametrize("info, src, tgt", DIRECTIONS, ids=_direction_id)
def test_bundled_card_heldout_scores_pass_the_floor(info, src, tgt):
    """The card's held-out figures belong to these weights and pass the floor (the verdict is
    recomputed from the figures, not read from the card)."""
    entry = info.card["heldout"]["directions"][f"{src}->{tgt}"]
    assert entry["checkpoint_sha256"] == info.sha256
    assert entry["cohort"]["seed"] == HELDOUT_SEED
    assert entry["units"] and entry["normalisation"] in ("mr-p1-p99", "pet-p95", "ct-hu")
    verdict = floor_verdict(entry, tgt)
    assert verdict["passes"], (entry["scores"], entry["noise_floor"], entry["scale"], verdict)


@pytest.mark.parametrize("info, src, tgt", DIRECTIONS, ids=_direction_id)
def test_bundled_output_is_in_its_targets_units(info, src, tgt):
    """On held-out subjects the synthetic brain median over the true one has a median within
    0.8-1.25 (CT: the median difference within 10 HU inside the head), and the card's
    per-subject SSIM is what the weights give now."""
    entry = (info.card.get("heldout") or {}).get("directions", {}).get(f"{src}->{tgt}", {})
    rows = {r["subject"]: r for r in entry.get("rows", [])}
    cohort = entry.get("cohort") or {}
    conditions = get_method_class(info.method).capabilities.conditions
    preset = heldout_preset(info.card)
    scales = []
    for index in range(SCALE_SUBJECTS_BY_PRESET[preset]):
        subject = _heldout_subject(index, preset, int(cohort.get("subjects", 8)),
                                   float(cohort.get("lesion_fraction", 0.0)))
        mask = score_mask(subject, tgt)
        result = translate(subject.volumes[src], info.method, tgt, source=src,
                           checkpoint=str(info.directory), device="cpu",
                           age=subject.age if "age" in conditions else None)
        truth = subject.volumes[tgt]
        scales.append(scale_check(result.volume.data, truth.data, mask, tgt))
        if subject.subject_id in rows:
            ssim = evaluate(result.volume, truth, mask=mask, normalise=True, modality=tgt)["ssim"]
            assert ssim == pytest.approx(rows[subject.subject_id]["ssim"], abs=2e-3)
    median = float(np.median(scales))
    if tgt.startswith("ct"):
        assert abs(median) <= CT_SCALE_HU, scales
    else:
        assert SCALE_RATIO_RANGE[0] <= median <= SCALE_RATIO_RANGE[1], scales
