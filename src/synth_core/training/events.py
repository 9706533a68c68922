"""What a training run tells the outside world, and how the outside asks it to stop.

The CLI turns events into a progress bar; the napari Train widget receives them
through a queue from its worker thread. Neither knows Lightning.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class ProgressEvent:
    """One report from a run.

    Attributes:
        kind: "start", "step", "validation", "checkpoint", "stopped", "done" or "error".
        step: optimiser steps done; max_steps: steps planned.
        epoch: passes over the training sampler.
        losses: the last step's losses by name.
        metrics: validation metrics (``val_mae``, ``val_psnr``, ``val_ssim``) when known.
        eta_seconds: estimated time to ``max_steps`` (None until two steps are timed).
        message: human-readable text (the error for "error", the folder for "done").
    """

    kind: str
    step: int = 0
    max_steps: int = 0
    epoch: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    eta_seconds: float | None = None
    steps_per_second: float | None = None
    message: str = ""


EventSink = Callable[[ProgressEvent], None]


class StopRequest:
    """A thread-safe flag: set from any thread, honoured by the run at its next step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()
