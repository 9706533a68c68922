"""Shared by the scripts that drive a real napari window: a virtual X server and Qt waiting."""

from __future__ import annotations

import os
import subprocess
import sys
import time


def run_under_xvfb(child_flag: str, size: tuple[int, int] = (1600, 1000)) -> int | None:
    """Re-run the calling script in a child process on a fresh Xvfb display; its exit status.

    The child quits Qt before the X server goes away (stopping Xvfb under a live
    QApplication ends it with an X I/O error). None when already in the child.
    """
    if os.environ.get(child_flag):
        return None
    from pyvirtualdisplay import Display

    with Display(visible=False, size=size, color_depth=24):
        env = dict(os.environ, **{child_flag: "1"})
        return subprocess.run([sys.executable, *sys.argv], env=env, check=False).returncode


def wait_until(condition, timeout_s: float, poll_ms: int = 20) -> bool:
    """Run Qt's event loop (as napari.run would) until ``condition()`` or the timeout."""
    from qtpy.QtCore import QEventLoop, QTimer

    deadline = time.monotonic() + timeout_s
    loop = QEventLoop()
    poll = QTimer()
    poll.setInterval(poll_ms)
    poll.timeout.connect(lambda: (condition() or time.monotonic() > deadline) and loop.quit())
    if not condition():
        poll.start()
        loop.exec_()
        poll.stop()
    return bool(condition())
