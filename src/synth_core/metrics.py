"""Image similarity between a synthesized volume and its target, and ROI statistics.

Every metric takes ``pred`` and ``target`` of one shape (X, Y, Z) in the same units and an
optional boolean ``mask`` of that shape restricting the voxels compared; a mask that selects
nothing gives NaN (a validation patch outside the brain is not an error; ``evaluate``, which
users call, refuses an empty mask). Computation is in float64.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from skimage.metrics import structural_similarity

from synth_core.errors import UserError
from synth_core.preprocess import foreground_mask
from synth_core.volume import Volume, base_modality

SSIM_WINDOW = 7  # voxels per side, scikit-image's default


def mae(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute error, in the data's units: mean |pred - target| over the mask."""
    p, t = _select(pred, target, mask)
    return float(np.mean(np.abs(p - t))) if p.size else float("nan")


def psnr(
    pred: np.ndarray, target: np.ndarray, data_range: float, mask: np.ndarray | None = None
) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)``; inf when equal.

    ``data_range`` is required: the PSNR of one volume changes with it, so a figure is only
    comparable when the range is stated.
    """
    p, t = _select(pred, target, mask)
    if p.size == 0:
        return float("nan")
    mse = float(np.mean((p - t) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(float(data_range) ** 2 / mse))


def ssim(
    pred: np.ndarray, target: np.ndarray, data_range: float, mask: np.ndarray | None = None
) -> float:
    """3D structural similarity (Wang et al. 2004, eq. 13) with a 7-voxel uniform window.

    Without a mask this is ``skimage.metrics.structural_similarity``: the mean of the SSIM
    map over voxels at least 3 from the border. With a mask, the mean of that map over the
    same interior voxels inside the mask (NaN when the mask has none).
    """
    p, t = _as_pair(pred, target)
    if min(p.shape) < SSIM_WINDOW:
        raise UserError(
            f"volume shape {p.shape} is smaller than the {SSIM_WINDOW}-voxel SSIM window "
            "on some axis: compare larger volumes"
        )
    if mask is None:
        return float(structural_similarity(p, t, data_range=float(data_range)))
    m = _check_mask(mask, p.shape)
    border = (SSIM_WINDOW - 1) // 2
    interior = np.zeros_like(m)
    interior[border:-border, border:-border, border:-border] = True
    m &= interior
    if not m.any():
        return float("nan")
    _, ssim_map = structural_similarity(p, t, data_range=float(data_range), full=True)
    return float(ssim_map[m].mean())


def corrcoef(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation of the voxels in the mask; NaN when either side is constant."""
    p, t = _select(pred, target, mask)
    if p.size == 0:
        return float("nan")
    dp, dt = p - p.mean(), t - t.mean()
    denom = float(np.sqrt(np.sum(dp * dp) * np.sum(dt * dt)))
    if denom == 0.0:
        return float("nan")
    return float(np.sum(dp * dt) / denom)


SCORING_PERCENTILES = (1.0, 99.0)  # MR: the mask's percentiles mapped to 0 and 1
PET_SCORING_PERCENTILE = 95.0  # PET: each volume divided by this percentile of the mask
CT_SCORING_RANGE = (-1024.0, 3000.0)  # HU, SynthRAD's clip range and PSNR/SSIM range
MR_MODALITIES = ("t1", "t1ce", "t2", "flair")

# The one scoring normalisation (``evaluate(..., normalise=True)``): its key, the data range
# it scores with and the units string every printed figure carries.
_SCORING: dict[str, tuple[str, str]] = {
    "mr": ("mr-p1-p99", "MR, each volume's 1st-99th percentile inside the mask -> [0, 1], "
                        "data range 1"),
    "pet": ("pet-p95", "PET, each volume / its 95th percentile inside the mask (SUVR-like), "
                       "data range 1"),
    "ct": ("ct-hu", "HU, clipped to [-1024, 3000]; PSNR and SSIM over that range (4024 HU)"),
}


def scoring_kind(modality: str | None) -> str:
    """``"mr"``, ``"pet"`` or ``"ct"`` for a modality key (``t1-lowres`` is MR, ``ct-sharp``
    CT); a UserError for anything else, since the scoring normalisation depends on it."""
    base = base_modality(modality)
    if base in MR_MODALITIES:
        return "mr"
    if base in ("pet", "ct"):
        return base
    raise UserError(
        f"cannot choose a scoring normalisation for modality {modality!r}: name the target "
        f"file by its modality (e.g. sub-001_t2.nii.gz) or score without normalising"
    )


def scoring_normalise(data: np.ndarray, modality: str | None, mask: np.ndarray) -> np.ndarray:
    """One volume in the project's scoring normalisation, float64, shape as ``data``.

    - MR (t1, t1ce, t2, flair and derived keys): ``(x - p1) / (p99 - p1)`` with p1 and p99
      the 1st and 99th percentiles of ``data`` inside ``mask``, so the mask's robust range
      is [0, 1] whatever the scanner gain.
    - PET: ``x / p95`` with p95 the 95th percentile inside ``mask`` (SUVR-like: a dose
      or global scale cancels).
    - CT: no rescaling (Hounsfield units are absolute); clipped to [-1024, 3000] HU as
      SynthRAD scores it.

    Every volume is normalised by its own statistics: a prediction is never rescaled with
    its target's, which would hide a wrong global scale in MAE but not in SSIM.
    """
    kind = scoring_kind(modality)
    x = np.asarray(data, dtype=np.float64)
    if kind == "ct":
        return np.clip(x, *CT_SCORING_RANGE)
    m = _check_mask(mask, x.shape)
    if not m.any():
        raise UserError("the scoring mask is empty: give a mask with at least one voxel")
    inside = x[m]
    if kind == "mr":
        lo, hi = (float(v) for v in np.percentile(inside, SCORING_PERCENTILES))
        if not hi > lo:
            raise UserError(
                f"the volume is flat inside the mask (1st and 99th percentiles both {lo:g}): "
                "check the volume or the mask"
            )
        return (x - lo) / (hi - lo)
    scale = float(np.percentile(inside, PET_SCORING_PERCENTILE))
    if not scale > 0:
        raise UserError(
            f"the PET's 95th percentile inside the mask is {scale:g}, not positive: "
            "check the volume or the mask"
        )
    return x / scale


def evaluate(
    pred: Volume | np.ndarray,
    target: Volume | np.ndarray,
    mask: Volume | np.ndarray | None = None,
    data_range: float | None = None,
    normalise: bool = False,
    *,
    modality: str | None = None,
) -> dict[str, Any]:
    """MAE, PSNR (dB), SSIM and Pearson correlation of ``pred`` against ``target``.

    Args:
        pred, target: Volumes or arrays of one shape (X, Y, Z), in the same units.
        mask: boolean (or 0/1) Volume or array of that shape: the brain for MR/PET, the head
            for CT. Without normalising, None means all voxels; with ``normalise`` it means
            the target's foreground (``preprocess.foreground_mask``).
        data_range: the range for PSNR and SSIM without normalising; when None it is
            ``target.max() - target.min()``, taken inside the mask when one is given.
            Not allowed with ``normalise`` (the normalisation fixes the range).
        normalise: score in the project's one scoring normalisation, chosen by the target's
            modality (see ``scoring_normalise``): MR and PET with data range 1, CT in HU
            over [-1024, 3000].
        modality: the target's modality when ``target`` is an array (or to override the
            Volume's own).

    Returns:
        ``{'mae', 'psnr', 'ssim', 'corrcoef', 'units', 'normalisation'}``: ``units`` says in
        words what the figures are in, ``normalisation`` is ``"mr-p1-p99"``, ``"pet-p95"``,
        ``"ct-hu"`` or ``"none"``. PSNR is inf for identical volumes, correlation NaN when
        either is constant inside the mask.
    """
    if isinstance(pred, Volume) and isinstance(target, Volume):
        if pred.shape == target.shape and not np.allclose(pred.affine, target.affine, atol=1e-3):
            warnings.warn(
                "prediction and target have the same shape but different affines: "
                "the voxels compared may not be at the same place",
                stacklevel=2,
            )
    p, t = _as_pair(_data(pred), _data(target))
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise UserError("prediction or target has NaN/infinite voxels: fix or mask them first")
    m = None if mask is None else _check_mask(_data(mask), p.shape)
    if m is not None and not m.any():
        raise UserError("the mask is empty: give a mask with at least one voxel")
    if normalise:
        if data_range is not None:
            raise UserError(
                "a data range cannot be given with normalise: the scoring normalisation "
                "fixes it (1 for MR and PET, 4024 HU for CT); drop one of them"
            )
        mod = modality or (target.modality if isinstance(target, Volume) else None)
        kind = scoring_kind(mod)
        if m is None:
            m = foreground_mask(t, mod)
        p, t = scoring_normalise(p, mod, m), scoring_normalise(t, mod, m)
        data_range = CT_SCORING_RANGE[1] - CT_SCORING_RANGE[0] if kind == "ct" else 1.0
        key, units = _SCORING[kind]
    else:
        if data_range is None:
            inside = t if m is None else t[m]
            data_range = float(inside.max() - inside.min())
        key, units = "none", f"the target's own units, data range {data_range:g}"
    if not data_range > 0:
        raise UserError(
            f"data range {data_range} is not positive (a constant target?): give data_range"
        )
    return {
        "mae": mae(p, t, m),
        "psnr": psnr(p, t, data_range, m),
        "ssim": ssim(p, t, data_range, m),
        "corrcoef": corrcoef(p, t, m),
        "units": units,
        "normalisation": key,
    }


def roi_means(
    data: Volume | np.ndarray, labels: Volume | np.ndarray, label_ids: list[int] | None = None
) -> dict[int, float]:
    """Mean of ``data`` in each region of an integer label image of the same shape.

    ``label_ids`` defaults to every non-zero label present; an id that is absent maps to NaN.
    """
    values = np.asarray(_data(data), dtype=np.float64)
    lab = np.rint(np.asarray(_data(labels))).astype(np.int64)
    if lab.shape != values.shape:
        raise UserError(
            f"label shape {lab.shape} differs from the data shape {values.shape}: "
            "resample the labels onto the data's grid (order=0)"
        )
    ids, inverse = np.unique(lab.ravel(), return_inverse=True)
    sums = np.bincount(inverse, weights=values.ravel(), minlength=ids.size)
    counts = np.bincount(inverse, minlength=ids.size)
    means = {int(i): float(s / c) for i, s, c in zip(ids, sums, counts, strict=True)}
    wanted = [i for i in means if i != 0] if label_ids is None else [int(i) for i in label_ids]
    return {i: means.get(i, float("nan")) for i in wanted}


def _data(x: Volume | np.ndarray) -> np.ndarray:
    return x.data if isinstance(x, Volume) else np.asarray(x)


def _as_pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise UserError(
            f"prediction shape {p.shape} differs from target shape {t.shape}: resample the "
            "prediction onto the target grid (preprocess.resample_to_grid) or co-register it"
        )
    return p, t


def _check_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    m = np.asarray(mask).astype(bool)
    if m.shape != shape:
        raise UserError(
            f"mask shape {m.shape} differs from the volume shape {shape}: resample the "
            "mask onto the volume's grid (order=0)"
        )
    return m


def _select(
    pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    p, t = _as_pair(pred, target)
    if mask is None:
        return p.ravel(), t.ravel()
    m = _check_mask(mask, p.shape)
    return p[m], t[m]
