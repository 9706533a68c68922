"""Planning a cohort translation: subjects, ids, outputs, checkpoints, resume; all before any work.

``plan_translation`` does every check that can fail before a volume is computed: the
subjects and their ids, the checkpoints and options, where each output goes and whether
OUT_DIR may be written. ``resume`` skips an output whose sidecar records the same
checkpoint sha256 and the same request; a kill loses at most the outputs in flight and
leaves no partial file (each file is written atomically; stale outputs are removed only
once their replacement is computed, and an output counts as done only when its image and
its sidecar are both there).
"""

from __future__ import annotations

import csv
import io as _io
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth_core import zoo
from synth_core.data import SubjectRecord, discover_subjects
from synth_core.errors import UserError
from synth_core.inference import check_request
from synth_core.io import (
    NIFTI_SUFFIXES,
    atomic_write_text,
    guess_modality,
    read_sidecar,
    sidecar_path,
)
from synth_core.methods import get_method_class
from synth_core.volume import ALL_MODALITIES

SUMMARY = "summary.tsv"
SUMMARY_COLUMNS = ("subject", "target", "output", "seconds", "checkpoint", "status", "message")
#: BIDS labels are letters and digits only; a subject id is ``sub-<label>``. Ids come from
#: files other people wrote, so nothing else (``../``, ``/``, spaces) ever reaches a path.
_BIDS_LABEL = re.compile(r"[A-Za-z0-9]+")
#: The sidecar key holding the request an output was made for (what ``resume`` compares).
REQUEST_KEY = "CohortRequest"


@dataclass
class OutputJob:
    """One synthetic volume to make: a subject's input translated to one target.

    Attributes:
        subject: ``sub-<label>``.
        target: the target modality key.
        input: the source scan (absolute path).
        output: ``OUT_DIR/sub-XXX/sub-XXX_<target>.nii.gz``.
        std_output: the ``_std`` volume beside it when several samples are drawn, else None.
        checkpoint: the resolved checkpoint (the same for every subject of this target).
        request: the keyword arguments for ``inference.translate`` besides the volume and
            the device; also recorded in the sidecar under ``CohortRequest``.
        replace: stale outputs of an earlier run are there and may be replaced.
    """

    subject: str
    target: str
    input: Path
    output: Path
    std_output: Path | None
    checkpoint: zoo.CheckpointInfo
    request: dict[str, Any]
    replace: bool = False

    def record(self) -> dict[str, Any]:
        """What ``resume`` compares: checkpoint sha256, input and every option."""
        return {"Input": str(self.input), "CheckpointSHA256": self.checkpoint.sha256,
                **{k: v for k, v in self.request.items() if k != "checkpoint"}}


@dataclass
class CohortPlan:
    """Everything a cohort translation will do, decided before any work."""

    out_dir: Path
    jobs: list[OutputJob]
    skipped: list[OutputJob] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)  # summary rows found while planning

    @property
    def checkpoints(self) -> dict[str, zoo.CheckpointInfo]:
        """Target -> checkpoint."""
        return {j.target: j.checkpoint for j in self.jobs + self.skipped}


def subject_id(raw: str, where: str) -> str:
    """``sub-<label>`` from a manifest cell, a participants row or a folder name.

    Raises UserError unless the label (after an optional ``sub-``) is BIDS letters and digits:
    an id such as ``../x`` or ``/abs`` would otherwise write outside OUT_DIR.
    """
    text = raw.strip()
    label = text[4:] if text.startswith("sub-") else text
    if not _BIDS_LABEL.fullmatch(label):
        raise UserError(
            f"{where}: subject id {raw!r} is not a BIDS label (only letters and digits after "
            "'sub-'); rename the subject (e.g. sub-001), nothing was written"
        )
    return f"sub-{label}"


def file_subject_id(path: Path) -> str:
    """A single input file's subject id: its name without extension and modality suffix
    (``sub-07_t1.nii.gz`` -> ``sub-07``; ``scan.nii.gz`` -> ``sub-scan``). Characters that
    are not letters or digits are dropped: the user named the file, so it is not refused."""
    name = path.name
    stem = next((name[: -len(s)] for s in (*NIFTI_SUFFIXES, ".mha", ".mhd", ".nrrd", ".nhdr")
                 if name.lower().endswith(s)), path.stem)
    head, sep, tail = stem.rpartition("_")
    if sep and (tail.lower() in ALL_MODALITIES or tail.lower() in ("t1w", "t2w")):
        stem = head
    label = "".join(c for c in stem.removeprefix("sub-") if c.isascii() and c.isalnum())
    if not label:
        raise UserError(f"cannot make a subject id from the file name {name!r}; rename it "
                        "(letters and digits, e.g. sub-001_t1.nii.gz)")
    return f"sub-{label}"


def output_paths(out_dir: Path, subject: str, target: str, samples: int) -> tuple[Path, Path | None]:
    """The layout's image path (and ``_std`` path with several samples) for one output."""
    folder = out_dir / subject
    image = folder / f"{subject}_{target}.nii.gz"
    std = folder / f"{subject}_{target}_std.nii.gz" if samples > 1 else None
    return image, std


def check_out_dir(out_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """OUT_DIR may be written: a folder (or creatable), writable, empty unless resuming or
    overwriting. Raises UserError before any work."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"output {out_dir} is a file, not a folder; give a folder for -o")
    if out_dir.is_dir():
        if not _writable(out_dir):
            raise UserError(f"output folder {out_dir} is not writable; choose another -o or fix "
                            "its permissions")
        if any(out_dir.iterdir()) and not (resume or overwrite):
            raise UserError(f"output folder {out_dir} exists and is not empty; pass --resume to "
                            "continue it, --overwrite to replace its outputs, or choose another -o")
        return
    parent = out_dir.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot create output folder {out_dir}: {parent} is a file; choose "
                        "another -o")
    if not _writable(parent):
        raise UserError(f"cannot create output folder {out_dir}: {parent} is not writable; "
                        "choose another -o")


def _writable(folder: Path) -> bool:
    # Try it: permission bits say nothing for root, or on a read-only mount.
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def cohort_subjects(input_path: Path) -> list[tuple[str, SubjectRecord]]:
    """The subjects of a folder or manifest (``data.discover_subjects``), with checked ids.

    Raises UserError for an id that is not a BIDS label and for two rows that name one
    subject (``01`` and ``sub-01``)."""
    records = discover_subjects(input_path)
    seen: dict[str, str] = {}
    out = []
    for record in records:
        sid = subject_id(record.subject_id, f"{input_path}")
        if sid in seen:
            raise UserError(f"{input_path}: subjects {seen[sid]!r} and {record.subject_id!r} "
                            f"both become {sid}; give each subject one id")
        seen[sid] = record.subject_id
        out.append((sid, record))
    return out


def _inside(path: Path, root: Path) -> bool:
    # realpath: a sub-XXX folder that is a symlink elsewhere must not take the outputs with it.
    real, base = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([real, base]) == base


def plan_translation(input_path: Path, out_dir: Path, *, method: str, targets: list[str],
                     source: str | None = None, checkpoint: str | None = None,
                     age: float | None = None, steps: int | None = None, samples: int = 1,
                     temperature: float | None = None, reverse: bool = False, seed: int = 0,
                     memory_budget_mb: float = 2048, resume: bool = False,
                     overwrite: bool = False) -> CohortPlan:
    """Check everything and decide every output before any work.

    ``input_path`` is a cohort folder, a manifest TSV, or one image file (then its subject
    id is ``file_subject_id``). Per target: the checkpoint (``zoo.resolve``, as ``translate``
    picks it) and its options (``inference.check_request``). Without ``age``, a method
    conditioned on age gets each subject's own age from participants.tsv or the manifest.

    Raises:
        UserError: anything wrong with the input, the ids, the options, the checkpoints or
            OUT_DIR (see ``check_out_dir``); nothing has been written.
    """
    cls = get_method_class(method)
    if not targets:
        raise UserError("--to names no target modality; give one or more, e.g. --to t2,ct")
    for mod in (*targets, *([source] if source else [])):
        if mod not in ALL_MODALITIES:
            raise UserError(f"unknown modality {mod!r}; choose from: {', '.join(ALL_MODALITIES)}")
    if len(set(targets)) != len(targets):
        raise UserError(f"--to {','.join(targets)} names a target twice; give each once")
    if not input_path.exists():
        raise UserError(f"{input_path} does not exist; give a cohort folder, a manifest .tsv or a scan")
    check_out_dir(out_dir, resume=resume, overwrite=overwrite)
    if input_path.is_file() and input_path.suffix.lower() != ".tsv":
        subjects: list[tuple[str, SubjectRecord | None]] = [(file_subject_id(input_path), None)]
        # As for one scan and one target: a modality the file name states is the source.
        named = None if source else guess_modality(input_path)
        source_from = "from the file name" if named else None
        source = source or named
    else:
        subjects = list(cohort_subjects(input_path))
        source_from = None
    inputs = {p.resolve() for _, r in subjects if r is not None for p in r.paths.values()}
    if input_path.is_file():
        inputs.add(input_path.resolve())

    plan = CohortPlan(out_dir, [])
    for target in targets:
        info = zoo.resolve(checkpoint, method=method, source=source, target=target)
        runs_reverse = check_request(info, to=target, age=age, steps=steps, samples=samples,
                                     temperature=temperature, reverse=reverse, source=source)
        in_modality = source or (info.target if runs_reverse else info.source)
        for sid, record in subjects:
            image, std = output_paths(out_dir, sid, target, samples)
            for path in (image, std):
                if path is not None and (path.resolve() in inputs or not _inside(path, out_dir)):
                    raise UserError(f"output {path} would replace an input or leave {out_dir}; "
                                    "choose another -o (outside the cohort folder)")
            if record is None:
                scan = input_path.resolve()
                subject_age = age
            else:
                scan = record.paths.get(in_modality)  # type: ignore[assignment]
                subject_age = age if age is not None or "age" not in cls.capabilities.conditions \
                    else record.age
            if scan is None:
                plan.failed.append(summary_row(sid, target, image, out_dir, 0.0, info.name, "failed",
                                               f"no {in_modality} scan for this subject"))
                continue
            request = {"method": method, "to": target, "source": in_modality,
                       "checkpoint": str(info.directory), "age": subject_age, "steps": steps,
                       "samples": samples, "temperature": temperature, "reverse": reverse,
                       "seed": seed, "memory_budget_mb": memory_budget_mb}
            if source_from:
                request["source_from"] = source_from
            job = OutputJob(sid, target, Path(scan), image, std, info, request)
            if resume and is_done(job):
                plan.skipped.append(job)
                continue
            job.replace = any(p is not None and (p.exists() or sidecar_path(p).exists())
                              for p in (image, std))
            if job.replace and not (resume or overwrite):  # only reachable in a racing writer
                raise UserError(f"output {image} exists; pass --resume or --overwrite")
            plan.jobs.append(job)
    if not plan.jobs and not plan.skipped:
        raise UserError(f"no subject in {input_path} has the source scan the checkpoint needs; "
                        "check --from and the file names (sub-XXX_<modality>.nii.gz)")
    return plan


def is_done(job: OutputJob) -> bool:
    """Both files of each output are there and the sidecar records this job's request."""
    for path in (job.output, job.std_output):
        if path is None:
            continue
        if not path.is_file():
            return False
        try:
            side = read_sidecar(path)
        except UserError:
            return False  # a damaged sidecar is recomputed, not trusted
        if side is None or side.get(REQUEST_KEY) != _json_round_trip(job.record()):
            return False
    return True


def _json_round_trip(record: dict[str, Any]) -> Any:
    # A sidecar stores JSON: compare like with like (a tuple comes back as a list).
    return json.loads(json.dumps(record))


def remove_stale(job: OutputJob) -> None:
    """Delete an earlier run's files of ``job`` (called once its replacement is computed):
    with them gone, a kill before the new files land leaves the output 'not done'."""
    for path in (job.output, job.std_output):
        if path is not None:
            path.unlink(missing_ok=True)
            sidecar_path(path).unlink(missing_ok=True)


def remove_partial_files(out_dir: Path) -> int:
    """Temporary files a killed run left (``io.atomic_write`` names them ``.<stem>.<hex>.tmp*``);
    returns how many were removed."""
    count = 0
    for folder in [out_dir, *(p for p in out_dir.glob("sub-*") if p.is_dir())]:
        for stale in folder.glob(".*.tmp*"):
            stale.unlink(missing_ok=True)
            count += 1
    return count


def summary_row(subject: str, target: str, output: Path, out_dir: Path, seconds: float,
                checkpoint: str, status: str, message: str = "") -> dict[str, Any]:
    """One row of ``summary.tsv``; the output path relative to OUT_DIR."""
    return {"subject": subject, "target": target, "output": str(output.relative_to(out_dir)),
            "seconds": round(seconds, 2), "checkpoint": checkpoint, "status": status,
            "message": " ".join(message.split())}


def write_summary(out_dir: Path, rows: list[dict[str, Any]], name: str = SUMMARY,
                  columns: tuple[str, ...] = SUMMARY_COLUMNS) -> Path:
    """Write the rows (sorted by subject and target) as a TSV, atomically; return its path."""
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), delimiter="\t", lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: (str(r.get("subject")), str(r.get("target", "")))):
        writer.writerow(row)
    return atomic_write_text(out_dir / name, buffer.getvalue(), overwrite=True)
