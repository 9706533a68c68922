"""Validity measures on hand-built volumes whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from synth_core.errors import UserError
from synth_core.validity import (
    age_change_agreement,
    change_voxel_sets,
    hallucination_volume,
    lesion_contrast_ratio,
    linear_match,
    noise_floor,
    noise_sd,
)

SHAPE = (20, 20, 20)


def _brain() -> np.ndarray:
    brain = np.zeros(SHAPE, bool)
    brain[2:18, 2:18, 2:18] = True
    return brain


def _smooth_truth() -> np.ndarray:
    x, y, z = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in SHAPE), indexing="ij")
    return 100.0 + 20.0 * np.sin(x / 4.0) + 10.0 * np.cos(y / 5.0) + z


# Lesion contrast ---------------------------------------------------------------------

def _lesion_scene(wm: float, lesion: float) -> np.ndarray:
    image = np.full(SHAPE, 50.0)
    image[2:18, 2:18, 2:18] = wm
    image[8:12, 8:12, 8:12] = lesion
    return image


def test_lesion_contrast_ratio_of_a_halved_lesion_is_one_half():
    lesion = np.zeros(SHAPE, bool)
    lesion[8:12, 8:12, 8:12] = True
    wm = _brain()
    truth = _lesion_scene(100.0, 150.0)      # contrast +0.5
    pred = _lesion_scene(200.0, 250.0)       # gain 2 elsewhere, contrast +0.25
    result = lesion_contrast_ratio(pred, truth, lesion, wm)
    assert result["contrast_true"] == pytest.approx(0.5)
    assert result["contrast_pred"] == pytest.approx(0.25)
    assert result["ratio"] == pytest.approx(0.5)
    assert result["lesion_voxels"] == 64
    # Normal white matter leaves out the lesion dilated by 2 voxels (8^3 minus its corners).
    assert result["normal_wm_voxels"] < 16**3 - 64


def test_lesion_contrast_ratio_is_gain_invariant_and_signs_an_inverted_lesion():
    lesion = np.zeros(SHAPE, bool)
    lesion[8:12, 8:12, 8:12] = True
    truth = _lesion_scene(100.0, 60.0)       # dark lesion, contrast -0.4
    assert lesion_contrast_ratio(1.3 * truth, truth, lesion, _brain())["ratio"] == pytest.approx(1.0)
    inverted = _lesion_scene(100.0, 140.0)
    assert lesion_contrast_ratio(inverted, truth, lesion, _brain())["ratio"] == pytest.approx(-1.0)
    erased = _lesion_scene(100.0, 100.0)
    assert lesion_contrast_ratio(erased, truth, lesion, _brain())["ratio"] == pytest.approx(0.0)


def test_lesion_contrast_ratio_refuses_what_it_cannot_measure():
    lesion = np.zeros(SHAPE, bool)
    with pytest.raises(UserError, match="lesion mask is empty"):
        lesion_contrast_ratio(_smooth_truth(), _smooth_truth(), lesion, _brain())
    lesion[8:12, 8:12, 8:12] = True
    with pytest.raises(UserError, match="not positive"):
        lesion_contrast_ratio(_smooth_truth(), _smooth_truth() - 500, lesion, _brain())


# Hallucinations -----------------------------------------------------------------------

def test_linear_match_recovers_gain_and_offset():
    truth = _smooth_truth()
    matched, gain, offset = linear_match(0.5 * truth - 7.0, truth, _brain())
    assert gain == pytest.approx(2.0) and offset == pytest.approx(14.0)
    np.testing.assert_allclose(matched, truth)


def test_hallucination_volume_counts_invented_regions_of_five_voxels_or_more():
    truth = _smooth_truth()
    pred = truth.copy()
    sd = 2.0
    pred[5:7, 5:7, 5:7] += 10 * sd          # 8 voxels, bright: counts
    pred[12, 12, 12:15] -= 10 * sd          # 3 voxels, dark: below 5 voxels, ignored
    pred[10, 4:10, 14] += 2 * sd            # 6 voxels under the 3 SD threshold: ignored
    pred[0, 0, 0:10] += 50 * sd             # outside the brain: ignored
    pred = 1.1 * pred + 5.0                 # a scanner gain the match removes
    result = hallucination_volume(pred, truth, _brain(), sd, voxel_volume_mm3=64.0)
    assert result["regions"] == 1
    assert result["volume_mm3"] == pytest.approx(8 * 64.0)
    assert result["largest_mm3"] == pytest.approx(8 * 64.0)
    assert result["threshold"] == pytest.approx(6.0)
    assert result["gain"] == pytest.approx(1 / 1.1, rel=0.02)


def test_hallucination_volume_joins_diagonal_neighbours_and_is_zero_for_the_truth():
    truth = _smooth_truth()
    pred = truth.copy()
    for i in range(5):  # five voxels touching only at corners: one 26-connected region
        pred[4 + i, 4 + i, 4 + i] += 100.0
    result = hallucination_volume(pred, truth, _brain(), 1.0, voxel_volume_mm3=8.0)
    assert (result["regions"], result["volume_mm3"]) == (1, 40.0)
    clean = hallucination_volume(truth, truth, _brain(), 1.0, voxel_volume_mm3=8.0)
    assert (clean["regions"], clean["volume_mm3"]) == (0, 0.0)


def test_noise_sd_is_the_sd_of_the_residual():
    rng = np.random.default_rng(0)
    truth = _smooth_truth()
    noisy = truth + 3.0 * rng.standard_normal(SHAPE)
    assert noise_sd(noisy, truth, _brain()) == pytest.approx(3.0, rel=0.05)


# Counterfactual age -------------------------------------------------------------------

def _change_maps():
    """True change: -1 in a block, a 0.5-wide edge at -0.5, zero elsewhere in the brain."""
    true = np.zeros(SHAPE)
    true[4:9, 4:16, 4:16] = -1.0
    true[9, 4:16, 4:16] = -0.5
    return true


def test_change_voxel_sets_come_from_the_true_map():
    true = _change_maps()
    ageing, unchanged = change_voxel_sets(true, _brain())
    assert ageing.sum() == 5 * 12 * 12 + 12 * 12  # -1 block and the -0.5 edge (>= 0.25)
    assert unchanged.sum() == _brain().sum() - ageing.sum()
    ageing, _ = change_voxel_sets(true, _brain(), ageing_fraction=0.75)
    assert ageing.sum() == 5 * 12 * 12


def test_age_change_agreement_perfect_half_and_leaky_sliders():
    true = _change_maps()
    brain = _brain()
    perfect = age_change_agreement(true, true, brain)
    assert perfect["slope_ratio"] == pytest.approx(1.0)
    assert perfect["leak_ratio"] == pytest.approx(0.0)
    assert perfect["correlation"] == pytest.approx(1.0)
    half = age_change_agreement(0.5 * true, true, brain)
    assert half["slope_ratio"] == pytest.approx(0.5)
    assert half["correlation"] == pytest.approx(1.0)
    # A slider that also lowers every unchanged voxel by 0.1: leak 0.1 / mean |true| there.
    leaky = true.copy()
    leaky[brain & (true == 0)] = -0.1
    result = age_change_agreement(leaky, true, brain)
    mean_true = np.abs(true[true != 0]).mean()
    assert result["slope_ratio"] == pytest.approx(1.0)
    assert result["leak_ratio"] == pytest.approx(0.1 / mean_true)
    assert 0.5 < result["correlation"] < 1.0


def test_age_change_agreement_of_a_change_in_the_wrong_place():
    true = _change_maps()
    wrong = np.zeros(SHAPE)
    wrong[11:16, 4:16, 4:16] = -1.0  # the same change, moved to voxels that do not age
    result = age_change_agreement(wrong, true, _brain())
    assert result["slope_ratio"] == pytest.approx(0.0)
    # Mean |synthetic| over the 16^3 - 6 * 144 unchanged voxels, over mean |true| on ageing.
    unchanged = 16**3 - 6 * 144
    assert result["leak_ratio"] == pytest.approx((5 * 144 / unchanged) / (5.5 * 144 / (6 * 144)))
    assert result["correlation"] < 0


# Noise floor --------------------------------------------------------------------------

def test_noise_floor_is_the_clean_truth_scored_against_the_noisy_target():
    rng = np.random.default_rng(1)
    clean = _smooth_truth() / 10.0  # PET-like, SUV
    noisy = clean + 0.3 * rng.standard_normal(SHAPE)
    brain = _brain()
    floor = noise_floor(clean, noisy, "pet", brain)
    assert floor["normalisation"] == "pet-p95"
    c = clean / np.percentile(clean[brain], 95)
    n = noisy / np.percentile(noisy[brain], 95)
    expected = peak_signal_noise_ratio(n[brain], c[brain], data_range=1.0)
    assert floor["psnr"] == pytest.approx(expected, rel=1e-6)
    assert floor["psnr"] < noise_floor(clean, clean + 0.03 * rng.standard_normal(SHAPE),
                                       "pet", brain)["psnr"]
