"""What a model card says about its training data, and the same for cards written before.

A card travels: users share checkpoints, and the package bundles some. It records what the
model was trained on (how many subjects, which modalities, the split's sizes and labels,
for a phantom cohort the seed and preset that regenerate it, a fingerprint of the subject
IDs) but never where the data lay on disk or who the subjects were: folder names and
subject IDs often hold patient or study identifiers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from synth_core.data import Split, SubjectRecord, phantom_cohort, subjects_fingerprint, summarise

# An absolute path in free text (POSIX or a Windows drive), as left by older cards' notes.
_ABSOLUTE = re.compile(r"(?<![\w.:/~-])/(?:[\w.+-]+/)*[\w.+-]+|\b[A-Za-z]:\\[\w\\.-]+")
# Option values a command names a folder by: shown as the placeholder the docs use.
_PLACEHOLDERS = {"--data": "DATA", "--out": "RUN", "--cohort": "COHORT", "-o": "OUT"}


def training_data_summary(data: Path, records: list[SubjectRecord], split: Split, *,
                          mode: str, split_seed: int) -> dict[str, Any]:
    """The card's ``training_data``: :func:`synth_core.data.summarise` (counts, labels, ages,
    modalities, fingerprints) plus the pairing ``mode`` and, for a phantom cohort, its
    ``phantom`` ``{seed, preset, n_subjects}`` from ``cohort.json``. No path, no subject ID."""
    summary = summarise(records, split, split_seed=split_seed) | {"mode": mode}
    origin = phantom_cohort(data)
    if origin is not None:
        summary["phantom"] = origin
    return summary


def scrub_text(text: str) -> str:
    """``text`` with every absolute path replaced: the value of ``--data``/``--out``/...
    by its placeholder (``DATA``, ``RUN``), any other by ``PATH``."""
    for option, placeholder in _PLACEHOLDERS.items():
        text = re.sub(rf"(?<!\S){re.escape(option)}(\s+|=){_ABSOLUTE.pattern}",
                      rf"{option}\g<1>{placeholder}", text)
    return _ABSOLUTE.sub("PATH", text)


def public_card(card: dict[str, Any], paper: str | None = None,
                data_folder: Path | None = None) -> dict[str, Any]:
    """A copy of a (possibly older) card fit to share: the training data's path dropped,
    its split's subject ID lists replaced by their fingerprints, absolute paths in free-text
    notes replaced by placeholders, and ``paper`` (the method's citation) set when given.
    ``data_folder``: the data the model was trained on, when at hand; for a phantom cohort
    its seed and preset are added. The weights are untouched, so the card's sha256 still
    holds. Idempotent."""
    out = dict(card)
    data = dict(out.get("training_data") or {})
    data.pop("path", None)
    splits = {}
    for name, part in (data.get("splits") or {}).items():
        part = dict(part)
        ids = part.pop("subject_ids", None)
        if ids is not None:
            part["subjects_sha256"] = subjects_fingerprint(list(ids))
        splits[name] = part
    if splits:
        data["splits"] = splits
        listed = [s for p in card["training_data"]["splits"].values() for s in p.get("subject_ids", [])]
        if "subjects_sha256" not in data and len(set(listed)) == data.get("n_subjects"):
            data["subjects_sha256"] = subjects_fingerprint(listed)
        # Every run so far was split with seed 0 (neither the CLI nor the Train widget sets
        # another), which recover_split needs once the ID lists are gone.
        data.setdefault("split_seed", 0)
    origin = phantom_cohort(data_folder) if data_folder is not None else None
    if origin is not None:
        data["phantom"] = origin
    if data:
        out["training_data"] = data
    for key in ("bundle_note", "calibrated", "note"):
        if isinstance(out.get(key), str):
            out[key] = scrub_text(out[key])
    if paper is not None:
        out["paper"] = paper
    return out
