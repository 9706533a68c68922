"""Labelled, unpaired training items for cross-modal augmentation (DUIIT).

The user has a few labelled subjects in the target modality (e.g. CT with age) and
other, labelled subjects in one or more source modalities (T1, PET). Every subject
serves one role only, so source and target images always come from different people
(unpaired by construction): a subject that has only one of the modalities takes that
role; a subject that has several joins the role with the fewest subjects so far among
those it can fill (seeded order), so a phantom cohort where everybody has everything
splits into disjoint, balanced pools.

Labels come from ``participants.tsv`` (or the manifest): ``age`` in years (the paper's
regression task) or the diagnosis column (classification, over the store's vocabulary).
Subjects without the label are left out of every pool.

Every draw is a pure function of (seed, epoch, index), as in ``TranslationDataset``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from synth_core.data.datasets import SPATIAL, _crop, mask_window
from synth_core.data.discover import SubjectRecord
from synth_core.data.store import VolumeStore
from synth_core.errors import UserError

TASKS = ("age", "diagnosis")
_POOLS, _ITEM = 0x4C41424C, 0x4C495445


class LabelledDataset(Dataset):
    """Items for a translator trained jointly with a predictor on the target modality.

    Item keys:
        ``target`` (1, *S) float32: a target-modality image of a target-pool subject;
        ``target_age`` float32 years (NaN unknown), ``target_label`` int64 class (-1 unknown);
        ``sources`` (n_sources, 1, *S): one image of each source modality, each of a
        subject of that source's pool; ``source_age`` (n_sources,) years,
        ``source_label`` (n_sources,) classes;
        ``source`` (1, *S): the first source's image, ``age`` its subject's age, ``label`` its
        class (as ``TranslationDataset`` gives them); ``mask`` the target's mask;
        ``target_id``, ``source_ids`` (one per source), ``index``.

    Args:
        store: preprocessed volumes.
        records: the training subjects.
        sources: source modality keys (one or more).
        target: the target modality key.
        task: "age" (regression) or "diagnosis" (classification over ``store.labels``).
        spatial: "2d" (axial slices whose mask area is at least ``min_slice_fraction`` of
            the subject's largest) or "3d" (whole volumes, or patches centred in the mask).
        patch_size: 3D only: a patch per axis, or None for whole volumes.
        samples_per_epoch: default: the target and source images available (slices in 2D).
        seed: seed of the pools and of every draw.
        pools: fixed roles {modality: subject ids} instead of the automatic split.
    """

    def __init__(self, store: VolumeStore, records: Sequence[SubjectRecord], sources: Sequence[str],
                 target: str, *, task: str = "age", spatial: str = "2d",
                 patch_size: int | Sequence[int] | None = None, samples_per_epoch: int | None = None,
                 seed: int = 0, min_slice_fraction: float = 0.05,
                 pools: dict[str, Sequence[str]] | None = None) -> None:
        if task not in TASKS:
            raise UserError(f"task {task!r} is not one of {', '.join(TASKS)}")
        if spatial not in SPATIAL:
            raise UserError(f"spatial {spatial!r} is not one of {', '.join(SPATIAL)}")
        self.sources = list(sources)
        if not self.sources or target in self.sources or len(set(self.sources)) != len(self.sources):
            raise UserError(f"sources {', '.join(self.sources) or 'none'} -> {target}: give one or more "
                            "distinct source modalities, none of them the target")
        if spatial == "2d" and patch_size is not None:
            raise UserError("labelled 2D training uses whole axial slices; drop patch_size")
        self.store, self.target, self.task = store, target, task
        self.spatial, self.seed, self.epoch = spatial, int(seed), 0
        self.min_slice_fraction = float(min_slice_fraction)
        self.patch_size = None if patch_size is None else (
            (int(patch_size),) * 3 if isinstance(patch_size, (int, np.integer)) else tuple(int(p) for p in patch_size))
        self.pools = self._make_pools(records, pools)
        for modality, ids in self.pools.items():
            store.preload(ids, [modality])
        self._slices: dict[str, np.ndarray] = {}
        self._mask_index: dict[str, np.ndarray] = {}
        total = sum(len(self._units(ids)) for ids in self.pools.values())
        self.samples_per_epoch = total if samples_per_epoch is None else int(samples_per_epoch)
        if self.samples_per_epoch < 1:
            raise UserError(f"samples_per_epoch {samples_per_epoch} must be positive")

    # ------------------------------------------------------------ labels

    def has_label(self, record: SubjectRecord) -> bool:
        return record.age is not None if self.task == "age" else record.label is not None

    @property
    def classes(self) -> list[str]:
        """The diagnosis vocabulary (class index -> name), the store's sorted labels."""
        return list(self.store.labels)

    def label_summary(self) -> dict[str, Any]:
        """What the predictor's output is scaled by: for age, the mean and standard
        deviation (years) over every labelled training subject of every pool; for a
        diagnosis, its classes. Recorded in the model card."""
        ids = [s for ids in self.pools.values() for s in ids]
        if self.task == "diagnosis":
            return {"task": "diagnosis", "classes": self.classes}
        ages = np.array([self.store.records[s].age for s in ids], dtype=np.float64)
        return {"task": "age", "age_mean": float(ages.mean()),
                "age_std": float(max(ages.std(), 1.0)), "age_range": [float(ages.min()), float(ages.max())]}

    # ------------------------------------------------------------ pools

    def _make_pools(self, records: Sequence[SubjectRecord],
                    fixed: dict[str, Sequence[str]] | None) -> dict[str, list[str]]:
        roles = [self.target, *self.sources]
        labelled = {r.subject_id: r for r in records if self.has_label(r)}
        column = "age" if self.task == "age" else "diagnosis"
        if fixed is not None:
            pools = {m: sorted(fixed.get(m, [])) for m in roles}
            flat = [s for ids in pools.values() for s in ids]
            if len(flat) != len(set(flat)):
                raise UserError("a subject is given two roles; each subject serves one modality only")
            for m, ids in pools.items():
                bad = [s for s in ids if s not in labelled or not self.store.has(s, m)]
                if bad:
                    raise UserError(f"subjects {', '.join(bad)} lack {m} or a {column} label")
        else:
            pools = {m: [] for m in roles}
            rng = np.random.default_rng([_POOLS, self.seed])
            ids = sorted(labelled)
            for i in rng.permutation(len(ids)):
                sid = ids[i]
                can = [m for m in roles if self.store.has(sid, m)]
                if can:  # the least filled role it can serve; ties: the target, then sources in order
                    pools[min(can, key=lambda m: (len(pools[m]), roles.index(m)))].append(sid)
            pools = {m: sorted(v) for m, v in pools.items()}
        empty = [m for m in roles if not pools[m]]
        if empty:
            raise UserError(
                f"no labelled subject left for {', '.join(empty)} (labelled {' -> '.join(roles)} "
                f"training needs subjects with a {column} in participants.tsv for every modality, "
                "each subject in one role): add subjects or fill in the label column")
        return pools

    def _units(self, ids: Sequence[str]) -> list[tuple[str, int | None]]:
        if self.spatial == "3d":
            return [(s, None) for s in ids]
        return [(s, int(z)) for s in ids for z in self.slices(s)]

    def slices(self, subject_id: str) -> np.ndarray:
        """Axial slices (last axis) of a subject whose mask area is non-trivial."""
        if subject_id not in self._slices:
            area = self.store.mask(subject_id)[0].sum(dim=(0, 1)).numpy().astype(np.float64)
            least = max(1.0, self.min_slice_fraction * area.max())
            self._slices[subject_id] = np.flatnonzero(area >= least)
        return self._slices[subject_id]

    # ------------------------------------------------------------ drawing

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def _draw(self, modality: str, rng: np.random.Generator) -> tuple[str, torch.Tensor, torch.Tensor]:
        ids = self.pools[modality]
        sid = ids[int(rng.integers(len(ids)))]
        location: tuple[Any, ...] = (slice(None),)
        if self.spatial == "2d":
            zs = self.slices(sid)
            location = (slice(None), slice(None), slice(None), int(zs[rng.integers(len(zs))]))
        elif self.patch_size is not None:
            location = self._patch(sid, rng)
        return sid, _crop(self.store.get(sid, modality), location), _crop(self.store.mask(sid), location)

    def _patch(self, sid: str, rng: np.random.Generator) -> tuple[slice, ...]:
        mask = self.store.mask(sid)[0]
        size = np.asarray(self.patch_size)
        if np.any(size > np.asarray(mask.shape)):
            raise UserError(f"patch size {tuple(size)} does not fit data of shape {tuple(mask.shape)}")
        if sid not in self._mask_index:
            self._mask_index[sid] = np.flatnonzero(mask.numpy()).astype(np.int64)
        return (slice(None),) + mask_window(mask, self._mask_index[sid], self.patch_size, rng)

    def _labels(self, sid: str) -> tuple[float, int]:
        record = self.store.records[sid]
        age = math.nan if record.age is None else float(record.age)
        label = self.store.labels.index(record.label) if record.label in self.store.labels else -1
        return age, label

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} outside [0, {len(self)})")
        rng = np.random.default_rng([_ITEM, self.seed, self.epoch, index])
        tid, target, mask = self._draw(self.target, rng)
        t_age, t_label = self._labels(tid)
        drawn = [self._draw(m, rng) for m in self.sources]
        labels = [self._labels(sid) for sid, _, _ in drawn]
        sources = torch.stack([image for _, image, _ in drawn])
        return {
            "target": target, "mask": mask,
            "target_age": torch.tensor(t_age, dtype=torch.float32),
            "target_label": torch.tensor(t_label, dtype=torch.int64),
            "sources": sources,
            "source_age": torch.tensor([a for a, _ in labels], dtype=torch.float32),
            "source_label": torch.tensor([c for _, c in labels], dtype=torch.int64),
            "source": sources[0], "age": torch.tensor(labels[0][0], dtype=torch.float32),
            "label": torch.tensor(labels[0][1], dtype=torch.int64),
            "target_id": tid, "source_ids": [sid for sid, _, _ in drawn], "index": index,
        }
