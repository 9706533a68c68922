"""The fitted kernel baselines recover filters they were made from."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from synth_core.baselines import FittedFilter, fit_gaussian_blur, fit_unsharp_mask


def _pairs(transform, n: int = 2):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        x = ndi.gaussian_filter(rng.normal(0, 300, (20, 20, 20)), 1.0).astype(np.float32)
        out.append((x, transform(x), np.ones(x.shape, bool)))
    return out


def test_gaussian_fit_recovers_the_blur_width() -> None:
    fitted = fit_gaussian_blur(_pairs(lambda x: ndi.gaussian_filter(x, 1.3)))
    assert fitted.sigma == pytest.approx(1.3, abs=0.02)
    assert fitted.mae < 0.5


def test_unsharp_fit_recovers_width_and_amount() -> None:
    truth = FittedFilter("unsharp", 1.5, 0.8, 0.0)
    fitted = fit_unsharp_mask(_pairs(truth.apply))
    assert fitted.sigma == pytest.approx(1.5, abs=0.05)
    assert fitted.amount == pytest.approx(0.8, abs=0.03)
    assert fitted.mae < 1.0
