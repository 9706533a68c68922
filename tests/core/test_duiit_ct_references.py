"""The CT floor references: exact twins score at the noise floor, worse stand-ins score worse."""

from __future__ import annotations

import numpy as np

from synth_core.benchmark_duiit_ct import (
    REFERENCES,
    _shifted,
    bone_fraction,
    ct_references,
    source_visibility,
)
from synth_core.phantom.parameters import CT_HU


def test_the_rebuilt_bone_fraction_reproduces_the_subjects_ct():
    bone, subject = bone_fraction(0, seed=3, preset="small")
    assert bone.shape == subject.clean["ct"].shape and 0 <= bone.min() and bone.max() <= 1
    # (bone_fraction itself checks the rebuilt labels against the subject's.) The bone sits
    # in the skull label (partial volume reaches the brain's edge), none in the white matter.
    labels = subject.volumes["labels"].data
    assert bone[labels == 14].mean() > 0.2 and bone[labels == 11].max() == 0
    assert abs(subject.params["ct_bone_hu"] - CT_HU["bone"]) < 600


def test_references_rank_as_their_errors_should():
    report = ct_references(seed=5, subjects=1, preset="small", atlas_seed=6, atlas_subjects=2)
    mae = {name: report["rows"][name]["mae"][0] for name in REFERENCES}
    assert mae["noise-free"] < 10  # the phantom's CT noise is 6 HU
    assert mae["noise-free"] < mae["nominal-bone"] < mae["blurred-half"] < mae["blurred"]
    assert mae["shifted-half"] < mae["shifted"]
    assert mae["atlas-mean"] > 2 * mae["blurred-half"]


def test_shifting_moves_by_the_step_and_fills_with_air():
    image = np.zeros((4, 3, 3), np.float32)
    image[1] = 100.0
    moved = _shifted(image, 0, 1.0)
    np.testing.assert_allclose(moved[2], 100.0)
    np.testing.assert_allclose(moved[0], -1000.0)
    np.testing.assert_allclose(_shifted(image, 0, 0.5)[1:3, 0, 0], [50.0, 50.0])


def test_the_t1_shows_the_skull_and_the_pet_hardly():
    vis = source_visibility(seed=5, subjects=1, preset="small")
    assert abs(vis["t1"]["scalp_minus_skull_snr"]) > 5
    assert abs(vis["pet"]["scalp_minus_skull_snr"]) < 3
