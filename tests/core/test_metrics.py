"""Metrics against scikit-image's own and against plain numpy recomputations."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from synth_core.errors import UserError
from synth_core.metrics import corrcoef, evaluate, mae, psnr, roi_means, scoring_normalise, ssim
from synth_core.volume import Volume


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    target = rng.uniform(0.0, 2.0, size=(12, 11, 10))
    pred = target + rng.normal(0.0, 0.2, size=target.shape)
    return pred, target


@pytest.fixture
def mask() -> np.ndarray:
    m = np.zeros((12, 11, 10), dtype=bool)
    m[2:10, 3:9, 2:8] = True
    m[5, 5, 5] = False
    return m


def test_psnr_and_ssim_equal_scikit_image(pair):
    pred, target = pair
    expected_psnr = peak_signal_noise_ratio(target, pred, data_range=2.5)
    expected_ssim = structural_similarity(target, pred, data_range=2.5)
    assert psnr(pred, target, data_range=2.5) == pytest.approx(expected_psnr, abs=1e-6)
    assert ssim(pred, target, data_range=2.5) == pytest.approx(expected_ssim, abs=1e-6)


def test_ssim_with_full_mask_equals_unmasked(pair):
    pred, target = pair
    full = np.ones(target.shape, dtype=bool)
    assert ssim(pred, target, 2.0, mask=full) == pytest.approx(ssim(pred, target, 2.0), abs=1e-12)


def test_masked_ssim_is_mean_of_the_map_inside_the_mask(pair, mask):
    pred, target = pair
    _, ssim_map = structural_similarity(target, pred, data_range=2.0, full=True)
    inside = mask.copy()
    inside[:3], inside[-3:], inside[:, :3], inside[:, -3:] = False, False, False, False
    inside[:, :, :3], inside[:, :, -3:] = False, False
    assert ssim(pred, target, 2.0, mask=mask) == pytest.approx(ssim_map[inside].mean(), abs=1e-12)


def test_masked_mae_psnr_and_correlation_match_numpy(pair, mask):
    pred, target = pair
    p, t = pred[mask], target[mask]
    assert mae(pred, target, mask) == pytest.approx(np.abs(p - t).mean(), rel=1e-12)
    mse = ((p - t) ** 2).mean()
    assert psnr(pred, target, 2.0, mask) == pytest.approx(10 * np.log10(4.0 / mse), rel=1e-12)
    assert corrcoef(pred, target, mask) == pytest.approx(np.corrcoef(p, t)[0, 1], rel=1e-12)
    # The mask must matter: unmasked values differ on this input.
    assert mae(pred, target) != pytest.approx(mae(pred, target, mask), rel=1e-6)


def test_identical_inputs_are_perfect(pair):
    _, target = pair
    scores = evaluate(target, target.copy())
    assert scores["mae"] == 0.0
    assert scores["psnr"] == float("inf")
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert scores["corrcoef"] == pytest.approx(1.0, abs=1e-12)


def test_evaluate_takes_volumes_and_defaults_range_to_target_in_mask(pair, mask):
    pred, target = pair
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    scores = evaluate(Volume(pred, affine), Volume(target, affine), mask=Volume(mask, affine))
    # Volumes hold float32; the reference is recomputed from the same float32 voxels.
    p32, t32 = pred.astype(np.float32), target.astype(np.float32)
    data_range = float(t32[mask].max()) - float(t32[mask].min())
    assert scores["psnr"] == pytest.approx(psnr(p32, t32, data_range, mask), rel=1e-12)
    assert scores["ssim"] == pytest.approx(ssim(p32, t32, data_range, mask), rel=1e-12)
    assert scores["mae"] == pytest.approx(mae(p32, t32, mask), rel=1e-12)
    assert set(scores) == {"mae", "psnr", "ssim", "corrcoef", "units", "normalisation"}


def test_mismatched_shapes_raise_a_user_error_naming_both(pair):
    pred, target = pair
    with pytest.raises(UserError, match=r"\(12, 11, 9\).*\(12, 11, 10\).*resample"):
        evaluate(pred[:, :, :9], target)
    with pytest.raises(UserError, match="mask shape"):
        mae(pred, target, mask=np.ones((12, 11, 9), dtype=bool))


def test_empty_mask_gives_nan_but_evaluate_refuses_it(pair):
    pred, target = pair
    empty = np.zeros(target.shape, dtype=bool)
    assert np.isnan(mae(pred, target, empty)) and np.isnan(psnr(pred, target, 2.0, empty))
    assert np.isnan(corrcoef(pred, target, empty))
    border_only = empty.copy()
    border_only[:2] = True  # no voxel 3 or more from the edge
    assert np.isnan(ssim(pred, target, 2.0, border_only))
    with pytest.raises(UserError, match="mask is empty"):
        evaluate(pred, target, mask=empty)


def test_non_finite_input_raises(pair):
    pred, target = pair
    pred = pred.copy()
    pred[0, 0, 0] = np.nan
    with pytest.raises(UserError, match="NaN"):
        evaluate(pred, target)


def test_roi_means_match_numpy():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(8, 8, 8))
    labels = rng.integers(0, 4, size=(8, 8, 8)).astype(np.float32)
    means = roi_means(data, labels)
    assert sorted(means) == [1, 2, 3]
    for label_id, value in means.items():
        assert value == pytest.approx(data[labels == label_id].mean(), rel=1e-12)
    picked = roi_means(data, labels, label_ids=[2, 9])
    assert picked[2] == pytest.approx(means[2], rel=1e-12)
    assert np.isnan(picked[9])


# ---------------------------------------------------------------- the scoring normalisation


def _ramp_mask(shape=(10, 10, 10)) -> tuple[np.ndarray, np.ndarray]:
    """Values 0..100 on the first 101 voxels of a mask, zero elsewhere: percentiles by hand."""
    data = np.zeros(shape)
    mask = np.zeros(shape, dtype=bool)
    flat_d, flat_m = data.reshape(-1), mask.reshape(-1)
    flat_d[:101] = np.arange(101.0)
    flat_m[:101] = True
    return data, mask


def test_scoring_normalise_mr_maps_p1_p99_to_0_1_by_hand():
    data, mask = _ramp_mask()
    out = scoring_normalise(data, "t1", mask)
    # numpy's linear percentiles of 0..100: p1 = 1, p99 = 99, so x -> (x - 1) / 98.
    assert out.reshape(-1)[50] == pytest.approx(49 / 98, abs=1e-12)
    assert out.reshape(-1)[99] == pytest.approx(1.0, abs=1e-12)
    assert out.reshape(-1)[200] == pytest.approx(-1 / 98, abs=1e-12)  # outside the mask: same map
    assert np.array_equal(scoring_normalise(data, "t1-lowres", mask), out)  # derived key = MR


def test_scoring_normalise_pet_divides_by_p95_and_ct_only_clips():
    data, mask = _ramp_mask()
    out = scoring_normalise(data, "pet", mask)
    assert out.reshape(-1)[19] == pytest.approx(19 / 95, abs=1e-12)
    ct = np.array([[[-2000.0, -1024.0, 40.0, 3500.0]]])
    assert scoring_normalise(ct, "ct-sharp", np.ones(ct.shape, bool)).ravel().tolist() == \
        [-1024.0, -1024.0, 40.0, 3000.0]


@pytest.mark.parametrize("modality", ["t2", "pet"])
def test_normalised_scores_ignore_a_global_scale(pair, mask, modality):
    """A prediction with another gain (MR) or dose (PET) scores as the same shape."""
    _, target = pair
    gain = (3.0, 7.0) if modality == "t2" else (2.5, 0.0)  # PET keeps zero at zero
    scores = evaluate(gain[0] * target + gain[1], target, mask=mask, normalise=True,
                      modality=modality)
    assert scores["mae"] == pytest.approx(0.0, abs=1e-12)
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-9)
    assert scores["normalisation"] == {"t2": "mr-p1-p99", "pet": "pet-p95"}[modality]
    assert "data range 1" in scores["units"]


def test_normalised_mr_scores_equal_scikit_image_on_hand_normalised_volumes(pair, mask):
    pred, target = (a.astype(np.float32).astype(np.float64) for a in pair)  # a Volume's float32
    scores = evaluate(Volume(pred, np.eye(4), "flair"), Volume(target, np.eye(4), "flair"),
                      mask=mask, normalise=True)
    lo_p, hi_p = np.percentile(pred[mask], [1, 99])
    lo_t, hi_t = np.percentile(target[mask], [1, 99])
    pn, tn = (pred - lo_p) / (hi_p - lo_p), (target - lo_t) / (hi_t - lo_t)
    assert scores["mae"] == pytest.approx(np.abs(pn - tn)[mask].mean(), rel=1e-12)
    mse = ((pn - tn)[mask] ** 2).mean()
    assert scores["psnr"] == pytest.approx(10 * np.log10(1.0 / mse), rel=1e-12)
    _, ssim_map = structural_similarity(tn, pn, data_range=1.0, full=True)
    inside = mask.copy()
    inside[:3], inside[-3:], inside[:, :3], inside[:, -3:] = False, False, False, False
    inside[:, :, :3], inside[:, :, -3:] = False, False
    assert scores["ssim"] == pytest.approx(ssim_map[inside].mean(), abs=1e-12)
    full = evaluate(pn, tn, data_range=1.0)  # unmasked figures differ: the mask matters
    assert full["mae"] != pytest.approx(scores["mae"], rel=1e-3)


def test_ct_is_scored_in_hu_over_the_synthrad_range():
    rng = np.random.default_rng(5)
    target = rng.uniform(-1000, 1500, size=(12, 12, 12))
    pred = target + 10.0
    pred[0, 0, 0] = 5000.0  # clipped to 3000 before scoring
    head = np.ones(target.shape, dtype=bool)
    scores = evaluate(pred, target, mask=head, normalise=True, modality="ct")
    clipped = np.clip(pred, -1024, 3000)
    assert scores["mae"] == pytest.approx(np.abs(clipped - target).mean(), rel=1e-12)
    assert scores["psnr"] == pytest.approx(
        peak_signal_noise_ratio(target, clipped, data_range=4024.0), rel=1e-12)
    assert scores["ssim"] == pytest.approx(
        structural_similarity(target, clipped, data_range=4024.0), abs=1e-12)
    assert scores["normalisation"] == "ct-hu" and "HU" in scores["units"]


def test_normalised_default_mask_is_the_targets_foreground():
    target = np.zeros((16, 16, 16))
    target[4:12, 4:12, 4:12] = np.random.default_rng(2).uniform(50, 100, (8, 8, 8))
    pred = target * 1.1
    pred[0, 0, 0] = 500.0  # outside the foreground: must not count
    fg = np.zeros(target.shape, dtype=bool)
    fg[4:12, 4:12, 4:12] = True
    default = evaluate(pred, target, normalise=True, modality="pet")
    explicit = evaluate(pred, target, mask=fg, normalise=True, modality="pet")
    assert default["mae"] == pytest.approx(explicit["mae"], abs=1e-12)
    assert default["mae"] == pytest.approx(0.0, abs=1e-12)


def test_raw_scores_say_their_units_and_bad_requests_are_user_errors(pair):
    pred, target = pair
    raw = evaluate(pred, target, data_range=2.0)
    assert raw["normalisation"] == "none" and "data range 2" in raw["units"]
    with pytest.raises(UserError, match="data range"):
        evaluate(pred, target, data_range=2.0, normalise=True, modality="t1")
    with pytest.raises(UserError, match="scoring normalisation"):
        evaluate(pred, target, normalise=True)  # an array without a modality
    with pytest.raises(UserError, match="95th percentile"):
        evaluate(pred, -target, mask=np.ones(target.shape, bool), normalise=True, modality="pet")
