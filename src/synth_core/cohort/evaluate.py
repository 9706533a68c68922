"""Scoring a translated cohort against its targets, subject by subject.

Predictions (the output layout, ``PRED_DIR/sub-XXX/sub-XXX_<target>.nii.gz``) and targets
(a cohort folder or manifest) are found by ``data.discover_subjects`` and matched by subject
id and modality. Each pair is scored by ``metrics.evaluate``, the same call as for two files,
so a folder's figures are the per-file figures, in the units that call states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synth_core.cohort.plan import cohort_subjects, write_summary
from synth_core.errors import UserError
from synth_core.io import load_volume
from synth_core.metrics import evaluate
from synth_core.volume import ALL_MODALITIES, base_modality

METRICS = ("mae", "psnr", "ssim", "corrcoef")
EVALUATION = "evaluation.tsv"
COLUMNS = ("subject", "modality", *METRICS, "mask", "normalisation", "status", "message")


@dataclass
class CohortScores:
    """Per-subject rows and, per modality, the mean and SD of each metric over the scored ones."""

    rows: list[dict[str, Any]]
    summary: dict[str, dict[str, Any]]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] != "scored"]


def _mask_for(record: Any, modality: str, mask_name: str | None) -> tuple[np.ndarray | None, str]:
    """The mask of a target subject: ``mask_name``'s file, else the brain mask for MR and PET
    and the head (labels > 0) for CT when the subject has them, else None (``evaluate`` then
    uses the target's foreground). Returns the boolean array (or None) and its name."""
    if mask_name is not None:
        if mask_name not in record.paths:
            raise UserError(f"no {mask_name} file for this subject (sub-XXX_{mask_name}.nii.gz)")
        name = mask_name
    else:
        name = "labels" if base_modality(modality) == "ct" else "brainmask"
        if name not in record.paths:
            return None, "foreground"
    return load_volume(record.paths[name]).data > 0, name


def evaluate_cohort(pred_dir: Path, target_dir: Path, *, mask_name: str | None = None,
                    normalise: bool = False, data_range: float | None = None) -> CohortScores:
    """Score every prediction in ``pred_dir`` that has a target of its modality in ``target_dir``.

    A prediction without a target, or a pair that cannot be scored (shapes differ, a missing
    mask), is a row with status ``failed`` and the reason; the others are ``scored``.

    Raises:
        UserError: a folder cannot be read, or no prediction has a matching target.
    """
    preds = dict(cohort_subjects(pred_dir))
    targets = dict(cohort_subjects(target_dir))
    rows: list[dict[str, Any]] = []
    for sid, record in sorted(preds.items()):
        for modality in (m for m in record.modalities if m in ALL_MODALITIES):
            row: dict[str, Any] = {"subject": sid, "modality": modality, "status": "failed"}
            target = targets.get(sid)
            if target is None or modality not in target.paths:
                rows.append(row | {"message": f"no {modality} target for {sid} in {target_dir}"})
                continue
            try:
                mask, mask_used = _mask_for(target, modality, mask_name)
                scores = evaluate(load_volume(record.paths[modality], modality=modality),
                                  load_volume(target.paths[modality], modality=modality),
                                  mask=mask, data_range=data_range, normalise=normalise)
            except UserError as exc:
                rows.append(row | {"message": str(exc)})
                continue
            rows.append(row | {k: scores[k] for k in METRICS} | {
                "mask": mask_used, "normalisation": scores["normalisation"],
                "units": scores["units"], "status": "scored",
                "message": ""})
    if not any(r["status"] == "scored" for r in rows):
        raise UserError(f"no prediction in {pred_dir} has a target of its modality in {target_dir}; "
                        "check both folders (sub-XXX/sub-XXX_<modality>.nii.gz, same subject ids)")
    return CohortScores(rows, _summary(rows))


def _summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for modality in sorted({r["modality"] for r in rows}):
        scored = [r for r in rows if r["modality"] == modality and r["status"] == "scored"]
        entry: dict[str, Any] = {"n": len(scored),
                                 "failed": sum(r["modality"] == modality for r in rows) - len(scored)}
        if scored:
            entry["units"] = scored[0]["units"]
            entry["normalisation"] = scored[0]["normalisation"]
        for key in METRICS:
            values = np.array([r[key] for r in scored], dtype=np.float64)
            finite = values[np.isfinite(values)]
            entry[key] = {"mean": float(finite.mean()) if finite.size else math.nan,
                          # sample SD (n - 1): the spread over subjects of a cohort
                          "sd": float(finite.std(ddof=1)) if finite.size > 1 else math.nan}
        out[modality] = entry
    return out


def write_scores(path: Path, scores: CohortScores, *, overwrite: bool = False) -> Path:
    """The per-subject TSV (``COLUMNS``), written atomically."""
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; pass --overwrite or choose another --tsv")
    rows = [{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()}
            for r in scores.rows]
    return write_summary(path.parent, rows, name=path.name, columns=COLUMNS)
