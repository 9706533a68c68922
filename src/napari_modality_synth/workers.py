"""Worker threads of the plugin and the one event the widgets share.

The engine's long calls (``translate``, ``training.train``) block and report through a
callback. ``relay`` runs such a call in a helper thread and turns its reports into the
values of a generator; a napari ``thread_worker`` runs that generator, so every report
reaches the widgets as a ``yielded`` signal on the main thread, the only thread that may
touch Qt. Reports are handed on in batches at most every ``interval`` seconds: a run of
40 steps a second then costs the window about ten updates a second, not forty.

A ``UserError`` raised by the call comes back as a :class:`Failed` (its one-line
message, for a notification without a traceback); anything else is a bug and is
re-raised in the worker, where napari shows it with its traceback.

``RunHandle`` is what a widget keeps of a running job so that closing it can stop the
job and wait for it.

``checkpoints_changed`` is emitted (with the checkpoint's name) on the main thread when
a training run registers a checkpoint in the user zoo; the Translate widget listens.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from psygnal import SignalInstance

from synth_core import UserError

T = TypeVar("T")
Report = Callable[[Any], None]

REPORT_INTERVAL_S = 0.1
SHUTDOWN_TIMEOUT_S = 10.0

checkpoints_changed = SignalInstance((str,), name="checkpoints_changed")


@dataclass(frozen=True)
class Failed:
    """A call that ended in a ``UserError``: its one-line message (problem and fix)."""

    message: str


class _Done:
    """Marks the end of the call in the report queue."""


def relay(
    job: Callable[[Report], T], interval: float = REPORT_INTERVAL_S,
    finished: threading.Event | None = None,
) -> Generator[list[Any], None, T | Failed]:
    """Run ``job(report)`` in a helper thread; yield what it reports, in lists, as it goes.

    Args:
        job: the blocking call; it passes anything it wants shown to ``report``
            (thread-safe, never blocks).
        interval: seconds over which reports are gathered into one list (the first
            report of a list is handed on at once when the previous list is older).
        finished: set when ``job`` has returned or raised (a widget closing waits on it).

    Yields:
        non-empty lists of reports, in the order reported.

    Returns:
        the job's return value, or ``Failed(message)`` for a ``UserError``.
    """
    reports: queue.Queue[Any] = queue.Queue()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = job(reports.put)
        except UserError as exc:
            outcome["value"] = Failed(str(exc))
        except BaseException as exc:  # noqa: BLE001 - handed to the worker thread below
            outcome["exception"] = exc
        finally:
            reports.put(_Done)
            if finished is not None:
                finished.set()

    thread = threading.Thread(target=run, name="modality-synth-job", daemon=True)
    thread.start()
    done = False
    last = 0.0
    while not done:
        batch = [reports.get()]
        # Gather what else arrives within the interval since the last hand-over.
        deadline = max(time.monotonic(), last + interval)
        while batch[-1] is not _Done:
            try:
                batch.append(reports.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        done = batch[-1] is _Done
        if done:
            batch.pop()
        if batch:
            last = time.monotonic()
            yield batch
    thread.join()
    if "exception" in outcome:
        raise outcome["exception"]
    return outcome["value"]


@dataclass
class RunHandle:
    """What closing a widget needs of its running job: the stop request and the end flag."""

    stop: Any  # synth_core.training.StopRequest (set() is thread-safe)
    finished: threading.Event

    def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> bool:
        """Ask the run to stop and wait for it (seconds); True when it has ended."""
        self.stop.set()
        return self.finished.wait(timeout_s)
