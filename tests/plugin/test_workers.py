"""RunHandle: a job stopped at its next report returns Stopped; shutdown waits at most its timeout."""

from __future__ import annotations

import threading
import time

from napari_modality_synth.workers import RunHandle, Stopped


def test_shutdown_of_a_job_that_ignores_stop_waits_at_most_its_timeout(qtbot):
    release = threading.Event()
    handle = RunHandle()
    results = []
    worker = handle.start(lambda report: release.wait(10) and "done", interrupt=True,
                          returned=results.append)
    qtbot.waitUntil(lambda: worker.is_running, timeout=5000)
    start = time.monotonic()
    assert handle.shutdown(timeout_s=0.3) is False  # it never reports: it cannot be stopped
    assert 0.3 <= time.monotonic() - start < 1.0
    release.set()
    assert handle.shutdown(timeout_s=5.0) is True and not handle.running
    qtbot.wait(100)
    assert results == []  # the result came after the shutdown: it went nowhere


def test_a_stopped_job_returns_stopped(qtbot):
    handle = RunHandle()
    results = []
    started = threading.Event()

    def job(report):
        while True:
            started.set()
            report((0.5, "working"))
            time.sleep(0.01)

    worker = handle.start(job, interrupt=True, returned=results.append)
    assert started.wait(5)
    handle.stop.set()  # a stop request alone (no shutdown): the job ends at its next report
    qtbot.waitUntil(lambda: results != [], timeout=5000)
    assert results == [Stopped()] and not handle.running
    qtbot.waitUntil(lambda: not worker.is_running, timeout=2000)
    assert handle.shutdown(timeout_s=0.1) is True
