"""Cross-modal augmentation: a labelled cohort translated into the modality a study lacks.

``modality-synth augment`` writes a data set another tool can train on, in the one output
layout: ``OUT_DIR/sub-XXX/sub-XXX_<target>.nii.gz`` (``sub-XXX_<target>-from-<source>``
when several sources are translated, one output per subject and source), each with its
sidecar (``"Synthetic": true``, the checkpoint's sha256, every parameter), a
``participants.tsv`` with the subjects' rows (their labels) carried over and a
``synthetic_from`` column naming the source modality, and ``summary.tsv``. ``--resume`` skips
the outputs whose sidecar matches the checkpoint and the request, as cohort translation does.
"""

from __future__ import annotations

import csv
import io as _io
from pathlib import Path
from typing import Any

from synth_core import zoo
from synth_core.cohort.plan import (
    CohortPlan,
    OutputJob,
    check_out_dir,
    cohort_subjects,
    is_done,
)
from synth_core.errors import ModalityMismatch, UserError
from synth_core.inference import check_request
from synth_core.io import atomic_write_text, sidecar_path
from synth_core.volume import ALL_MODALITIES

PARTICIPANTS = "participants.tsv"


def augment_paths(out_dir: Path, subject: str, target: str, source: str,
                  several: bool) -> Path:
    """Where one augmented volume goes: the target's name, with the source when several."""
    key = f"{target}-from-{source}" if several else target
    return out_dir / subject / f"{subject}_{key}.nii.gz"


def label_column(info: zoo.CheckpointInfo) -> str | None:
    """The participants column a checkpoint's predictor learnt (``age`` or ``diagnosis``), if any."""
    predictor = (info.card.get("capabilities") or {}).get("predictor") or {}
    return predictor.get("task")


def plan_augment(data: Path, out_dir: Path, *, method: str, checkpoint: str,
                 sources: list[str], target: str, seed: int = 0, memory_budget_mb: float = 2048,
                 resume: bool = False, overwrite: bool = False) -> CohortPlan:
    """Check everything and decide every output before any work.

    Raises:
        UserError: an unknown modality, a source the checkpoint does not take, a cohort
            without the label column its predictor learnt (or without participants.tsv),
            no subject with a source scan, an OUT_DIR that is not empty without ``resume``
            or ``overwrite``; nothing has been written.
    """
    if not sources:
        raise UserError("--from names no source modality; give one or more, e.g. --from t1,pet")
    for mod in (*sources, target):
        if mod not in ALL_MODALITIES:
            raise UserError(f"unknown modality {mod!r}; choose from: {', '.join(ALL_MODALITIES)}")
    if len(set(sources)) != len(sources):
        raise UserError(f"--from {','.join(sources)} names a source twice; give each once")
    if not data.is_dir():
        raise UserError(f"--data {data} is not a cohort folder; give a folder of sub-XXX/ "
                        "subjects with its participants.tsv")
    check_out_dir(out_dir, resume=resume, overwrite=overwrite)
    info = zoo.resolve(checkpoint, method=method, target=target)
    taken = zoo.model_sources(info)
    refused = [s for s in sources if s not in taken]
    if refused:
        raise ModalityMismatch(f"checkpoint {info.name!r} translates {', '.join(taken)} to "
                               f"{info.target}, not {', '.join(refused)}; give --from "
                               f"{','.join(taken)} or a checkpoint for {refused[0]}")
    check_request(info, to=target, age=None, steps=None, samples=1, temperature=None, reverse=False)
    column = label_column(info)
    header = participants_header(data)
    if column is not None and column not in header:
        raise UserError(f"{data / PARTICIPANTS} has no {column!r} column, the label this "
                        f"checkpoint's predictor learnt; add it (one value per subject), or "
                        "the augmented data set would carry no labels")
    subjects = cohort_subjects(data)
    inputs = {p.resolve() for _, r in subjects for p in r.paths.values()}
    plan = CohortPlan(out_dir, [])
    several = len(sources) > 1
    for source in sources:
        for sid, record in subjects:
            scan = record.paths.get(source)
            if scan is None:
                continue  # a subject without this source: nothing to augment from it
            image = augment_paths(out_dir, sid, target, source, several)
            if image.resolve() in inputs:
                raise UserError(f"output {image} would replace an input; choose another -o "
                                "(outside the cohort folder)")
            request = {"method": method, "to": target, "source": source,
                       "checkpoint": str(info.directory), "age": None, "steps": None,
                       "samples": 1, "temperature": None, "reverse": False, "seed": seed,
                       "memory_budget_mb": memory_budget_mb}
            job = OutputJob(sid, f"{target}-from-{source}" if several else target, Path(scan),
                            image, None, info, request)
            if resume and is_done(job):
                plan.skipped.append(job)
                continue
            job.replace = image.exists() or sidecar_path(image).exists()
            plan.jobs.append(job)
    if not plan.jobs and not plan.skipped:
        raise UserError(f"no subject in {data} has a {' or '.join(sources)} scan; check --from "
                        "and the file names (sub-XXX_<modality>.nii.gz)")
    return plan


def participants_header(data: Path) -> list[str]:
    """The column names of the cohort's participants.tsv (UserError when it is missing)."""
    tsv = data / PARTICIPANTS
    if not tsv.is_file():
        raise UserError(f"{data} has no {PARTICIPANTS}; augment carries each subject's labels "
                        "from it: add it (participant_id and the label columns)")
    with open(tsv, newline="", encoding="utf-8-sig") as handle:
        return [c.strip() for c in next(csv.reader(handle, delimiter="\t"), [])]


def write_participants(data: Path, plan: CohortPlan, rows: list[dict[str, Any]]) -> Path:
    """``OUT_DIR/participants.tsv``: the source cohort's row of every subject with an
    augmented volume written (or up to date), plus ``synthetic_from`` (its source
    modalities, comma-separated). Written atomically, replacing an earlier one."""
    with open(data / PARTICIPANTS, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        columns = [c.strip() for c in reader.fieldnames or []]
        table = {(row.get("participant_id") or "").strip(): row for row in reader}
    made: dict[str, list[str]] = {}
    ok = {(r["subject"], r["target"]) for r in rows if r["status"] in ("done", "skipped")}
    for job in plan.jobs + plan.skipped:
        if (job.subject, job.target) in ok:
            made.setdefault(job.subject, []).append(job.request["source"])
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*columns, "synthetic_from"], delimiter="\t",
                            lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for sid in sorted(made):
        row = table.get(sid) or table.get(sid.removeprefix("sub-")) or {"participant_id": sid}
        writer.writerow({**row, "participant_id": sid, "synthetic_from": ",".join(made[sid])})
    return atomic_write_text(plan.out_dir / PARTICIPANTS, buffer.getvalue(), overwrite=True)
