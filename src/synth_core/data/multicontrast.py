"""Multi-contrast training items: one subject scanned in every modality of a set, a source
and a target drawn from them (any to any).

Every draw is a pure function of (seed, epoch, index), as in :mod:`synth_core.data.datasets`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from synth_core.data.datasets import _ITEM, TranslationDataset, _crop
from synth_core.data.discover import SubjectRecord
from synth_core.data.store import VolumeStore
from synth_core.errors import UserError

_CODES = 0x434F4445  # keeps the code draws apart from the location draws


def check_modality_set(modalities: Sequence[str]) -> tuple[str, ...]:
    """The modalities of an any-to-any model, as a tuple: at least two, none twice."""
    mods = tuple(modalities)
    if len(mods) < 2:
        raise UserError(f"an any-to-any model needs at least two modalities, got "
                        f"{','.join(mods) or 'none'}; give e.g. --modalities t1,t1ce,t2,flair")
    if len(set(mods)) != len(mods):
        raise UserError(f"--modalities {','.join(mods)} names a modality twice; give each once")
    return mods


def complete_subjects(records: Sequence[SubjectRecord], modalities: Sequence[str]) -> list[SubjectRecord]:
    """The subjects scanned in every one of ``modalities`` (the ones a multi-contrast model
    trains and validates on)."""
    return [r for r in records if all(m in r.paths for m in modalities)]


class MultiContrastDataset(TranslationDataset):
    """Items for learning every direction among ``modalities`` with one model.

    Each item is one subject at one location (a whole volume, a 3D patch, or an axial slice
    with an optional 2D crop, drawn as :class:`TranslationDataset` draws paired items). Its
    source modality is drawn uniformly from the M modalities (the paper samples the same
    number of inputs from each), and its target uniformly from all M, the source included
    (``m_y = m_x`` is the paper's self-reconstruction), unless ``include_self`` is False.

    Item keys: those of :class:`TranslationDataset` (``source``, ``target``, ``mask``...)
    and ``source_code``, ``target_code`` (int64 indices into ``modalities``).

    Args:
        store, spatial, patch_size, samples_per_epoch, seed, min_slice_fraction, preload:
            as for :class:`TranslationDataset`.
        records: the subjects; those lacking any of ``modalities`` are left out.
        modalities: the M modality keys, in the order of the one-hot code.
        include_self: draw the target among all M (True) or among the other M - 1.
    """

    def __init__(
        self,
        store: VolumeStore,
        records: Sequence[SubjectRecord],
        modalities: Sequence[str],
        *,
        include_self: bool = True,
        spatial: str = "3d",
        patch_size: int | Sequence[int] | None = None,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        min_slice_fraction: float = 0.05,
        preload: bool = True,
    ) -> None:
        self.modalities = check_modality_set(modalities)
        self.include_self = bool(include_self)
        usable = complete_subjects(records, self.modalities)
        if not usable:
            raise UserError(f"no subject has all of {', '.join(self.modalities)}; an any-to-any "
                            "model trains on subjects scanned in every one")
        super().__init__(store, usable, self.modalities[0], self.modalities[1], mode="paired",
                         spatial=spatial, patch_size=patch_size,
                         samples_per_epoch=samples_per_epoch, seed=seed,
                         min_slice_fraction=min_slice_fraction, preload=preload)
        if preload:
            self.store.preload(self.paired_subjects, self.modalities)

    def codes(self, index: int) -> tuple[int, int]:
        """(source, target) indices into ``modalities`` for item ``index`` this epoch."""
        rng = np.random.default_rng([_CODES, self.seed, self.epoch, int(index)])
        m = len(self.modalities)
        source = int(rng.integers(m))
        if self.include_self:
            target = int(rng.integers(m))
        else:
            target = int((source + 1 + rng.integers(m - 1)) % m)
        return source, target

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} outside [0, {len(self)})")
        # The location is drawn as TranslationDataset draws a paired item's.
        rng = np.random.default_rng([_ITEM, self.seed, self.epoch, index])
        sid, z = self.paired_units[self._position(index) % len(self.paired_units)]
        location = self._location(sid, z, rng)
        source, target = self.codes(index)
        record = self.store.records[sid]
        label = self.store.labels.index(record.label) if record.label in self.store.labels else -1
        return {
            "source": _crop(self.store.get(sid, self.modalities[source]), location),
            "target": _crop(self.store.get(sid, self.modalities[target]), location),
            "mask": _crop(self.store.mask(sid), location),
            "age": torch.tensor(math.nan if record.age is None else record.age, dtype=torch.float32),
            "label": torch.tensor(label, dtype=torch.int64),
            "paired": torch.tensor(True),
            "source_id": sid,
            "target_id": sid,
            "index": index,
            "source_code": torch.tensor(source, dtype=torch.int64),
            "target_code": torch.tensor(target, dtype=torch.int64),
        }


class MultiContrastValidation(Sequence):
    """Whole held-out volumes for validating an any-to-any model during training.

    Subject ``i`` (sorted) is scored in direction ``i mod (M (M - 1))`` of the M (M - 1)
    directions, so a validation pass over at least that many subjects covers them all, and
    always the same ones. Items as :class:`~synth_core.data.ValidationVolumes`, plus
    ``source_code`` and ``target_code``.
    """

    def __init__(self, store: VolumeStore, records: Sequence[SubjectRecord],
                 modalities: Sequence[str]) -> None:
        self.store, self.modalities = store, check_modality_set(modalities)
        self.subject_ids = sorted(r.subject_id for r in complete_subjects(records, self.modalities))
        m = len(self.modalities)
        self.directions = [(a, b) for a in range(m) for b in range(m) if a != b]

    def __len__(self) -> int:
        return len(self.subject_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        sid = self.subject_ids[index]
        source, target = self.directions[index % len(self.directions)]
        record = self.store.records[sid]
        return {
            "source": self.store.get(sid, self.modalities[source]),
            "target": self.store.get(sid, self.modalities[target]),
            "mask": self.store.mask(sid),
            "age": torch.tensor(math.nan if record.age is None else record.age, dtype=torch.float32),
            "label": record.label,
            "subject_id": sid,
            "source_code": torch.tensor(source, dtype=torch.int64),
            "target_code": torch.tensor(target, dtype=torch.int64),
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))
