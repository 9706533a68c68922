"""Lesions kept and none invented: contrast ratio and hallucinated volume.

A synthetic target is trusted only if a lesion present in the source keeps its contrast and
a healthy source gives no lesion-like structure. Both are measured against the phantom's
truth: the true target for the contrast, the noise-free target for the invented regions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

from synth_core.errors import UserError


def _mask(mask: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    m = np.asarray(mask).astype(bool)
    if m.shape != shape:
        raise UserError(f"the {name} mask has shape {m.shape}, the volume {shape}: "
                        "resample the mask onto the volume's grid (order=0)")
    if not m.any():
        raise UserError(f"the {name} mask is empty: give a mask with at least one voxel")
    return m


def _relative_contrast(image: np.ndarray, lesion: np.ndarray, normal: np.ndarray) -> float:
    background = float(image[normal].mean())
    if not background > 0:
        raise UserError(f"normal white matter has mean {background:g}, not positive: the "
                        "relative lesion contrast needs positive intensities (MR or PET)")
    return (float(image[lesion].mean()) - background) / background


def lesion_contrast_ratio(pred: np.ndarray, target: np.ndarray, lesion: np.ndarray,
                          white_matter: np.ndarray, margin_voxels: int = 2) -> dict[str, Any]:
    """The lesion's contrast against normal white matter in ``pred`` as a ratio of ``target``'s.

    Contrast is relative, ``(mean(lesion) - mean(normal WM)) / mean(normal WM)``, so a global
    gain (MR scanners differ by ~10 %) cancels. Normal white matter is ``white_matter`` minus
    the lesion dilated by ``margin_voxels``, so partial volume at the lesion's edge does not
    count as background.

    Args:
        pred, target: (X, Y, Z) synthetic and true target, positive intensities (MR a.u. or
            PET SUV; not HU).
        lesion: (X, Y, Z) bool, the lesion (tumour, oedema or white-matter hyperintensity).
        white_matter: (X, Y, Z) bool, the white matter (may include the lesion).
        margin_voxels: voxels of white matter around the lesion left out of the background.

    Returns:
        ``{"contrast_pred", "contrast_true", "ratio", "lesion_voxels", "normal_wm_voxels"}``;
        ratio 1 is a lesion kept exactly, 0 a lesion erased, negative a lesion inverted.
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise UserError(f"prediction shape {p.shape} differs from target shape {t.shape}: "
                        "resample the prediction onto the target grid")
    les = _mask(lesion, t.shape, "lesion")
    wm = _mask(white_matter, t.shape, "white-matter")
    near = ndi.binary_dilation(les, iterations=margin_voxels) if margin_voxels > 0 else les
    normal = wm & ~near
    if not normal.any():
        raise UserError("no normal white matter is left outside the lesion and its margin: "
                        "give a larger white-matter mask or a smaller margin")
    true_contrast = _relative_contrast(t, les, normal)
    if true_contrast == 0:
        raise UserError("the lesion has no contrast in the true target: the ratio is undefined")
    pred_contrast = _relative_contrast(p, les, normal)
    return {"contrast_pred": pred_contrast, "contrast_true": true_contrast,
            "ratio": pred_contrast / true_contrast, "lesion_voxels": int(les.sum()),
            "normal_wm_voxels": int(normal.sum())}


def linear_match(pred: np.ndarray, reference: np.ndarray, mask: np.ndarray,
                 ) -> tuple[np.ndarray, float, float]:
    """``gain * pred + offset`` fitted to ``reference`` by least squares inside ``mask``.

    An MR gain differs between subjects (and a synthetic image carries its training
    cohort's), so a prediction is put on the truth's scale before departures are judged.

    Returns:
        (matched (X, Y, Z) float64, gain, offset).
    """
    p = np.asarray(pred, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    m = _mask(mask, r.shape, "brain")
    x, y = p[m], r[m]
    if not np.ptp(x) > 0:
        raise UserError("the prediction is constant inside the brain: nothing to match")
    gain, offset = np.polyfit(x, y, 1)
    return gain * p + offset, float(gain), float(offset)


def noise_sd(noisy: np.ndarray, clean: np.ndarray, mask: np.ndarray) -> float:
    """Standard deviation of ``noisy - clean`` inside ``mask`` (the target's units)."""
    m = _mask(mask, np.shape(clean), "brain")
    return float(np.std(np.asarray(noisy, np.float64)[m] - np.asarray(clean, np.float64)[m]))


def hallucination_volume(pred: np.ndarray, clean: np.ndarray, brain: np.ndarray,
                         noise_sd: float, voxel_volume_mm3: float, threshold_sd: float = 3.0,
                         min_voxels: int = 5) -> dict[str, Any]:
    """Volume (mm^3) of structure in ``pred`` that the noise-free truth does not have.

    ``pred`` is linearly matched to ``clean`` inside the brain (``linear_match``); voxels whose
    matched value departs from ``clean`` by more than ``threshold_sd * noise_sd`` are grouped
    into face-, edge- and corner-connected regions (26-connectivity) inside the brain, and
    regions of at least ``min_voxels`` voxels count. Departures in either direction count: an
    invented dark region is as false as a bright one.

    Args:
        pred: (X, Y, Z) synthetic target of a healthy subject.
        clean: (X, Y, Z) the noise-free true target.
        brain: (X, Y, Z) bool brain mask.
        noise_sd: the target's noise SD in its units (``noise_sd`` of the noisy target).
        voxel_volume_mm3: one voxel's volume.

    Returns:
        ``{"volume_mm3", "regions", "largest_mm3", "gain", "offset", "threshold"}``, the
        threshold in the truth's units.
    """
    if not noise_sd > 0:
        raise UserError(f"the noise SD must be positive, got {noise_sd:g}")
    if min_voxels < 1:
        raise UserError(f"min_voxels must be at least 1, got {min_voxels}")
    matched, gain, offset = linear_match(pred, clean, brain)
    inside = _mask(brain, matched.shape, "brain")
    threshold = threshold_sd * noise_sd
    departs = inside & (np.abs(matched - np.asarray(clean, np.float64)) > threshold)
    regions, count = ndi.label(departs, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(regions.ravel(), minlength=count + 1)[1:]
    kept = sizes[sizes >= min_voxels]
    return {"volume_mm3": float(kept.sum() * voxel_volume_mm3), "regions": int(kept.size),
            "largest_mm3": float(kept.max() * voxel_volume_mm3) if kept.size else 0.0,
            "gain": gain, "offset": offset, "threshold": float(threshold)}
