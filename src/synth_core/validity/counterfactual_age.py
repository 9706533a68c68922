"""Counterfactual age: does an age slider move what ageing moves, and nothing else?

Given the true change of a subject's PET between two ages (the phantom's counterfactual
scans, ``phantom --ages``) and the change a model puts between the same two ages, the
measure asks three things, with the voxel sets taken from the true change map itself rather
than from region names (a region also holds voxels that do not age):

- slope ratio: the least-squares slope of the synthetic change on the true change over the
  ageing voxels (1: the slider moves uptake as much as ageing does);
- leak ratio: the mean absolute synthetic change over the unchanged voxels as a fraction of
  the mean absolute true change over the ageing voxels (0: nothing moves where nothing ages);
- correlation: Pearson's r of the two change maps over the brain.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synth_core.errors import UserError

AGEING_FRACTION = 0.25  # ageing voxels: |true change| >= this fraction of its 99th percentile
UNCHANGED_FRACTION = 0.01  # unchanged voxels: |true change| <= this fraction of it


def change_voxel_sets(true_change: np.ndarray, brain: np.ndarray,
                      ageing_fraction: float = AGEING_FRACTION,
                      unchanged_fraction: float = UNCHANGED_FRACTION,
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(ageing, unchanged) boolean maps from the true change map, inside ``brain``.

    The scale is the 99th percentile of ``|true_change|`` over the brain's changing voxels
    (a robust maximum): ageing voxels change by at least ``ageing_fraction`` of it, unchanged
    voxels by at most ``unchanged_fraction`` of it; voxels between belong to neither (the
    blurred edge of an ageing region).
    """
    if not 0 <= unchanged_fraction < ageing_fraction <= 1:
        raise UserError("need 0 <= unchanged_fraction < ageing_fraction <= 1, got "
                        f"{unchanged_fraction} and {ageing_fraction}")
    t = np.abs(np.asarray(true_change, dtype=np.float64))
    inside = np.asarray(brain).astype(bool)
    if inside.shape != t.shape:
        raise UserError(f"the brain mask has shape {inside.shape}, the change map {t.shape}: "
                        "resample the mask onto the change map's grid (order=0)")
    moving = t[inside][t[inside] > 0]
    if moving.size == 0:
        raise UserError("the true change map is zero in the brain: there is nothing to compare")
    scale = float(np.percentile(moving, 99.0))
    return inside & (t >= ageing_fraction * scale), inside & (t <= unchanged_fraction * scale)


def age_change_agreement(synthetic_change: np.ndarray, true_change: np.ndarray,
                         brain: np.ndarray, **fractions: float) -> dict[str, Any]:
    """Slope ratio, leak ratio and correlation of a synthetic change map against the truth.

    Args:
        synthetic_change: (X, Y, Z) the model's image at the older age minus at the younger.
        true_change: (X, Y, Z) the true (noise-free) image at the older age minus the younger,
            in the same units (e.g. both in SUVR: each image over its own 95th percentile).
        brain: (X, Y, Z) bool brain mask.
        fractions: ``ageing_fraction`` / ``unchanged_fraction`` for ``change_voxel_sets``.

    Returns:
        ``{"slope_ratio", "leak_ratio", "correlation", "ageing_voxels", "unchanged_voxels"}``.
    """
    s = np.asarray(synthetic_change, dtype=np.float64)
    t = np.asarray(true_change, dtype=np.float64)
    if s.shape != t.shape:
        raise UserError(f"synthetic change shape {s.shape} differs from the true change "
                        f"shape {t.shape}: put both on one grid")
    ageing, unchanged = change_voxel_sets(t, brain, **fractions)
    if not unchanged.any():
        raise UserError("no brain voxel is unchanged in the true change map: the leak ratio "
                        "is undefined")
    ts, ss = t[ageing], s[ageing]
    slope = float(np.dot(ss, ts) / np.dot(ts, ts))  # through the origin: no change, no change
    leak = float(np.abs(s[unchanged]).mean() / np.abs(ts).mean())
    inside = np.asarray(brain).astype(bool)
    a, b = s[inside], t[inside]
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    return {"slope_ratio": slope, "leak_ratio": leak, "correlation": corr,
            "ageing_voxels": int(ageing.sum()), "unchanged_voxels": int(unchanged.sum())}
