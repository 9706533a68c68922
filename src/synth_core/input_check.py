"""Is the input the modality it is said to be? One cheap check every method shares.

Run by ``translate`` before the model, on the volume as the model will see it (RAS, the
model's voxel size). Two parts:

1. **Physics** (no reference needed): CT is in Hounsfield units, so the air around a head
   lies near -1000 HU; MR magnitude and PET are never far below zero. A CT passed as
   an MR or PET, or an MR passed as CT, fails here.
2. **Intensity fingerprint** against the checkpoint's training inputs, after the
   modality's own normalisation (``preprocess.fit_normalisation``, the map the model's
   input goes through): the 5th to 95th percentiles (19 values) of the foreground, and
   the median of five shells of the foreground by depth (distance from its surface over
   the largest such distance: 0-0.2 is scalp and cortex, 0.8-1 the centre of the brain
   with the ventricles). The card stores the median fingerprint of its training subjects
   and the spread of each value across them (``input_reference``, written at export); the
   score is the largest deviation, in units of that spread, over the 24 values.
   Contrast ordering shows in it: a T1's centre (ventricular fluid, dark) lies below its
   middle shells (white matter, bright), a T2's centre above them (fluid is bright); in an
   FDG-PET the grey matter (about three times white matter) fills the upper half of the
   histogram.

A card without ``input_reference`` (made before it existed), or with one from fewer than
``MIN_REFERENCE_SUBJECTS`` training subjects, gets the physics part only (the score is
still recorded), and the provenance says so. The limits were calibrated on phantom subjects of every
modality and several seeds (``scripts/calibrate_input_check.py``; figures in the user
guide). A large score means the input is unlike the training inputs: mislabelled, or
from data the model never saw (a skull-stripped scan for a model trained on whole heads).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from synth_core.errors import ModalityMismatch
from synth_core.preprocess import (
    LEGACY_CT_WINDOW,
    distance_inside,
    fit_normalisation,
    foreground_masks,
    normalise,
)
from synth_core.volume import base_modality

#: Fractions of the foreground at which the fingerprint reads the normalised intensities.
QUANTILES = tuple(round(q, 2) for q in np.linspace(0.05, 0.95, 19))
#: Depth shells (fraction of the largest distance from the foreground's surface).
SHELLS = ((0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0))
#: The smallest spread of a value across training subjects (normalised units, where the
#: foreground spans about [-1, 1]): a few training subjects can agree by chance.
MIN_SPREAD = 0.03
#: An input interpolated onto a finer model grid (a 4 mm scan through a 2 mm model) is
#: smoother than the training inputs, and its fingerprint drifts: true T1s of the `small`
#: phantom through the 2 mm T1 -> PET model scored 2.6-5.7, T2, PET and CT given as T1
#: 8.7-19.5 (FLAIR 4.4-15.3), so the limit is doubled for such inputs (user guide).
UPSAMPLED_LIMIT_FACTOR = 2.0
#: Volumes of more voxels than this (a 1 mm head; a 2 mm one has about a million) are
#: fingerprinted on every second voxel along each axis.
SUBSAMPLE_ABOVE = 4_000_000
#: The largest deviation accepted, in spreads. Against phantom references of 6 and 10
#: subjects, subjects of seeds the reference never saw scored at most 2.8 as their true
#: modality, and at least 4.5 given as T1 when they were T2, PET or CT (table and command
#: in the user guide).
LIMIT = 4.0
#: Fewer training subjects than this give spreads too uncertain to refuse on: with 4 of
#: them, true phantom inputs scored up to 5.0; the score is then recorded, not enforced.
MIN_REFERENCE_SUBJECTS = 6
#: CT: at least this fraction of the volume below -500 HU (air around the head).
CT_MIN_AIR = 0.02
#: MR/PET: at most this fraction of voxels below -500 (in any unit, a CT's air is there).
NON_CT_MAX_NEGATIVE = 0.01


def fingerprint(data: np.ndarray, modality: str, mask: np.ndarray | None = None) -> np.ndarray:
    """The normalised foreground intensities at ``QUANTILES`` and the median of each depth
    shell (``SHELLS``): float64 array (24,).

    ``data`` (X, Y, Z) in the modality's own units; ``modality`` the one it is said to be;
    ``mask`` its whole head (``preprocess.foreground_masks``' second mask) when the caller has
    it already: the head, not the largest component, so the fingerprint does not depend on
    whether the scalp and the brain joined at the threshold.
    """
    mask = foreground_masks(data, modality)[1] if mask is None else mask
    # A fixed CT window, whatever a checkpoint trained with: the references in the cards
    # were fingerprinted with this one.
    params = fit_normalisation(data, modality, mask=mask, ct_window=LEGACY_CT_WINDOW)
    depth = distance_inside(mask)
    if data.size > SUBSAMPLE_ABOVE:
        # Percentiles and shell medians of a 1 mm head are read as well from every second
        # voxel along each axis (the depth map stays the full grid's: one computed on the
        # coarser grid moved the shell medians by up to 0.02), in about half the time; the
        # agreement with the full grid is tested.
        data, mask, depth = data[::2, ::2, ::2], mask[::2, ::2, ::2], depth[::2, ::2, ::2]
    values = normalise(data.astype(np.float64), params)
    depth = depth / max(float(depth.max()), 1e-6)
    shells = []
    for lo, hi in SHELLS:
        inside = mask & (depth >= lo) & ((depth < hi) if hi < 1.0 else True)
        shells.append(float(np.median(values[inside])) if inside.any() else 0.0)
    return np.concatenate([np.quantile(values[mask], QUANTILES), shells])


def make_reference(volumes: Iterable[np.ndarray], modality: str) -> dict[str, Any]:
    """The card's ``input_reference`` from training inputs of ``modality`` (each (X, Y, Z),
    at the model's voxel size): median fingerprint, per-percentile spread (standard
    deviation across subjects), the number of subjects, and the limit."""
    prints = np.array([fingerprint(v, modality) for v in volumes])
    if len(prints) < 2:
        raise ValueError("an input reference needs at least two training volumes")
    return {
        "modality": modality,
        "quantiles": list(QUANTILES),
        "shells": [list(shell) for shell in SHELLS],
        "median": [round(float(v), 5) for v in np.median(prints, axis=0)],
        "spread": [round(float(v), 5) for v in prints.std(axis=0, ddof=1)],
        "n_subjects": len(prints),
        "limit": LIMIT,
        "method": "max over the 5th-95th foreground percentiles and 5 depth-shell medians "
                  "of |input - median| / spread",
    }


def score(data: np.ndarray, modality: str, reference: dict[str, Any],
          mask: np.ndarray | None = None) -> float:
    """The largest deviation of the input's fingerprint from the reference, in spreads."""
    spread = np.maximum(np.asarray(reference["spread"], dtype=np.float64), MIN_SPREAD)
    deviation = np.abs(fingerprint(data, modality, mask)
                       - np.asarray(reference["median"], dtype=np.float64))
    return float(np.max(deviation / spread))


def check_input(data: np.ndarray, modality: str, reference: dict[str, Any] | None,
                *, name: str = "the input", mask: np.ndarray | None = None,
                upsampled: bool = False) -> dict[str, Any]:
    """Refuse an input that is not ``modality``; return what the sidecar records.

    Raises ``ModalityMismatch`` (a one-line ``UserError`` naming the fix) when the
    physics rule or the fingerprint fails. ``data`` (X, Y, Z) in its own units, at the
    model's voxel size; ``mask`` its head mask (see ``fingerprint``) when the caller has it.
    ``upsampled``: the input was interpolated onto the model's grid from a coarser one; its
    intensities are then smoother than the training inputs', and the limit is
    ``UPSAMPLED_LIMIT_FACTOR`` times the card's.
    """
    base = base_modality(modality) or modality
    air = float(np.mean(data < -500.0))
    record: dict[str, Any] = {"modality": modality, "fraction_below_minus_500": round(air, 4)}
    if base == "ct" and air < CT_MIN_AIR:
        raise ModalityMismatch(
            f"{name} does not look like a CT in Hounsfield units ({air:.1%} of voxels below -500, "
            f"where a head CT's air gives at least {CT_MIN_AIR:.0%}); pass the right --from, or "
            "check the file (a CT must be in HU)")
    if base != "ct" and air > NON_CT_MAX_NEGATIVE:
        raise ModalityMismatch(
            f"{name} does not look like {modality}: {air:.1%} of its voxels are below -500, "
            "as in a CT in Hounsfield units; pass the right --from (ct?), or check the file")
    if reference is None:
        record["fingerprint"] = "skipped: the checkpoint's card has no input_reference"
        return record
    if reference.get("modality") not in (None, modality):
        record["fingerprint"] = f"skipped: the card's reference is for {reference.get('modality')}"
        return record
    value = score(data, modality, reference, mask)
    limit = float(reference.get("limit", LIMIT))
    if upsampled:
        limit *= UPSAMPLED_LIMIT_FACTOR
        record["limit_why"] = (f"{UPSAMPLED_LIMIT_FACTOR:g} x the card's: the input was "
                               "interpolated from a coarser grid than the model's")
    subjects = int(reference.get("n_subjects") or 0)
    enforced = subjects >= MIN_REFERENCE_SUBJECTS
    record.update(score=round(value, 3), limit=limit, reference_subjects=subjects, enforced=enforced)
    if not enforced:
        record["fingerprint"] = (f"not enforced: the reference has {subjects} training subjects, "
                                 f"fewer than {MIN_REFERENCE_SUBJECTS}")
    elif not value <= limit:
        raise ModalityMismatch(
            f"{name} does not look like the {modality} scans this checkpoint was trained on "
            f"(intensity fingerprint {value:.1f} spreads from theirs, limit {limit:g}); pass the "
            "right --from, check the file, or use a checkpoint trained on data like it")
    return record
