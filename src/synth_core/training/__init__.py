"""Training on PyTorch Lightning: one module for every method, callbacks, run folders."""

from synth_core.training.events import EventSink, ProgressEvent, StopRequest
from synth_core.training.run import RunResult, TrainRequest, export_last, train

__all__ = ["EventSink", "ProgressEvent", "RunResult", "StopRequest", "TrainRequest", "export_last", "train"]
