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

``RunHandle`` starts a widget's job and is what closing the widget needs of it:
``shutdown`` asks the job to stop, cuts the worker's signals from the widget (so a late
report reaches no deleted Qt object) and waits briefly for both threads to end.
``stop_on_close`` calls it when the widget is deleted (its dock or the viewer closed)
and when the application quits. Without it, a job still running when napari exits
aborts the process: its threads are torn down in the middle of Python and Qt code.

``checkpoints_changed`` is emitted (with the checkpoint's name) on the main thread when
a training run registers a checkpoint in the user zoo; the Translate widget listens.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from napari.qt.threading import GeneratorWorker, thread_worker
from psygnal import SignalInstance
from qtpy.QtWidgets import QApplication, QWidget

from synth_core import UserError

T = TypeVar("T")
Report = Callable[[Any], None]

REPORT_INTERVAL_S = 0.1
SHUTDOWN_TIMEOUT_S = 10.0
# How often a closing widget looks whether its job's threads have ended (s).
_SHUTDOWN_POLL_S = 0.01

checkpoints_changed = SignalInstance((str,), name="checkpoints_changed")


@dataclass(frozen=True)
class Failed:
    """A call that ended in a ``UserError``: its one-line message (problem and fix)."""

    message: str


@dataclass(frozen=True)
class Stopped:
    """A call that ended early because its widget asked it to stop (the widget closed)."""


class JobStopped(Exception):
    """Raised by a job's ``report`` once its widget asked it to stop (see ``RunHandle.start``)."""


class _Done:
    """Marks the end of the call in the report queue."""


def relay(
    job: Callable[[Report], T], interval: float = REPORT_INTERVAL_S,
    finished: threading.Event | None = None, began: threading.Event | None = None,
) -> Generator[list[Any], None, T | Failed | Stopped]:
    """Run ``job(report)`` in a helper thread; yield what it reports, in lists, as it goes.

    Args:
        job: the blocking call; it passes anything it wants shown to ``report``
            (thread-safe, never blocks).
        interval: seconds over which reports are gathered into one list (the first
            report of a list is handed on at once when the previous list is older).
        finished: set when ``job`` has returned or raised (a widget closing waits on it).
        began: set when the helper thread is about to start (before it, the job never ran).

    Yields:
        non-empty lists of reports, in the order reported.

    Returns:
        the job's return value, ``Failed(message)`` for a ``UserError``, ``Stopped()`` for
        a ``JobStopped``.
    """
    reports: queue.Queue[Any] = queue.Queue()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = job(reports.put)
        except UserError as exc:
            outcome["value"] = Failed(str(exc))
        except JobStopped:
            outcome["value"] = Stopped()
        except BaseException as exc:  # noqa: BLE001 - handed to the worker thread below
            outcome["exception"] = exc
        finally:
            reports.put(_Done)
            if finished is not None:
                finished.set()

    thread = threading.Thread(target=run, name="modality-synth-job", daemon=True)
    if began is not None:
        began.set()
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


class RunHandle:
    """A widget's job in a worker thread: started with ``start``, ended with ``shutdown``.

    One handle serves the widget's successive jobs; its attributes describe the last one.

    Attributes:
        stop: the job's stop request (``set()`` is thread-safe): a ``threading.Event``, or
            what ``make_stop`` makes (the Train widget: ``synth_core.training.StopRequest``).
        finished: set when the job's call has returned or raised (set while idle).
        worker: the job's napari worker (None before the first job).
    """

    def __init__(self, make_stop: Callable[[], Any] = threading.Event) -> None:
        self._make_stop = make_stop
        self.stop: Any = make_stop()
        self.finished = threading.Event()
        self.finished.set()
        self.worker: GeneratorWorker | None = None
        self._began = threading.Event()
        self._connections: list[tuple[Any, Callable[..., Any]]] = []

    @property
    def running(self) -> bool:
        """True from ``start`` until the job's call has ended."""
        return not self.finished.is_set()

    def start(self, job: Callable[[Report], Any], *, interrupt: bool,
              yielded: Callable[[list[Any]], None] | None = None,
              returned: Callable[[Any], None] | None = None,
              finished: Callable[[], None] | None = None) -> GeneratorWorker:
        """Run ``job(report)`` in a worker (``relay``) with a fresh stop request; the worker.

        Args:
            job: the blocking call (see ``relay``).
            interrupt: once ``stop`` is set, ``report`` raises ``JobStopped``, so a job
                without a stop request of its own (``translate``) ends at its next report.
                False for a job that honours ``stop`` itself (training: it then ends after
                its current step and leaves a resumable checkpoint).
            yielded, returned, finished: the widget's slots for the worker's signals;
                ``returned`` gets the job's value, ``Failed`` or ``Stopped``.
        """
        self.stop, self.finished, self._began = self._make_stop(), threading.Event(), threading.Event()
        stop = self.stop

        def run(report: Report) -> Any:
            if not interrupt:
                return job(report)

            def checked(value: Any) -> None:
                if stop.is_set():
                    raise JobStopped("the widget that started this job was closed")
                report(value)

            return job(checked)

        worker = thread_worker(relay)(run, finished=self.finished, began=self._began)
        self._connections = []
        for signal, slot in ((worker.yielded, yielded), (worker.returned, returned),
                             (worker.finished, finished)):
            if slot is not None:
                signal.connect(slot)
                self._connections.append((signal, slot))
        # Once the job is over the handle lets go of the slots (and, through them, the widget).
        worker.finished.connect(self._connections.clear)
        self.worker = worker
        worker.start()
        return worker

    def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> bool:
        """Stop the job and wait up to ``timeout_s`` seconds for it; True when it has ended.

        Asks the job to stop (``stop``) and the worker to quit at its next report, cuts
        the widget's slots from the worker first (a report or result arriving later goes
        nowhere, instead of into a deleted widget), then waits until the job's call has
        returned and the worker's thread has left it. A job that never began never will.
        """
        self.stop.set()
        worker = self.worker
        if worker is not None:
            worker.quit()
        for signal, slot in self._connections:
            try:
                signal.disconnect(slot)
            except (TypeError, RuntimeError):  # already gone (with the worker's signals)
                pass
        self._connections = []
        if worker is None:
            return self.finished.wait(timeout_s)
        deadline = time.monotonic() + timeout_s
        while True:
            # worker.is_running turns False just before its last signals: past our code.
            call_over = self.finished.is_set() or not self._began.is_set()
            if call_over and not worker.is_running:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_SHUTDOWN_POLL_S)


def stop_on_close(widget: QWidget, handle: RunHandle) -> None:
    """Shut ``handle``'s job down when ``widget`` is deleted or the application quits.

    Closing the viewer (or the widget's dock) deletes the widget; quitting may not, and
    ends Python soon after. The slots hold the handle only, never the widget (nor,
    through it, the viewer), so they keep nothing alive.
    """
    on_quit = functools.partial(_shutdown, handle)
    app = QApplication.instance()
    if app is not None:
        app.aboutToQuit.connect(on_quit)
    widget.destroyed.connect(functools.partial(_shutdown, handle, disconnect=on_quit))


def _shutdown(handle: RunHandle, *_: Any, disconnect: Any = None) -> None:
    handle.shutdown()
    app = QApplication.instance()
    if disconnect is not None and app is not None:
        try:
            app.aboutToQuit.disconnect(disconnect)
        except (TypeError, RuntimeError):  # already gone with the application
            pass
