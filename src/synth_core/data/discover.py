"""Finding subjects: a phantom/BIDS-like folder or a manifest TSV.

Folder layout (what ``modality-synth phantom`` writes)::

    DATA/participants.tsv                 participant_id, age, sex, diagnosis, ...
    DATA/sub-001/sub-001_t1.nii.gz        one file per modality key (t1, pet, t1-lowres, ...)
    DATA/sub-001/sub-001_brainmask.nii.gz optional brain mask, used for normalisation and sampling

Manifest layout (a TSV anywhere; relative paths are relative to its folder)::

    subject  t1                 pet                 brainmask     age   label
    s01      s01/t1.nii.gz      s01/pet.nii.gz      s01/mask.nii  71.5  AD

An empty cell means that subject lacks that modality (partially paired data).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth_core.errors import UserError
from synth_core.volume import MODALITIES, base_modality

# Longest first, so "x.nii.gz" is not taken for a ".gz" file of key "x.nii".
IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
MASK_KEYS: tuple[str, ...] = ("brainmask", "labels")
LABEL_COLUMNS: tuple[str, ...] = ("diagnosis", "label")
_MISSING = {"", "n/a", "na", "nan", "none", "null"}
_HINT = "see docs/user-guide.md#data"


@dataclass
class SubjectRecord:
    """One subject of a data set.

    Attributes:
        subject_id: e.g. ``"sub-001"`` (the folder name) or the manifest's ``subject`` cell.
        paths: modality key (``t1``, ``pet``, ``t1-lowres``, ...; also ``brainmask`` and
            ``labels`` when present) -> absolute file path.
        age: years, None when unknown.
        label: a class such as the diagnosis (``CN``, ``MCI``, ``AD``), None when unknown.
        extra: the other participant columns (sex, true regional PET values, ...), as text.
    """

    subject_id: str
    paths: dict[str, Path]
    age: float | None = None
    label: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def modalities(self) -> list[str]:
        """The image modality keys this subject has (masks left out), sorted."""
        return sorted(k for k in self.paths if k not in MASK_KEYS)


def discover_subjects(path: str | Path) -> list[SubjectRecord]:
    """Subjects of a folder (``sub-*/sub-*_<key>.<ext>``) or a manifest TSV, sorted by id.

    A folder without ``sub-*`` folders but with exactly one ``.tsv`` file (other than
    ``participants.tsv``) is read as that manifest.

    Raises:
        UserError: the path is missing, holds no subjects, the manifest lacks the
            ``subject`` column, or a listed file does not exist (named with its row).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"data path {path} does not exist: give a data folder or a manifest .tsv")
    if path.is_file():
        if path.suffix.lower() != ".tsv":
            raise UserError(f"{path} is not a folder or a .tsv manifest; {_HINT}")
        return _read_manifest(path)
    subject_dirs = sorted(p for p in path.glob("sub-*") if p.is_dir())
    if subject_dirs:
        return _read_folder(path, subject_dirs)
    manifests = sorted(p for p in path.glob("*.tsv") if p.name != "participants.tsv")
    if len(manifests) == 1:
        return _read_manifest(manifests[0])
    if len(manifests) > 1:
        names = ", ".join(p.name for p in manifests)
        raise UserError(f"{path} holds several manifests ({names}): give the one to use")
    raise UserError(f"no sub-*/ folders and no .tsv manifest in {path}; {_HINT}")


def phantom_cohort(path: str | Path) -> dict[str, Any] | None:
    """How a phantom cohort was made, from the ``cohort.json`` that ``modality-synth phantom``
    writes beside its subjects (in the data folder, or the manifest's folder): its
    ``seed``, ``preset`` and ``n_subjects``, which regenerate it exactly. None for other data."""
    root = Path(path)
    file = (root if root.is_dir() else root.parent) / "cohort.json"
    try:
        cohort = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(cohort, dict) or not cohort.get("Synthetic") or "seed" not in cohort:
        return None
    return {"seed": int(cohort["seed"]), "preset": str(cohort.get("preset")),
            "n_subjects": int(cohort.get("n_subjects", 0))}


def _read_folder(root: Path, subject_dirs: list[Path]) -> list[SubjectRecord]:
    participants = _read_participants(root / "participants.tsv")
    records = []
    for sub_dir in subject_dirs:
        sid = sub_dir.name
        paths: dict[str, Path] = {}
        for file in sorted(sub_dir.iterdir()):
            key = _modality_key(file.name, sid)
            # Two formats of one key: the earlier suffix in IMAGE_SUFFIXES wins, always.
            if key is not None and (key not in paths or _rank(file) < _rank(paths[key])):
                paths[key] = file.resolve()
        if not paths:
            continue  # e.g. a sub-*/ folder holding only derivatives of another kind
        row = participants.get(sid) or participants.get(sid.removeprefix("sub-")) or {}
        row = {k: v for k, v in row.items() if k != "participant_id"}
        records.append(_record(sid, paths, row, f"{root / 'participants.tsv'} row {sid}"))
    if not records:
        raise UserError(
            f"the sub-*/ folders in {root} hold no image files named sub-XXX_<modality>"
            f"{{{','.join(IMAGE_SUFFIXES)}}}; {_HINT}"
        )
    return records


def _modality_key(name: str, subject_id: str) -> str | None:
    prefix = subject_id + "_"
    if not name.startswith(prefix):
        return None
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            key = name[len(prefix) : len(name) - len(suffix)]
            return key or None
    return None


def _rank(file: Path) -> int:
    name = file.name.lower()
    return next(i for i, s in enumerate(IMAGE_SUFFIXES) if name.endswith(s))


def _read_participants(tsv: Path) -> dict[str, dict[str, str]]:
    if not tsv.is_file():
        return {}
    rows, columns = _read_tsv(tsv)
    if "participant_id" not in columns:
        raise UserError(f"{tsv} has no participant_id column: add it (sub-XXX per row)")
    return {row["participant_id"]: row for _, row in rows}


def _read_manifest(tsv: Path) -> list[SubjectRecord]:
    rows, columns = _read_tsv(tsv)
    if "subject" not in columns:
        raise UserError(
            f"manifest {tsv} has no 'subject' column (columns: {', '.join(columns)}): "
            f"add one with a subject id per row; {_HINT}"
        )
    path_columns = [c for c in columns if _is_path_column(c)]
    if not path_columns:
        raise UserError(
            f"manifest {tsv} has no modality column (t1, t2, pet, ...): name each path "
            f"column by its modality key; {_HINT}"
        )
    records: list[SubjectRecord] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        sid = row["subject"].strip()
        where = f"{tsv} row {line} (subject {sid or '?'})"
        if not sid:
            raise UserError(f"{where} has an empty subject id: fill it in")
        if sid in seen:
            raise UserError(f"{where} repeats subject {sid} of row {seen[sid]}: give each once")
        seen[sid] = line
        paths: dict[str, Path] = {}
        for column in path_columns:
            cell = row.get(column, "").strip()
            if cell.lower() in _MISSING:
                continue
            file = Path(cell).expanduser()
            file = (file if file.is_absolute() else tsv.parent / file).resolve()
            if not file.exists():
                raise UserError(
                    f"{where}: the {column} file {file} does not exist: fix the path "
                    "(relative paths are relative to the manifest's folder)"
                )
            paths[column] = file
        if not paths:
            raise UserError(f"{where} lists no file: fill in at least one modality column")
        extra = {k: v for k, v in row.items() if k != "subject" and k not in path_columns}
        records.append(_record(sid, paths, extra, where))
    if not records:
        raise UserError(f"manifest {tsv} has no rows: add one row per subject")
    return sorted(records, key=lambda r: r.subject_id)


def _is_path_column(column: str) -> bool:
    """``t1``, ``t1-lowres``, ``ct-sharp``, ``brainmask``, ``labels``; not ``pet_frontal``
    (participant values such as the true regional PET uptake stay in ``extra``)."""
    return column in MASK_KEYS or ("_" not in column and base_modality(column) in MODALITIES)


def _record(sid: str, paths: dict[str, Path], row: dict[str, str], where: str) -> SubjectRecord:
    age = _parse_age(row.get("age", ""), where)
    label = None
    for column in LABEL_COLUMNS:
        cell = (row.get(column) or "").strip()
        if cell and cell.lower() not in _MISSING:
            label = cell
            break
    extra = {k: v for k, v in row.items() if k != "age" and k not in LABEL_COLUMNS}
    return SubjectRecord(sid, paths, age, label, extra)


def _parse_age(cell: str | None, where: str) -> float | None:
    cell = (cell or "").strip()
    if cell.lower() in _MISSING:
        return None
    try:
        age = float(cell)
    except ValueError:
        raise UserError(f"{where}: age {cell!r} is not a number of years: fix or leave it empty") from None
    if not math.isfinite(age) or age < 0:
        raise UserError(f"{where}: age {cell!r} is not a non-negative number of years")
    return age


def _read_tsv(tsv: Path) -> tuple[list[tuple[int, dict[str, str]]], list[str]]:
    """Rows with their 1-based line numbers (header = line 1) and the column names."""
    try:
        with open(tsv, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = []
            for row in reader:
                clean = {(k or "").strip(): (v or "") for k, v in row.items() if k is not None}
                if any(v.strip() for v in clean.values()):
                    rows.append((reader.line_num, clean))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"cannot read {tsv} ({err}): give a tab-separated UTF-8 file") from None
    return rows, columns
