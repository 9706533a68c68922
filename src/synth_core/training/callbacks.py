"""Lightning callbacks: progress events out, stop requests in, best weights exported."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from synth_core.training.events import EventSink, ProgressEvent, StopRequest


class ProgressCallback(pl.Callback):
    """Sends a :class:`ProgressEvent` after every training step and validation.

    The ETA is a moving average over the steps of this process (a resumed run
    starts its clock again).
    """

    def __init__(self, sink: EventSink, max_steps: int) -> None:
        self.sink = sink
        self.max_steps = max_steps
        self._times: list[float] = []
        self.metrics: dict[str, float] = {}

    def _event(self, kind: str, module: Any, trainer: pl.Trainer, message: str = "") -> ProgressEvent:
        step = module.batches_done
        rate = None
        eta = None
        if len(self._times) >= 2:
            window = self._times[-50:]
            rate = (len(window) - 1) / max(1e-9, window[-1] - window[0])
            eta = max(0, self.max_steps - step) / rate if rate > 0 else None
        return ProgressEvent(kind=kind, step=step, max_steps=self.max_steps,
                             epoch=trainer.current_epoch, losses=dict(module.last_losses),
                             metrics=dict(self.metrics), eta_seconds=eta,
                             steps_per_second=rate, message=message)

    def on_train_start(self, trainer: pl.Trainer, module: Any) -> None:
        if trainer.is_global_zero:
            self.sink(self._event("start", module, trainer))

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._times.append(time.perf_counter())
        if trainer.is_global_zero:
            self.sink(self._event("step", module, trainer))

    def on_validation_end(self, trainer: pl.Trainer, module: Any) -> None:
        if trainer.sanity_checking:
            return
        self.metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        if trainer.is_global_zero:
            self.sink(self._event("validation", module, trainer))


class StopCallback(pl.Callback):
    """Honours a :class:`StopRequest` at the next step, leaving a resumable checkpoint."""

    def __init__(self, request: StopRequest, checkpoint_path: Path,
                 on_stopped: Callable[[], None] | None = None) -> None:
        self.request = request
        self.checkpoint_path = checkpoint_path
        self.stopped = False
        self.on_stopped = on_stopped

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.request.is_set() and not self.stopped:
            # Every rank reaches here in the same step (the flag is shared on one node),
            # so the collective save in DDP does not deadlock.
            trainer.save_checkpoint(self.checkpoint_path)
            trainer.should_stop = True
            self.stopped = True
            if self.on_stopped is not None and trainer.is_global_zero:
                self.on_stopped()


class ExportBestCallback(pl.Callback):
    """Exports the weights as safetensors plus card whenever validation PSNR improves.

    ``export`` is called as ``export(module, metrics)`` on rank zero only. With
    ``keep="last"`` every validation exports (the run ends with its latest state), for
    methods whose validation score does not rank what the model is for.
    """

    def __init__(self, export: Callable[[Any, dict[str, float]], None], monitor: str = "val_psnr",
                 best: float | None = None, keep: str = "best") -> None:
        if keep not in ("best", "last"):
            raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
        self.export = export
        self.monitor = monitor
        self.best = best
        self.keep = keep
        self.exported = False

    def on_validation_end(self, trainer: pl.Trainer, module: Any) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        score = metrics.get(self.monitor)
        if score is None:
            return
        improved = self.best is None or score > self.best
        if improved:
            self.best = score
        if improved or self.keep == "last":
            if trainer.is_global_zero:
                self.export(module, metrics | {"step": module.batches_done})
                self.exported = True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")
