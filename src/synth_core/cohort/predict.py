"""Running a cohort plan with Lightning's ``Trainer.predict``, on one or several devices.

Lightning gives the devices, the processes (DDP on GPUs or CPU processes), the
per-rank split of the subjects and the progress bar; reads are prefetched by the
DataLoader's workers. Each output is written by the one rank that owns it: predict
uses Lightning's unrepeated distributed sampler (rank r gets jobs r, r + N, r + 2N, ...)
and ``predict_step`` checks the same rule, so no job is done twice even if the
sampler changed. Each rank appends its summary rows to its own file, which the
calling process merges: with spawned processes only rank zero's return value comes back.
"""

from __future__ import annotations

import json
import logging
import signal
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from synth_core.cohort.plan import (
    REQUEST_KEY,
    CohortPlan,
    OutputJob,
    remove_partial_files,
    remove_stale,
    summary_row,
    write_summary,
)
from synth_core.errors import UserError
from synth_core.inference import translate
from synth_core.io import load_volume, save_volume

# Lightning's notices that say nothing to a user of this command.
_QUIET = (".*does not have many workers.*", ".*GPU available but not used.*",
          ".*predict_dataloader.*", ".*`batch_size`.*", ".*LOCAL_RANK.*", ".*treespec.*")


@dataclass
class CohortResult:
    """What a cohort translation did. ``rows``: the summary rows (see ``summary.tsv``)."""

    rows: list[dict[str, Any]]
    summary: Path
    interrupted: bool = False  # Ctrl+C: the jobs not reached are listed as "interrupted"

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] in ("failed", "interrupted")]

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.rows)


class _Reads(Dataset):
    """Job i's input volume, read in a DataLoader worker (prefetching the next subjects).

    A read that fails is passed on as its message: one bad file fails one subject."""

    def __init__(self, jobs: list[OutputJob]) -> None:
        self.jobs = jobs

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        job = self.jobs[index]
        started = time.perf_counter()
        try:
            volume = load_volume(job.input, modality=job.request["source"])
            return {"index": index, "volume": volume, "error": None,
                    "read_seconds": time.perf_counter() - started}
        except UserError as exc:
            return {"index": index, "volume": None, "error": str(exc),
                    "read_seconds": time.perf_counter() - started}


def _first(batch: list[dict[str, Any]]) -> dict[str, Any]:
    return batch[0]


class CohortPredictor(pl.LightningModule):
    """Translates the jobs it is given in ``predict_step``; holds no weights of its own
    (``inference.translate`` loads and caches each checkpoint once per process)."""

    def __init__(self, plan: CohortPlan, status_dir: Path) -> None:
        super().__init__()
        self.plan = plan
        self.status_dir = status_dir

    def setup(self, stage: str) -> None:
        # Spawned processes start with Python's default filters: quiet Lightning there too.
        for text in _QUIET:
            warnings.filterwarnings("ignore", message=text)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return batch  # a Volume stays in host memory; translate moves what the model sees

    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0) -> dict[str, Any] | None:
        index = int(batch["index"])
        if index % self.trainer.world_size != self.trainer.global_rank:
            return None  # another rank's job
        job = self.plan.jobs[index]
        started = time.perf_counter()
        try:
            if batch["error"] is not None:
                raise UserError(batch["error"])
            result = translate(batch["volume"], device=str(self.device), **job.request)
            record = result.provenance | {REQUEST_KEY: job.record()}
            if job.replace:
                remove_stale(job)
            save_volume(result.volume, job.output, provenance=record)
            if job.std_output is not None and result.std is not None:
                save_volume(result.std, job.std_output,
                            provenance=result.std.metadata["provenance"] | {REQUEST_KEY: job.record()})
            status, message = "done", "; ".join(result.warnings)
        except UserError as exc:
            status, message = "failed", str(exc)
        except Exception as exc:  # a bug, or a file no check foresaw: fail this subject, go on
            status, message = "failed", f"{type(exc).__name__}: {exc}"
            logging.getLogger(__name__).debug(traceback.format_exc())
        seconds = time.perf_counter() - started + float(batch["read_seconds"])
        row = summary_row(job.subject, job.target, job.output, self.plan.out_dir, seconds,
                          job.checkpoint.name, status, message)
        with open(self.status_dir / f"rank{self.trainer.global_rank}.jsonl", "a",
                  encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        return row


def run_translation(plan: CohortPlan, *, devices: int = 1, accelerator: str = "auto",
                    num_workers: int = 0, progress_bar: bool = False) -> CohortResult:
    """Translate every job of ``plan``; write ``summary.tsv``; return the rows.

    Args:
        devices: processes (CPU) or GPUs; above 1, DDP processes started by Lightning.
        accelerator: "auto", "cpu", "cuda" (as ``--device``).
        num_workers: DataLoader workers reading the next subjects while one is translated.
        progress_bar: Lightning's bar (rank zero's share of the jobs).
    """
    if devices < 1:
        raise UserError(f"--devices must be at least 1, got {devices}")
    if num_workers < 0:
        raise UserError(f"--num-workers must be 0 or more, got {num_workers}")
    accel = {"auto": "auto", "cpu": "cpu", "cuda": "gpu"}.get(accelerator)
    if accel is None:
        raise UserError(f"unknown device {accelerator!r}; use auto, cpu or cuda")
    if accel == "gpu" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    if accel == "gpu" and devices > torch.cuda.device_count():
        raise UserError(f"--devices {devices} asks for more GPUs than the {torch.cuda.device_count()} "
                        "here; lower --devices")
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    remove_partial_files(plan.out_dir)
    rows = [*plan.failed, *(summary_row(j.subject, j.target, j.output, plan.out_dir, 0.0,
                                        j.checkpoint.name, "skipped", "up to date (--resume)")
                            for j in plan.skipped)]
    interrupted = False
    if plan.jobs:
        done, interrupted = _predict(plan, devices, accel, num_workers, progress_bar)
        rows += done
    return CohortResult(rows, write_summary(plan.out_dir, rows), interrupted)


def _predict(plan: CohortPlan, devices: int, accelerator: str, num_workers: int,
             progress_bar: bool) -> tuple[list[dict[str, Any]], bool]:
    """The rows of the jobs run, and whether Ctrl+C stopped the run."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    loader = DataLoader(_Reads(plan.jobs), batch_size=1, shuffle=False, num_workers=num_workers,
                        collate_fn=_first, prefetch_factor=2 if num_workers else None,
                        persistent_workers=False)
    with tempfile.TemporaryDirectory(prefix="cohort-status-") as status:
        status_dir = Path(status)
        trainer = pl.Trainer(
            accelerator=accelerator, devices=devices,
            # Spawned processes receive the plan itself; re-running the command line in each
            # (Lightning's default launcher) would plan again against a folder rank zero is filling.
            strategy="ddp_spawn" if devices > 1 else "auto",
            logger=False, enable_checkpointing=False, enable_model_summary=False,
            enable_progress_bar=progress_bar, inference_mode=True,
        )
        interrupted = False
        handler = signal.getsignal(signal.SIGINT)
        try:
            with warnings.catch_warnings():
                for text in _QUIET:
                    warnings.filterwarnings("ignore", message=text)
                trainer.predict(CohortPredictor(plan, status_dir), loader, return_predictions=False)
        except SystemExit:
            # Lightning turns Ctrl+C into SystemExit(1) after its own clean-up; the outputs
            # written so far are complete, so list them and say which were not reached.
            if not trainer.interrupted:
                raise
            interrupted = True
        finally:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, handler)  # Lightning leaves Ctrl+C ignored
        rows = []
        for file in sorted(status_dir.glob("rank*.jsonl")):
            rows += [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()]
    done = {(r["subject"], r["target"]) for r in rows}
    # A job no rank reported (a process that died) is a failure, not a silent gap.
    status, why = ("interrupted", "not reached (Ctrl+C); run again with --resume") if interrupted \
        else ("failed", "not run (its process ended early)")
    rows += [summary_row(j.subject, j.target, j.output, plan.out_dir, 0.0, j.checkpoint.name,
                         status, why)
             for j in plan.jobs if (j.subject, j.target) not in done]
    return rows, interrupted
