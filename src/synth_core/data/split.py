"""Train / validation / test split by subject, and the data summary for the model card.

Slices and patches of one subject are strongly correlated, so a split by slice or by
patch leaks the test subjects into training; every split here is by subject.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synth_core.data.discover import SubjectRecord
from synth_core.errors import UserError


@dataclass
class Split:
    """Three disjoint lists of subjects, each sorted by subject id."""

    train: list[SubjectRecord] = field(default_factory=list)
    val: list[SubjectRecord] = field(default_factory=list)
    test: list[SubjectRecord] = field(default_factory=list)

    def ids(self) -> dict[str, list[str]]:
        """``{"train": [...], "val": [...], "test": [...]}`` subject ids."""
        return {name: [r.subject_id for r in part] for name, part in self.parts().items()}

    def parts(self) -> dict[str, list[SubjectRecord]]:
        return {"train": self.train, "val": self.val, "test": self.test}


def split_subjects(
    records: list[SubjectRecord],
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> Split:
    """Split subjects into train / val / test, deterministically for a seed.

    Sizes are ``round(n * fraction)`` with these floors: validation gets at least one
    subject; test gets at least one when its fraction is positive and n >= 3; training
    keeps at least one. So n = 2 gives train 1, val 1 and an empty test set; n = 3 gives
    1 / 1 / 1. When subjects carry labels (e.g. diagnosis), the split is stratified:
    each label's subjects are shuffled and spread evenly over one ordering, so every
    part gets about its fraction of each label.

    Args:
        records: the subjects (any order; the result does not depend on it).
        fractions: train, val, test shares; they are rescaled to sum to 1.
        seed: the shuffling seed.

    Raises:
        UserError: fewer than 2 subjects, or fractions that are negative or all zero.
    """
    frac = np.asarray(fractions, dtype=np.float64)
    if frac.shape != (3,) or not np.all(np.isfinite(frac)) or np.any(frac < 0) or frac.sum() <= 0:
        raise UserError(f"split fractions {fractions} must be three non-negative numbers (train, val, test)")
    frac = frac / frac.sum()
    ids = [r.subject_id for r in records]
    if len(set(ids)) != len(ids):
        dupes = sorted(k for k, v in Counter(ids).items() if v > 1)
        raise UserError(f"subject ids repeat ({', '.join(dupes)}): give each subject once")
    n = len(records)
    if n < 2:
        raise UserError(
            f"{n} subject(s) found: training needs at least 2 (one to train on, one to validate)"
        )
    n_val = max(1, round(n * frac[1]))
    n_test = round(n * frac[2])
    if frac[2] > 0 and n >= 3:
        n_test = max(1, n_test)
    # Training keeps at least one subject; test gives way before validation does.
    while n - n_val - n_test < 1:
        if n_test > (1 if frac[2] > 0 and n >= 3 else 0):
            n_test -= 1
        else:
            n_val -= 1
    order = _stratified_order(_by_id(records), seed)
    train = order[: n - n_val - n_test]
    val = order[n - n_val - n_test : n - n_test]
    test = order[n - n_test :]
    return Split(_by_id(train), _by_id(val), _by_id(test))


def _by_id(records: list[SubjectRecord]) -> list[SubjectRecord]:
    return sorted(records, key=lambda r: r.subject_id)


def _stratified_order(records: list[SubjectRecord], seed: int) -> list[SubjectRecord]:
    """An ordering whose every prefix holds about the overall share of each label.

    The k-th of a label's m subjects (after a seeded shuffle) sits at (k + u) / m with u
    uniform in [0, 1); sorting all subjects by that position interleaves the labels.
    With no labels this is a plain seeded shuffle.
    """
    rng = np.random.default_rng(seed)
    groups: dict[str, list[SubjectRecord]] = {}
    for r in records:
        groups.setdefault(r.label or "", []).append(r)
    keyed: list[tuple[float, str, SubjectRecord]] = []
    for label in sorted(groups):
        members = [groups[label][i] for i in rng.permutation(len(groups[label]))]
        m = len(members)
        for k, r in enumerate(members):
            keyed.append(((k + float(rng.random())) / m, r.subject_id, r))
    keyed.sort(key=lambda t: (t[0], t[1]))
    return [r for _, _, r in keyed]


def subjects_fingerprint(subject_ids: list[str]) -> str:
    """sha256 (hex) of the sorted subject IDs, one a line: the same set gives the same
    fingerprint whatever its order, so a card can name its subjects without listing them."""
    return hashlib.sha256("\n".join(sorted(subject_ids)).encode("utf-8")).hexdigest()


def summarise(records: list[SubjectRecord], split: Split, split_seed: int = 0) -> dict[str, Any]:
    """JSON-serialisable summary of the data for the model card.

    Subject IDs are not listed, because a shared card should not carry identifiers (they
    are often patient or study codes); each set is named by its fingerprint
    (:func:`subjects_fingerprint`), which :func:`recover_split` checks against the data.

    Returns:
        ``n_subjects`` (total), ``subjects_sha256`` (fingerprint of all), ``split_seed``,
        ``splits`` (per part: ``n``, ``subjects_sha256``, ``label_counts``),
        ``age_range`` ([min, max] years, None when no age is known), ``label_counts``
        (over all records), ``modalities`` (key -> number of subjects having it, masks
        included).
    """
    ages = [float(r.age) for r in records if r.age is not None]
    modalities = Counter(k for r in records for k in r.paths)
    return {
        "n_subjects": len(records),
        "subjects_sha256": subjects_fingerprint([r.subject_id for r in records]),
        "split_seed": int(split_seed),
        "splits": {
            name: {
                "n": len(part),
                "subjects_sha256": subjects_fingerprint([r.subject_id for r in part]),
                "label_counts": _label_counts(part),
            }
            for name, part in split.parts().items()
        },
        "age_range": [min(ages), max(ages)] if ages else None,
        "label_counts": _label_counts(records),
        "modalities": {k: int(modalities[k]) for k in sorted(modalities)},
    }


def recover_split(candidates: list[list[SubjectRecord]], summary: dict[str, Any]) -> Split:
    """The split a card's training-data ``summary`` was made with, found again in the data.

    ``candidates``: the lists of subjects the split may have been drawn from (a paired
    run splits the subjects having both modalities, other runs every subject). Each is
    split again with the card's ``split_seed`` and accepted when every part's fingerprint
    matches. Cards written before fingerprints existed list ``subject_ids``; those are
    used as they are.

    Raises:
        UserError: no candidate reproduces the card's split (other data, or edited data).
    """
    parts = summary.get("splits", {})
    if parts and all("subject_ids" in part for part in parts.values()):
        by_id = {r.subject_id: r for records in candidates for r in records}
        missing = sorted({s for part in parts.values() for s in part["subject_ids"]} - set(by_id))
        if missing:
            raise UserError(f"the data lacks {len(missing)} of the model's subjects "
                            f"(e.g. {missing[0]}); pass the folder the model was trained on")
        return Split(*([by_id[s] for s in parts[name]["subject_ids"]] for name in ("train", "val", "test")))
    seed = int(summary.get("split_seed", 0))
    for records in candidates:
        if len(records) < 2:
            continue
        split = split_subjects(records, seed=seed)
        if all(subjects_fingerprint([r.subject_id for r in part]) == parts.get(name, {}).get("subjects_sha256")
               for name, part in split.parts().items()):
            return split
    raise UserError("these data do not hold the subjects the model was trained and tested on "
                    "(their fingerprints differ from the card's); pass the folder the model was "
                    "trained on, unchanged")


def _label_counts(records: list[SubjectRecord]) -> dict[str, int]:
    counts = Counter(r.label for r in records if r.label is not None)
    return {k: int(counts[k]) for k in sorted(counts)}
