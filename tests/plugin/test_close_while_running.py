"""Closing napari while a job runs: the job is stopped, waited for, and nothing reaches the closed widgets.

Without this, a report or result arriving after the close went to deleted Qt objects
("wrapped C/C++ object ... has been deleted") and, when Python exited with the job's
threads still running, the process aborted.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import synth_core
from napari_modality_synth.layers import volume_to_layer_data
from napari_modality_synth.widgets import age_explorer as age_module
from napari_modality_synth.widgets import compare as compare_module
from napari_modality_synth.widgets import translate as translate_module
from synth_core import Volume

JOB_SECONDS = 6.0  # a job left alone runs this long, reporting every REPORT_EVERY_S
REPORT_EVERY_S = 0.02


class SlowJob:
    """A stand-in for a long engine call: reports until done, or until its report raises."""

    def __init__(self) -> None:
        self.reports = 0
        self.ended_at: float | None = None
        self.ended_by: BaseException | None = None

    def __call__(self, progress) -> None:
        start = time.monotonic()
        try:
            while time.monotonic() - start < JOB_SECONDS:
                progress(min(1.0, (time.monotonic() - start) / JOB_SECONDS), "synthesizing")
                self.reports += 1
                time.sleep(REPORT_EVERY_S)
        except BaseException as exc:
            self.ended_by = exc
            raise
        finally:
            self.ended_at = time.monotonic()


def _fake_translate(job: SlowJob):
    def translate(volume, method, to, **kwargs):
        job(kwargs["progress"])
        out = Volume(volume.data.copy(), volume.affine, to, {"provenance": {"Synthetic": True}})
        return SimpleNamespace(volume=out, std=None, provenance={"Synthetic": True}, warnings=[])

    return translate


def _age_methods() -> dict:
    real = synth_core.list_methods()
    caps = dict(real["pix2pix"]["capabilities"], conditions=("age",), stochastic=True)
    return {"fake-glow": {"title": "fake", "paper": "", "capabilities": caps, "presets": ["cpu"]}}


def _checkpoints(method=None, source=None, target=None) -> list:
    info = SimpleNamespace(name="glow-t1-pet", method="fake-glow", source="t1", target="pet", origin="user",
                           directory=Path("/nowhere/glow-t1-pet"), card={"age_range": [60.0, 80.0]})
    return [info]


def _start_translate(viewer, monkeypatch, job):
    monkeypatch.setattr(translate_module, "list_methods", _age_methods)
    monkeypatch.setattr(translate_module, "list_checkpoints", _checkpoints)
    monkeypatch.setattr(translate_module, "translate", _fake_translate(job))
    widget = translate_module.TranslateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return widget, widget.translate()


def _start_age_explorer(viewer, monkeypatch, job):
    monkeypatch.setattr(age_module, "list_methods", _age_methods)
    monkeypatch.setattr(age_module, "list_checkpoints", _checkpoints)
    monkeypatch.setattr(age_module, "translate", _fake_translate(job))
    widget = age_module.AgeExplorerWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return widget, widget.explore()


def _start_compare(viewer, monkeypatch, job):
    def slow_evaluate(pred, target, mask=None, **kwargs):
        job(lambda fraction, message: None)  # cannot be interrupted: Compare waits for it
        return {"mae": 1.0, "psnr": 2.0, "ssim": 0.5, "corrcoef": 0.25}

    monkeypatch.setattr(compare_module, "evaluate", slow_evaluate)
    monkeypatch.setattr("napari_modality_synth.workers.SHUTDOWN_TIMEOUT_S", 2 * JOB_SECONDS)
    widget = compare_module.CompareWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return widget, widget.compare()


@pytest.mark.parametrize("start", [_start_translate, _start_age_explorer, _start_compare],
                         ids=["translate", "age-explorer", "compare"])
def test_closing_the_viewer_stops_a_running_job(make_napari_viewer, qtbot, monkeypatch, small_volume, start):
    viewer = make_napari_viewer()
    for name in ("scan [t1]", "other [t1]"):
        data, kwargs, _ = volume_to_layer_data(small_volume, name=name, as_labels=False)
        viewer.add_image(data, **kwargs)
    job = SlowJob()
    widget, worker = start(viewer, monkeypatch, job)
    assert worker is not None
    qtbot.waitUntil(lambda: job.reports >= 3, timeout=10000)
    viewer.close()
    assert job.ended_at is not None, "the job still runs after its viewer closed"
    if start is _start_compare:  # evaluate cannot be interrupted: the close waited for it
        assert job.ended_by is None
    else:  # stopped at its next report, long before its end
        assert type(job.ended_by).__name__ == "JobStopped"
    # Events keep flowing after the close, as in a session that goes on (or is quitting):
    # any report or result still on its way would reach the deleted widget now (pytest-qt
    # fails the test on an exception raised in a slot).
    qtbot.wait(500)
    assert not worker.is_running
