"""Fitted filter baselines for the reconstruction-kernel tasks (``ct-sharp`` <-> ``ct-smooth``).

A learned kernel conversion is only worth having if it beats the filter a physicist would
fit in a minute. RevGAN's thesis (section 6.4) names one for sharp to smooth:
a Gaussian blur whose width is fitted on training data. For smooth to sharp we add its
natural counterpart, an unsharp mask ``x + amount * (x - G_sigma * x)``.

Both are fitted on training subjects by minimising the mean absolute error in HU inside
each subject's head (its CT foreground), and applied unchanged to held-out subjects.
scipy's Gaussian filter and bounded scalar minimiser do the work; what is ours is only the
objective, since no library fits a blur to paired scans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import minimize_scalar

#: Search ranges, in voxels: wider blurs than 4 voxels erase the anatomy of a 4 mm grid.
SIGMA_RANGE = (0.05, 4.0)
AMOUNT_RANGE = (0.0, 20.0)


@dataclass(frozen=True)
class FittedFilter:
    """A fitted filter: ``kind`` "gaussian" (blur) or "unsharp"; ``sigma`` in voxels,
    ``amount`` (unsharp only); ``mae`` the training subjects' mean absolute error (HU)."""

    kind: str
    sigma: float
    amount: float
    mae: float

    def apply(self, data: np.ndarray) -> np.ndarray:
        """The filter on one volume (X, Y, Z) in HU; float32, same shape."""
        x = np.asarray(data, dtype=np.float32)
        blurred = ndi.gaussian_filter(x, self.sigma)
        if self.kind == "gaussian":
            return blurred
        return x + np.float32(self.amount) * (x - blurred)


Pair = tuple[np.ndarray, np.ndarray, np.ndarray]  # (source HU, target HU, boolean mask)


def _mae(pairs: Sequence[Pair], make: FittedFilter) -> float:
    errors = [np.abs(make.apply(src)[m] - tgt[m]).mean() for src, tgt, m in pairs]
    return float(np.mean(errors))


def fit_gaussian_blur(pairs: Sequence[Pair]) -> FittedFilter:
    """The Gaussian blur (sigma in voxels) that best maps sources onto targets (MAE in the masks)."""
    res = minimize_scalar(lambda s: _mae(pairs, FittedFilter("gaussian", s, 0.0, 0.0)),
                          bounds=SIGMA_RANGE, method="bounded", options={"xatol": 1e-3})
    return FittedFilter("gaussian", float(res.x), 0.0, float(res.fun))


def fit_unsharp_mask(pairs: Sequence[Pair], max_amount: float = AMOUNT_RANGE[1]) -> FittedFilter:
    """The unsharp mask ``x + amount * (x - G_sigma x)`` with the lowest MAE in the masks.

    For each sigma, the amount (0 to ``max_amount``) minimising the MAE is found by a
    bounded scalar search; sigma by an outer one. Each sigma blurs the volumes once: the
    amount search then works on the masked voxels alone (``x`` and ``x - G x``). On the
    phantom's kernels the optimum runs towards sigma -> 0, amount -> infinity (a
    Laplacian sharpening), so the fit usually ends on ``max_amount``; raising it gains
    little (docs/methods/revgan.md).
    """
    def best_amount(sigma: float) -> tuple[float, float]:
        parts = []
        for src, tgt, m in pairs:
            x = np.asarray(src, dtype=np.float32)
            detail = x - ndi.gaussian_filter(x, sigma)
            parts.append((x[m], detail[m], np.asarray(tgt, dtype=np.float32)[m]))

        def mae(amount: float) -> float:
            a = np.float32(amount)
            return float(np.mean([np.abs(x + a * d - t).mean() for x, d, t in parts]))

        res = minimize_scalar(mae, bounds=(AMOUNT_RANGE[0], max_amount), method="bounded",
                              options={"xatol": 1e-3})
        return float(res.x), float(res.fun)

    outer = minimize_scalar(lambda s: best_amount(s)[1], bounds=SIGMA_RANGE, method="bounded",
                            options={"xatol": 1e-2})
    amount, mae = best_amount(float(outer.x))
    return FittedFilter("unsharp", float(outer.x), amount, mae)
