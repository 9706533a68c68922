"""Metrics against scikit-image's own and against plain numpy recomputations."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from synth_core.errors import UserError
from synth_core.metrics import corrcoef, evaluate, mae, psnr, roi_means, ssim
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
    assert set(scores) == {"mae", "psnr", "ssim", "corrcoef"}


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
