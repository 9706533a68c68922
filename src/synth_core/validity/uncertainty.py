"""Does a model's uncertainty say where it is wrong, and does it notice an input it never saw?

- ``sample_calibration``: for a stochastic model run ``K`` times (``--samples K``), the
  voxel-wise correlation between the samples' standard deviation and the mean's absolute
  error, and the fraction of true voxels inside the samples' range. A calibrated model
  (the truth one more draw from the same distribution) covers the truth with probability
  ``(K - 1) / (K + 1)``, the figure coverage is read against.
- ``auroc``: how well a score separates inputs of the trained modality from others passed
  as it (1: every foreign input scores above every true one; 0.5: chance).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synth_core.errors import UserError


def calibrated_coverage(k: int) -> float:
    """Probability that one more draw lies inside the range of ``k`` exchangeable draws."""
    if k < 2:
        raise UserError(f"a sample range needs at least 2 samples, got {k}")
    return (k - 1) / (k + 1)


def sample_calibration(samples: np.ndarray, truth: np.ndarray, mask: np.ndarray,
                       ) -> dict[str, Any]:
    """Spread against error, and coverage, of ``K`` samples of a synthetic image.

    Args:
        samples: (K, X, Y, Z) the model's samples, in the truth's units.
        truth: (X, Y, Z) the true image (noise-free: what the model should predict).
        mask: (X, Y, Z) bool, the voxels judged (the brain).

    Returns:
        ``{"correlation", "spearman", "coverage", "calibrated_coverage", "mean_sd",
        "mean_abs_error", "samples"}``: Pearson's and Spearman's correlation of the
        voxel-wise SD with the absolute error of the samples' mean, and the fraction of
        voxels whose truth lies within [min, max] of the samples.
    """
    s = np.asarray(samples, np.float64)
    t = np.asarray(truth, np.float64)
    m = np.asarray(mask).astype(bool)
    if s.ndim != t.ndim + 1 or s.shape[1:] != t.shape or m.shape != t.shape:
        raise UserError(f"samples {s.shape}, truth {t.shape} and mask {m.shape} do not fit: "
                        "give (K, X, Y, Z) samples on the truth's grid")
    k = s.shape[0]
    coverage_reference = calibrated_coverage(k)
    if not m.any():
        raise UserError("the mask is empty: give the brain mask")
    x = s[:, m]
    sd = x.std(axis=0)
    error = np.abs(x.mean(axis=0) - t[m])
    inside = (t[m] >= x.min(axis=0)) & (t[m] <= x.max(axis=0))
    return {"correlation": _pearson(sd, error), "spearman": _spearman(sd, error),
            "coverage": float(inside.mean()), "calibrated_coverage": coverage_reference,
            "mean_sd": float(sd.mean()), "mean_abs_error": float(error.mean()), "samples": k}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import rankdata

    return _pearson(rankdata(a), rankdata(b))


def auroc(true_scores: list[float] | np.ndarray, foreign_scores: list[float] | np.ndarray,
          ) -> float:
    """Area under the ROC curve of a score that should be higher for foreign inputs.

    The probability that a foreign input scores above a true one (ties count half): the
    Mann-Whitney statistic over both counts. Infinite scores (an input refused outright)
    rank above every finite one.
    """
    a = np.asarray(true_scores, np.float64).ravel()
    b = np.asarray(foreign_scores, np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise UserError("AUROC needs at least one true and one foreign input")
    if np.isnan(a).any() or np.isnan(b).any():
        raise UserError("a score is NaN: every input needs a score")
    above = (b[:, None] > a[None, :]).sum() + 0.5 * (b[:, None] == a[None, :]).sum()
    return float(above / (a.size * b.size))


def ood_report(scores: dict[str, list[float]], true_kind: str) -> dict[str, Any]:
    """AUROC of ``true_kind`` against every other kind, and against all of them pooled.

    Args:
        scores: input kind (e.g. "t1", "t2", "pet", "ct") -> one score per input, higher
            meaning less like the trained modality.
        true_kind: the kind the model was trained on.
    """
    if true_kind not in scores:
        raise UserError(f"no scores for the trained modality {true_kind!r}")
    foreign = {k: v for k, v in scores.items() if k != true_kind}
    if not foreign:
        raise UserError("no foreign inputs to tell apart from the trained modality")
    pooled = [s for v in foreign.values() for s in v]
    return {"auroc": auroc(scores[true_kind], pooled),
            "per_kind": {k: auroc(scores[true_kind], v) for k, v in foreign.items()},
            "inputs": {k: len(v) for k, v in scores.items()}}
