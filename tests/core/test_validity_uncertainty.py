"""Uncertainty and out-of-distribution measures on hand-built cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from synth_core.errors import UserError
from synth_core.validity.uncertainty import (
    auroc,
    calibrated_coverage,
    ood_report,
    sample_calibration,
)


def test_a_calibrated_sampler_covers_the_truth_as_often_as_one_more_draw():
    rng = np.random.default_rng(0)
    k, shape = 8, (30, 30, 30)
    sigma = rng.uniform(0.1, 2.0, size=shape)  # each voxel its own uncertainty
    centre = rng.normal(size=shape)
    samples = centre + sigma * rng.normal(size=(k, *shape))
    truth = centre + sigma * rng.normal(size=shape)  # one more draw
    result = sample_calibration(samples, truth, np.ones(shape, bool))
    assert result["calibrated_coverage"] == pytest.approx(7 / 9)
    assert result["coverage"] == pytest.approx(7 / 9, abs=0.01)
    # Wider where the error is larger: a clearly positive correlation.
    assert result["correlation"] > 0.3 and result["spearman"] > 0.3
    assert result["samples"] == k


def test_overconfident_samples_cover_little_and_errors_that_follow_the_sd_correlate_fully():
    rng = np.random.default_rng(1)
    shape = (20, 20, 20)
    sigma = rng.uniform(0.5, 1.5, size=shape)
    samples = sigma * rng.normal(size=(6, *shape))
    spread = samples.std(axis=0)
    truth = samples.mean(axis=0) + 3.0 * spread  # the error is three SDs everywhere
    mask = np.zeros(shape, bool)
    mask[2:-2, 2:-2, 2:-2] = True
    result = sample_calibration(samples, truth, mask)
    assert result["correlation"] == pytest.approx(1.0)
    assert result["coverage"] < 0.2
    assert result["mean_abs_error"] == pytest.approx(3 * result["mean_sd"])
    with pytest.raises(UserError, match="at least 2 samples"):
        sample_calibration(samples[:1], truth, mask)
    with pytest.raises(UserError, match="do not fit"):
        sample_calibration(samples, truth[:5], mask)


def test_auroc_known_values():
    assert auroc([0, 1, 2], [3, 4]) == 1.0
    assert auroc([3, 4], [0, 1, 2]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5
    assert auroc([0, 2], [1, 3]) == pytest.approx(0.75)  # 3 of 4 pairs ordered right
    assert auroc([0.0, 1.0], [float("inf")]) == 1.0
    assert calibrated_coverage(2) == pytest.approx(1 / 3)
    with pytest.raises(UserError, match="NaN"):
        auroc([0.0], [float("nan")])
    report = ood_report({"t1": [0.0, 1.0], "t2": [5.0, 6.0], "ct": [0.5, 9.0]}, "t1")
    assert report["per_kind"] == {"t2": 1.0, "ct": 0.75}
    assert report["auroc"] == pytest.approx(7 / 8)
    assert report["inputs"] == {"t1": 2, "t2": 2, "ct": 2}
    with pytest.raises(UserError, match="foreign"):
        ood_report({"t1": [0.0]}, "t1")
