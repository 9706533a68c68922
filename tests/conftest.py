"""Test session set-up: never touch the user's own model folder."""

from __future__ import annotations

import os
import tempfile


def pytest_configure(config) -> None:  # noqa: ANN001
    os.environ["MODALITY_SYNTH_HOME"] = tempfile.mkdtemp(prefix="modality-synth-home-")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 cores, often shared with subprocesses
