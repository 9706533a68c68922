"""What the Train widget shows of a run, kept from its progress events: no Qt.

The engine reports a ``synth_core.training.ProgressEvent`` after every step and every
validation; ``RunLog`` keeps the last ``window`` steps' losses (for the live plot), the
latest validation metrics, step, planned steps, speed and ETA.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

LOSS_WINDOW = 300
METRIC_LABELS: dict[str, str] = {"val_mae": "MAE", "val_psnr": "PSNR (dB)", "val_ssim": "SSIM"}


class RunLog:
    """The state of one run as its events tell it (a resumed run continues the same log)."""

    def __init__(self, window: int = LOSS_WINDOW) -> None:
        self.steps: deque[int] = deque(maxlen=window)
        self.losses: deque[dict[str, float]] = deque(maxlen=window)
        self.metrics: dict[str, float] = {}
        self.step = 0
        self.max_steps = 0
        self.eta_seconds: float | None = None
        self.steps_per_second: float | None = None
        self.kind = ""

    def add(self, event: Any) -> None:
        """Take in one ``ProgressEvent``."""
        self.kind = event.kind
        self.step = event.step
        self.max_steps = event.max_steps or self.max_steps
        if event.metrics:
            self.metrics = dict(event.metrics)
        if event.kind == "step":
            self.eta_seconds, self.steps_per_second = event.eta_seconds, event.steps_per_second
            if event.losses:
                # A resumed run repeats no step; a new run in the same log starts over.
                while self.steps and self.steps[-1] >= event.step:
                    self.steps.pop()
                    self.losses.pop()
                self.steps.append(event.step)
                self.losses.append(dict(event.losses))

    def loss_series(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Steps (N,) and loss name -> values (N,), NaN where a step lacks that loss."""
        names = sorted({name for losses in self.losses for name in losses})
        series = {name: np.array([losses.get(name, np.nan) for losses in self.losses], dtype=float)
                  for name in names}
        return np.array(self.steps, dtype=float), series

    def progress_text(self) -> str:
        """``step 12 / 30 · 4.1 steps/s · ETA 0:04``."""
        parts = [f"step {self.step} / {self.max_steps}"]
        if self.steps_per_second:
            parts.append(f"{self.steps_per_second:.2g} steps/s")
        if self.eta_seconds is not None and self.kind == "step":
            minutes, seconds = divmod(round(self.eta_seconds), 60)
            hours, minutes = divmod(minutes, 60)
            parts.append(f"ETA {hours}:{minutes:02d}:{seconds:02d}" if hours else f"ETA {minutes}:{seconds:02d}")
        return " · ".join(parts)

    def metrics_text(self) -> str:
        """``validation: MAE 0.21 · PSNR (dB) 18 · SSIM 0.2``, or a dash before the first validation."""
        shown = [f"{label} {self.metrics[key]:.3g}" for key, label in METRIC_LABELS.items()
                 if key in self.metrics]
        return "validation: " + (" · ".join(shown) if shown else "-")
