"""Training items for the methods: paired, unpaired and partially paired; 3D or 2D.

Every draw is a pure function of (seed, epoch, index): a resumed run sees the same data,
and each DDP rank (``DistributedSampler`` hands out disjoint indices) draws its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from synth_core.data.discover import SubjectRecord
from synth_core.data.store import VolumeStore
from synth_core.errors import UserError

MODES = ("paired", "unpaired", "partial")
SPATIAL = ("3d", "2d")
# Tags that keep the seeded streams apart (numpy hashes [1, 2] and [1, 2, 0] alike).
_POOLS, _EPOCH, _ITEM = 0x504F4F4C, 0x45504F43, 0x4954454D
_PATCH_TRIES = 8

Unit = tuple[str, int | None]  # (subject id, axial slice index or None for a 3D draw)


class TranslationDataset(Dataset):
    """Items ``{"source", "target", "age", "label", "paired", "source_id", "target_id",
    "index", "mask"}`` for learning ``source -> target``.

    - ``paired``: source and target from one subject at one location.
    - ``unpaired``: the subjects are split (seeded) into a source half and a target half,
      disjoint; source and target come from the two halves at independent locations.
      Subjects with only one of the two modalities join the half that can use them.
    - ``partial``: ``round(paired_fraction * n)`` of the subjects having both modalities
      are paired, the rest are split into halves as above; a ``paired_fraction`` share of
      each epoch's items are paired (``"paired"`` says which), or a ``paired_share``
      when given (Bi-DPM trains on half-paired batches whatever the paired fraction).

    Locations: ``spatial="3d"`` with ``patch_size=None`` is the whole volume; with a
    patch size a random crop whose centre is drawn from the mask, re-drawn (up to 8
    times) until at least half the patch is inside the mask. ``spatial="2d"`` draws
    axial slices (last axis) whose mask area is at least ``min_slice_fraction`` of the
    subject's largest; a 2D ``patch_size`` crops inside the slice the same way, from
    slices holding at least half a patch of mask (or the subject's largest slice).

    Args:
        store: the preprocessed volumes.
        records: the subjects to draw from (e.g. ``split.train``).
        source, target: modality keys (``t1``, ``pet``, ...).
        mode: ``paired``, ``unpaired`` or ``partial``.
        paired_fraction: share of paired subjects and items (``partial`` only).
        paired_share: ``partial`` only: the share of items that are paired, if not
            ``paired_fraction`` (the paired subjects are then drawn more often).
        spatial: ``3d`` or ``2d``.
        patch_size: voxels, one int or one per axis (3 in 3D, 2 in 2D); None = whole.
        samples_per_epoch: items per epoch; default the number of subjects (3D) or of
            foreground slices over all subjects (2D).
        seed: the seed of every draw.
        min_slice_fraction: 2D: a slice's least mask area, as a share of the largest.
        preload: load every volume the dataset draws from now, in this process, so
            DataLoader workers (forked copies) share one cache instead of each re-reading.

    Item shapes: ``source`` and ``target`` float32 (1, *S), S = patch or volume shape
    (X, Y, Z) in 3D, (X, Y) in 2D; ``mask`` bool (1, *S), the target's mask; ``age``
    float32 scalar, years (NaN unknown); ``label`` int64 index into ``store.labels``
    (-1 unknown); ``paired`` bool scalar.
    """

    def __init__(
        self,
        store: VolumeStore,
        records: Sequence[SubjectRecord],
        source: str,
        target: str,
        *,
        mode: str = "paired",
        paired_fraction: float = 1.0,
        paired_share: float | None = None,
        spatial: str = "3d",
        patch_size: int | Sequence[int] | None = None,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        min_slice_fraction: float = 0.05,
        preload: bool = True,
    ) -> None:
        if mode not in MODES:
            raise UserError(f"data mode {mode!r} is not one of {', '.join(MODES)}")
        if spatial not in SPATIAL:
            raise UserError(f"spatial {spatial!r} is not one of {', '.join(SPATIAL)}")
        if not 0.0 <= paired_fraction <= 1.0:
            raise UserError(f"paired_fraction {paired_fraction} must lie in [0, 1]")
        if paired_share is not None and not 0.0 <= paired_share <= 1.0:
            raise UserError(f"paired_share {paired_share} must lie in [0, 1]")
        self.store, self.source, self.target = store, source, target
        self.mode, self.spatial, self.seed = mode, spatial, int(seed)
        self.min_slice_fraction = float(min_slice_fraction)
        self.epoch = 0
        self.paired_fraction = {"paired": 1.0, "unpaired": 0.0}.get(mode, float(paired_fraction))
        self.patch_size = self._check_patch(patch_size)
        self._split_pools(records)
        if preload:
            self.store.preload(self.paired_subjects + self.source_subjects, [source])
            self.store.preload(self.paired_subjects + self.target_subjects, [target])
        self._slices: dict[str, np.ndarray] = {}
        self._mask_index: dict[tuple[str, int | None], np.ndarray] = {}
        self.paired_units = self._units(self.paired_subjects)
        self.source_units = self._units(self.source_subjects)
        n_units = len(self.paired_units) + len(self.source_units)
        n_units += len(self._units(self.target_subjects))
        self.samples_per_epoch = n_units if samples_per_epoch is None else int(samples_per_epoch)
        if self.samples_per_epoch < 1:
            raise UserError(f"samples_per_epoch {samples_per_epoch} must be positive")
        share = self.paired_fraction
        if mode == "partial" and paired_share is not None and self.paired_subjects:
            share = float(paired_share)
        self.n_paired_items = round(share * self.samples_per_epoch)
        self._perm: tuple[int, np.ndarray] | None = None

    # ------------------------------------------------------------ setup

    def _check_patch(self, patch_size: int | Sequence[int] | None) -> tuple[int, ...] | None:
        if patch_size is None:
            return None
        ndim = 3 if self.spatial == "3d" else 2
        if isinstance(patch_size, (int, np.integer)):
            size: tuple[int, ...] = (int(patch_size),) * ndim
        else:
            size = tuple(int(p) for p in patch_size)
        bounds = self.store.shape[:ndim]
        if len(size) != ndim or min(size) < 1 or any(p > b for p, b in zip(size, bounds, strict=True)):
            raise UserError(
                f"patch size {size} does not fit {self.spatial} data of shape {bounds}: give "
                f"{ndim} positive sizes no larger than that, or None for the whole volume"
            )
        return size

    def _split_pools(self, records: Sequence[SubjectRecord]) -> None:
        ids = sorted({r.subject_id for r in records})
        missing = [s for s in ids if s not in self.store.records]
        if missing:
            raise UserError(f"subjects {', '.join(missing)} are not in the volume store: add them")
        has = self.store.has
        both = [s for s in ids if has(s, self.source) and has(s, self.target)]
        source_only = [s for s in ids if has(s, self.source) and not has(s, self.target)]
        target_only = [s for s in ids if has(s, self.target) and not has(s, self.source)]
        rng = np.random.default_rng([_POOLS, self.seed])
        shuffled = [both[i] for i in rng.permutation(len(both))]
        n_paired = round(self.paired_fraction * len(both))
        if self.paired_fraction > 0 and both:
            n_paired = max(1, n_paired)  # a small positive fraction still pairs someone
        rest = shuffled[n_paired:] if self.mode != "paired" else []
        # Subjects with one modality only already weigh on one side: even the halves out.
        half = (len(rest) + len(target_only) - len(source_only) + 1) // 2
        half = min(max(half, 0), len(rest))
        self.paired_subjects = sorted(shuffled[:n_paired])
        self.source_subjects = sorted(rest[:half] + source_only) if self.mode != "paired" else []
        self.target_subjects = sorted(rest[half:] + target_only) if self.mode != "paired" else []
        task = f"{self.source} -> {self.target}"
        if self.mode != "unpaired" and not self.paired_subjects and self.paired_fraction > 0:
            raise UserError(f"no subject has both {self.source} and {self.target} for paired {task} training")
        if self.paired_fraction < 1 and not (self.source_subjects and self.target_subjects):
            raise UserError(
                f"{self.mode} {task} training needs a {self.source} subject and a different "
                f"{self.target} subject left unpaired (got {len(self.source_subjects)} and "
                f"{len(self.target_subjects)}): add subjects or raise paired_fraction"
            )

    def _units(self, subject_ids: list[str]) -> list[Unit]:
        if self.spatial == "3d":
            return [(s, None) for s in subject_ids]
        return [(s, int(z)) for s in subject_ids for z in self.slices(s)]

    def slices(self, subject_id: str) -> np.ndarray:
        """Axial slice indices (last axis) of the subject whose mask area is non-trivial."""
        if subject_id not in self._slices:
            area = self.store.mask(subject_id)[0].sum(dim=(0, 1)).numpy().astype(np.float64)
            least = max(1.0, self.min_slice_fraction * area.max())
            if self.patch_size is not None:
                # A patch at least half inside the mask needs that much mask in the slice.
                least = max(least, min(0.5 * float(np.prod(self.patch_size)), area.max()))
            keep = area >= least
            self._slices[subject_id] = np.flatnonzero(keep)
        return self._slices[subject_id]

    # ------------------------------------------------------------ drawing

    def set_epoch(self, epoch: int) -> None:
        """Change every draw (as ``DistributedSampler.set_epoch`` does for the order)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def _position(self, index: int) -> int:
        """This epoch's shuffled slot of ``index``: slots below ``n_paired_items`` are paired."""
        if self._perm is None or self._perm[0] != self.epoch:
            rng = np.random.default_rng([_EPOCH, self.seed, self.epoch])
            self._perm = (self.epoch, rng.permutation(self.samples_per_epoch))
        return int(self._perm[1][index])

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} outside [0, {len(self)})")
        rng = np.random.default_rng([_ITEM, self.seed, self.epoch, index])
        slot = self._position(index)
        paired = slot < self.n_paired_items
        if paired:
            sid, z = self.paired_units[slot % len(self.paired_units)]
            src_loc = self._location(sid, z, rng)
            tgt_id, tgt_loc = sid, src_loc
        else:
            sid, z = self.source_units[(slot - self.n_paired_items) % len(self.source_units)]
            src_loc = self._location(sid, z, rng)
            tgt_id = self.target_subjects[int(rng.integers(len(self.target_subjects)))]
            tgt_z = None
            if self.spatial == "2d":
                tgt_slices = self.slices(tgt_id)
                tgt_z = int(tgt_slices[rng.integers(len(tgt_slices))])
            tgt_loc = self._location(tgt_id, tgt_z, rng)
        record = self.store.records[sid]
        label = self.store.labels.index(record.label) if record.label in self.store.labels else -1
        return {
            "source": _crop(self.store.get(sid, self.source), src_loc),
            "target": _crop(self.store.get(tgt_id, self.target), tgt_loc),
            "mask": _crop(self.store.mask(tgt_id), tgt_loc),
            "age": torch.tensor(math.nan if record.age is None else record.age, dtype=torch.float32),
            "label": torch.tensor(label, dtype=torch.int64),
            "paired": torch.tensor(paired),
            "source_id": sid,
            "target_id": tgt_id,
            "index": index,
        }

    def _location(self, sid: str, z: int | None, rng: np.random.Generator) -> tuple[slice | int, ...]:
        """Index into a (1, X, Y, Z) tensor: the slice z and/or a patch that is mostly mask."""
        prefix: tuple[slice | int, ...] = (slice(None),)
        if self.patch_size is None:
            return prefix + ((slice(None), slice(None), z) if z is not None else ())
        mask = self.store.mask(sid)[0]
        plane = mask if z is None else mask[..., z]
        if (sid, z) not in self._mask_index:
            self._mask_index[(sid, z)] = np.flatnonzero(plane.numpy()).astype(np.int64)
        window = mask_window(plane, self._mask_index[(sid, z)], self.patch_size, rng)
        return prefix + window + ((z,) if z is not None else ())


def mask_window(plane: torch.Tensor, inside: np.ndarray, size: Sequence[int],
                rng: np.random.Generator) -> tuple[slice, ...]:
    """A window of ``size`` in the mask ``plane`` (2D or 3D), centred on a random voxel of
    ``inside`` (the flat indices of its mask voxels) and clipped to the bounds, re-drawn up to
    ``_PATCH_TRIES`` times until at least half of it is mask (the fullest drawn otherwise):
    the brain-weighted patch every training dataset draws."""
    size_ = np.asarray(size)
    bounds = np.asarray(plane.shape)
    best, best_fill = np.zeros_like(size_), -1.0
    for _ in range(_PATCH_TRIES if inside.size else 1):
        if inside.size:
            centre = np.array(np.unravel_index(inside[rng.integers(inside.size)], plane.shape))
        else:  # a 2D draw on a slice without mask (cannot happen for listed slices)
            centre = rng.integers(0, bounds)
        corner = np.clip(centre - size_ // 2, 0, bounds - size_)
        window = tuple(slice(int(c), int(c + s)) for c, s in zip(corner, size_, strict=True))
        fill = float(plane[window].float().mean())
        if fill > best_fill:
            best, best_fill = corner, fill
        if fill >= 0.5:
            break
    return tuple(slice(int(c), int(c + s)) for c, s in zip(best, size_, strict=True))


def _crop(volume: torch.Tensor, location: tuple[slice | int, ...]) -> torch.Tensor:
    # A copy, so a method that works in place cannot corrupt the store's cache.
    return volume[location].clone(memory_format=torch.contiguous_format)


class ValidationVolumes(Sequence):
    """Full-volume pairs of held-out subjects, for MAE / PSNR / SSIM during training.

    Items: ``source``, ``target`` float32 (1, X, Y, Z), ``mask`` bool (1, X, Y, Z),
    ``age`` float32 scalar (years, NaN unknown), ``label`` (str; empty when the data has no
    ``participants.tsv`` or no label for the subject, so batches collate), ``subject_id``. Subjects lacking either modality are left out.
    """

    def __init__(
        self, store: VolumeStore, records: Sequence[SubjectRecord], source: str, target: str
    ) -> None:
        self.store, self.source, self.target = store, source, target
        self.subject_ids = sorted(
            r.subject_id for r in records if store.has(r.subject_id, source) and store.has(r.subject_id, target)
        )

    def __len__(self) -> int:
        return len(self.subject_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        sid = self.subject_ids[index]
        record = self.store.records[sid]
        return {
            "source": self.store.get(sid, self.source),
            "target": self.store.get(sid, self.target),
            "mask": self.store.mask(sid),
            "age": torch.tensor(math.nan if record.age is None else record.age, dtype=torch.float32),
            "label": record.label or "",
            "subject_id": sid,
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))
