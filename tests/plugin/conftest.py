"""Fixtures for the plugin tests.

They run under a virtual X server that pytest-xvfb starts (QT_QPA_PLATFORM=offscreen
crashes vispy here). napari registers its pytest plugin (``make_napari_viewer``) through
the ``pytest11`` entry point, so it is not listed in ``pytest_plugins``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from synth_core import Volume


@pytest.fixture
def error_messages() -> Callable[[], list[str]]:
    """A function returning the error notifications shown since the test started."""
    start = len(notification_manager.records)

    def messages() -> list[str]:
        return [
            str(record.message) for record in notification_manager.records[start:]
            if record.severity == NotificationSeverity.ERROR
        ]

    return messages


def oblique_affine(spacing: tuple[float, float, float] = (1.2, 0.9, 2.5)) -> np.ndarray:
    """A voxel -> RAS+ mm affine rotated about all three axes, anisotropic, off-centre."""
    a, b, c = np.deg2rad([17.0, -11.0, 29.0])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ ry @ rx @ np.diag(spacing)
    affine[:3, 3] = (-31.5, 12.25, -7.0)
    return affine


@pytest.fixture
def small_volume() -> Volume:
    """A smooth 12 x 10 x 9 T1-like volume on an oblique grid."""
    rng = np.random.default_rng(7)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in (12, 10, 9)), indexing="ij")
    data = 100.0 * np.exp(-(x**2 + y**2 + z**2)) + rng.normal(0, 2, (12, 10, 9))
    return Volume(data.astype(np.float32), oblique_affine(), "t1")
