"""The in-memory store of preprocessed training volumes.

Each subject's volumes are brought onto one grid per subject (its *reference*: the brain
mask when there is one, else its first image modality), so paired modalities match voxel
for voxel; every subject's grid is then centre-cropped or padded to one common shape so
volumes of different subjects batch together, normalised per volume (``fit_normalisation``
in the brain mask) and padded to a multiple of 2^k for the networks' down-sampling.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from synth_core import io, preprocess
from synth_core.data.discover import MASK_KEYS, SubjectRecord
from synth_core.errors import UserError
from synth_core.preprocess import NormParams, PadInfo
from synth_core.volume import ALL_MODALITIES, Volume


class VolumeStore:
    """Loads each (subject, modality) once, lazily, and keeps it as a float32 tensor.

    Everything is cached in memory (float32 volumes, bool masks): meant for the tens to
    hundreds of subjects a translation model is trained on, not for a whole archive.

    Args:
        records: the subjects the store may serve (e.g. from ``discover_subjects``).
        spacing: voxel size in mm to resample every subject to; None keeps each
            subject's native grid (subjects of different shapes are then cropped or
            padded to the common shape).
        shape: the common grid shape (X, Y, Z) before padding to ``multiple``; default
            the largest subject grid along each axis.
        multiple: every axis is padded up to a multiple of this (16 suits a U-Net of
            depth 4).
        order: spline order for resampling images (masks always use 0).
    """

    def __init__(
        self,
        records: Iterable[SubjectRecord],
        *,
        spacing: float | tuple[float, float, float] | None = None,
        shape: tuple[int, int, int] | None = None,
        multiple: int = 16,
        order: int = 1,
        ct_window: tuple[float, float] = preprocess.CT_WINDOW,
    ) -> None:
        self.ct_window = ct_window  # (centre, half-width) in HU of every CT modality's map
        self.records: dict[str, SubjectRecord] = {r.subject_id: r for r in records}
        if not self.records:
            raise UserError("no subjects to load: check the data folder or manifest")
        self.spacing = spacing
        self.multiple = int(multiple)
        self.order = int(order)
        self.labels: list[str] = sorted({r.label for r in self.records.values() if r.label})
        self._fixed_shape = None if shape is None else tuple(int(s) for s in shape)
        self._common: tuple[int, int, int] | None = None
        self._grids: dict[str, tuple[tuple[int, int, int], np.ndarray, np.ndarray, bool]] = {}
        self._volumes: dict[tuple[str, str], torch.Tensor] = {}
        self._params: dict[tuple[str, str], NormParams] = {}
        self._masks: dict[str, torch.Tensor] = {}
        self._pads: dict[str, tuple[PadInfo, PadInfo]] = {}

    # ------------------------------------------------------------ public

    def get(self, subject_id: str, modality: str) -> torch.Tensor:
        """Normalised volume, float32 Tensor (1, X, Y, Z) on the padded common grid."""
        key = (subject_id, modality)
        if key not in self._volumes:
            self._load(subject_id, modality)
        return self._volumes[key]

    def mask(self, subject_id: str) -> torch.Tensor:
        """Brain mask (or foreground mask when there is none), bool Tensor (1, X, Y, Z)."""
        if subject_id not in self._masks:
            grid_mask = self._grid(subject_id)[2]
            cropped, crop = preprocess.crop_or_pad_to_shape(
                grid_mask.astype(np.uint8), self.common_shape, value=0
            )
            padded, pad = preprocess.pad_to_multiple(cropped, self.multiple, value=0)
            self._pads[subject_id] = (crop, pad)
            self._masks[subject_id] = torch.from_numpy(padded.astype(bool)[None])
        return self._masks[subject_id]

    def norm_params(self, subject_id: str, modality: str) -> NormParams:
        """The per-volume intensity map used by ``get`` (``preprocess.denormalise`` inverts it)."""
        self.get(subject_id, modality)
        return self._params[(subject_id, modality)]

    def preload(self, subject_ids: Iterable[str], modalities: Iterable[str]) -> None:
        """Load now what a dataset will draw from, each (subject, modality) the subject has.

        DataLoader workers start from a copy of this process: whatever they load
        themselves dies with them at the end of each epoch, so fill the cache first.
        """
        modalities = list(modalities)
        for sid in subject_ids:
            self.mask(sid)
            for modality in modalities:
                if self.has(sid, modality):
                    self.get(sid, modality)

    def has(self, subject_id: str, modality: str) -> bool:
        """Whether the subject has a file for this modality."""
        return modality in self._record(subject_id).paths

    @property
    def common_shape(self) -> tuple[int, int, int]:
        """Grid shape (X, Y, Z) of every subject before the padding to ``multiple``.

        Without a fixed ``shape`` this reads every subject's reference file once.
        """
        if self._common is None:
            if self._fixed_shape is not None:
                self._common = self._fixed_shape  # type: ignore[assignment]
            else:
                shapes = np.array([self._grid(sid)[0] for sid in sorted(self.records)])
                self._common = tuple(int(s) for s in shapes.max(axis=0))  # type: ignore[assignment]
        return self._common  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape (X, Y, Z) of every tensor the store returns."""
        m = self.multiple
        return tuple(-(-s // m) * m for s in self.common_shape)  # type: ignore[return-value]

    def padding(self, subject_id: str) -> tuple[PadInfo, PadInfo]:
        """(crop/pad to the common shape, pad to the multiple): ``preprocess.undo_crop_or_pad``
        of the second, then of the first, maps a tensor back onto the subject's grid."""
        self.mask(subject_id)
        return self._pads[subject_id]

    def grid_affine(self, subject_id: str) -> np.ndarray:
        """4x4 voxel-to-world (RAS mm) affine of the subject's tensors (padded grid)."""
        crop, pad = self.padding(subject_id)
        offset = np.add(crop.offset, pad.offset)
        return preprocess.shift_affine(self._grid(subject_id)[1], offset)

    # ------------------------------------------------------------ loading

    def _record(self, subject_id: str) -> SubjectRecord:
        try:
            return self.records[subject_id]
        except KeyError:
            raise UserError(f"subject {subject_id} is not in this data set") from None

    def _read(self, subject_id: str, key: str) -> Volume:
        """The file of ``key``, reoriented to RAS (exact) so the last axis is axial."""
        record = self._record(subject_id)
        if key not in record.paths:
            have = ", ".join(record.modalities) or "none"
            raise UserError(
                f"subject {subject_id} has no {key} file (it has: {have}): add it, or "
                "leave the subject out of this task"
            )
        vol = io.load_volume(record.paths[key], modality=_physics(key))
        return preprocess.reorient_to_ras(vol)[0]

    def _reference_key(self, subject_id: str) -> str:
        keys = self._record(subject_id).paths
        if "brainmask" in keys:
            return "brainmask"
        images = [k for k in keys if k not in MASK_KEYS]
        known = [m for m in ALL_MODALITIES if m in images]
        if known:
            return known[0]
        if images:
            return sorted(images)[0]
        raise UserError(f"subject {subject_id} has only masks, no image: add an image file")

    def _grid(self, subject_id: str) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray, bool]:
        """(shape, affine, mask on that grid, mask is a brain mask) of the subject."""
        if subject_id not in self._grids:
            key = self._reference_key(subject_id)
            order = 0 if key in MASK_KEYS else self.order
            vol = self._read(subject_id, key)
            if self.spacing is not None:
                vol = preprocess.resample(vol, self.spacing, order=order)
            if key == "brainmask":
                mask, is_brain = vol.data > 0.5, True
            else:
                mask, is_brain = preprocess.foreground_mask(vol.data, _physics(key)), False
            if not mask.any():
                path = self._record(subject_id).paths[key]
                raise UserError(f"the mask of {subject_id} ({path}) is empty: check the file")
            self._grids[subject_id] = (vol.shape, vol.affine, mask, is_brain)
        return self._grids[subject_id]

    def _load(self, subject_id: str, modality: str) -> None:
        if modality in MASK_KEYS:
            raise UserError(f"{modality} is a mask, not a modality to translate: pick an image")
        shape, affine, _, _ = self._grid(subject_id)
        vol = self._read(subject_id, modality)
        if self.spacing is not None:
            vol = preprocess.resample(vol, self.spacing, order=self.order)
        if vol.shape != shape or not np.allclose(vol.affine, affine, atol=1e-4):
            vol = preprocess.resample_to_grid(vol, shape, affine, order=self.order)
        data, _ = preprocess.crop_or_pad_to_shape(vol.data, self.common_shape)
        # Normalise exactly as synth_core.inference does for a user's scan, which comes
        # without a brain mask: each volume's own foreground (fit_normalisation's default).
        # Normalising training data inside the brain mask instead shifts T1 intensities
        # (bright scalp fat is outside the brain) and the model then sees other inputs at
        # inference. The brain mask still guides patch sampling and validation metrics.
        params = preprocess.fit_normalisation(data, _physics(modality) or modality,
                                              ct_window=self.ct_window)
        normed, _ = preprocess.pad_to_multiple(preprocess.normalise(data, params), self.multiple)
        self._params[(subject_id, modality)] = params
        self._volumes[(subject_id, modality)] = torch.from_numpy(np.ascontiguousarray(normed[None]))

    def cached(self) -> dict[str, Any]:
        """What is in memory: numbers of volumes and masks and their megabytes."""
        n_bytes = sum(t.numel() * 4 for t in self._volumes.values())
        n_bytes += sum(t.numel() for t in self._masks.values())
        return {"volumes": len(self._volumes), "masks": len(self._masks), "mb": n_bytes / 2**20}



def target_norm_reference(store: VolumeStore, subject_ids: Iterable[str], modality: str) -> dict[str, Any]:
    """The median ``NormParams`` (as a dict) of ``modality`` over ``subject_ids``.

    A synthesized volume has no measured intensities of its own to fit a map on; the
    model card keeps this typical map of the training subjects to bring a synthesis back
    to the modality's units (a.u., SUV, HU) with ``preprocess.denormalise``. Numbers
    (and lists of numbers) take the median field by field; text fields take the most
    common value.
    """
    dicts = [store.norm_params(sid, modality).to_dict() for sid in subject_ids]
    if not dicts:
        raise UserError(f"no training subject with {modality}: cannot fit its intensity reference")
    out: dict[str, Any] = {}
    for name in dicts[0]:
        values = [d[name] for d in dicts]
        if all(_is_number(v) for v in values):
            out[name] = float(np.median(values))
        elif all(isinstance(v, list) and all(_is_number(x) for x in v) for v in values) and (
            len({len(v) for v in values}) == 1
        ):
            out[name] = [float(x) for x in np.median(np.asarray(values, dtype=np.float64), axis=0)]
        else:
            keys = [repr(v) for v in values]
            out[name] = values[max(range(len(values)), key=lambda i: (keys.count(keys[i]), -i))]
    return NormParams.from_dict(out).to_dict()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _physics(key: str) -> str | None:
    """The modality whose physics a file key shares: ``pet_clean`` -> ``pet``; None if unknown."""
    name = key.split("_", 1)[0]
    return name if name in ALL_MODALITIES else None
