"""Train widget: a run started, stopped (within 2 s, leaving last.ckpt) and resumed to the end from
the widget; the finished checkpoint is listed in Translate at once; errors are notifications;
closing the viewer stops a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny_cohort import write_labelled_cohort, write_tiny_cohort

from napari_modality_synth.widgets.train import TrainWidget
from napari_modality_synth.widgets.translate import TranslateWidget
from synth_core import list_checkpoints

PLANNED = 10_000  # the first run is stopped long before
STOP_AFTER = 5
MORE = 10  # Resume, with Steps set to the stopped step + MORE, runs to the end


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Train with one intra-op thread: on a shared, oversubscribed machine two OpenMP threads
    spin-wait on each other and a tiny step takes seconds instead of milliseconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_cohort(tmp_path_factory.mktemp("train-widget") / "cohort")


def _fill(widget: TrainWidget, data: Path, out: Path, steps: int, val_every: int) -> None:
    widget.data.setText(str(data))
    widget.method.setCurrentIndex(widget.method.findData("pix2pix"))
    widget.source.setCurrentIndex(widget.source.findData("t1"))
    widget.target.setCurrentIndex(widget.target.findData("pet"))
    widget.preset.setCurrentIndex(widget.preset.findData("tiny"))
    widget.settings["steps"].setText(str(steps))
    widget.settings["val_every"].setText(str(val_every))
    widget.device.setCurrentIndex(widget.device.findData("cpu"))
    widget.out.setText(str(out))


def _docked(viewer, widget):
    viewer.window.add_dock_widget(widget)
    return widget


def test_stop_resume_and_the_checkpoint_reaches_translate(make_napari_viewer, qtbot, cohort, tmp_path):
    viewer = make_napari_viewer()
    trainer = _docked(viewer, TrainWidget(viewer))
    translator = _docked(viewer, TranslateWidget(viewer))
    translator.method.setCurrentIndex(translator.method.findData("pix2pix"))
    out = tmp_path / "run"
    _fill(trainer, cohort, out, PLANNED, val_every=MORE)
    assert not trainer.resume_button.isEnabled()

    trainer.start_button.click()
    qtbot.waitUntil(lambda: trainer.log.step >= STOP_AFTER, timeout=30000)
    assert trainer.start_button.isEnabled() is False and trainer.stop_button.isEnabled()
    trainer.stop_button.click()
    qtbot.waitUntil(lambda: trainer.result is not None, timeout=10000)
    stopped = trainer.result
    assert stopped.stopped and STOP_AFTER <= stopped.steps < PLANNED
    assert trainer.stop_seconds < 2.0
    ckpt = torch.load(out / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2 * stopped.steps  # pix2pix: two optimiser steps per step
    assert f"stopped at step {stopped.steps}" in trainer.status.text()
    qtbot.waitUntil(lambda: trainer.resume_button.isEnabled(), timeout=5000)
    assert "pix2pix-t1-pet-run" not in [i.name for i in list_checkpoints("pix2pix")]  # not when stopped

    end = stopped.steps + MORE
    trainer.settings["steps"].setText(str(end))
    trainer.resume_button.click()
    qtbot.waitUntil(lambda: trainer.result is not None and not trainer.worker.is_running, timeout=60000)
    done = trainer.result
    assert not done.stopped and done.steps == end
    assert done.registered is not None and done.registered.name == "pix2pix-t1-pet-run"
    # One log across stop and resume: every step once, in order.
    steps, series = trainer.log.loss_series()
    np.testing.assert_array_equal(steps, np.arange(1, end + 1))
    assert {"g_l1", "d"} <= set(series)
    np.testing.assert_array_equal(trainer.plot.x, steps)
    np.testing.assert_allclose(trainer.plot.series["g_l1"], series["g_l1"])
    assert {"val_mae", "val_psnr"} <= set(trainer.log.metrics)
    assert f"PSNR (dB) {trainer.log.metrics['val_psnr']:.3g}" in trainer.metrics.text()
    assert trainer.progress.value() == end == trainer.progress.maximum()
    # Translate re-read the zoo when the run registered its checkpoint (no click needed) ...
    assert done.registered.name in [info.name for info in translator.checkpoints]
    # ... and offers it for t1 -> pet.
    translator.target.setCurrentIndex(translator.target.findData("pet"))
    names = [translator.checkpoint.itemText(i) for i in range(translator.checkpoint.count())]
    assert any(text.startswith(f"{done.registered.name} (t1 -> pet, user)") for text in names), names


def test_mistakes_are_notifications(make_napari_viewer, qtbot, cohort, tmp_path, error_messages):
    viewer = make_napari_viewer()
    widget = _docked(viewer, TrainWidget(viewer))
    assert widget.start() is None  # no data chosen
    _fill(widget, cohort, tmp_path / "run", PLANNED, val_every=MORE)
    widget.settings["lr"].setText("fast")
    assert widget.start() is None
    widget.settings["lr"].setText("")
    widget.data.setText(str(tmp_path / "missing"))
    worker = widget.start()
    qtbot.waitUntil(lambda: len(error_messages()) == 3, timeout=10000)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=5000)
    first, second, third = error_messages()
    assert "choose the training data" in first
    assert "Learning rate 'fast' is not a number" in second
    assert "missing" in third and "does not exist" in third
    assert widget.result is None and widget.start_button.isEnabled()


def test_closing_the_viewer_stops_a_run(make_napari_viewer, qtbot, cohort, tmp_path):
    viewer = make_napari_viewer()
    widget = _docked(viewer, TrainWidget(viewer))
    out = tmp_path / "run"
    _fill(widget, cohort, out, steps=100_000, val_every=100_000)
    widget.start()
    handle = widget.handle
    qtbot.waitUntil(lambda: widget.log.step >= 1, timeout=30000)
    try:
        viewer.close()
        qtbot.waitUntil(handle.finished.is_set, timeout=10000)
    finally:
        handle.shutdown()  # never leave a run going, even when the assertion fails
    assert handle.stop.is_set() and (out / "last.ckpt").is_file()


def test_partially_paired_bidpm_from_the_widget(make_napari_viewer, qtbot, cohort, tmp_path):
    viewer = make_napari_viewer()
    widget = _docked(viewer, TrainWidget(viewer))
    widget.method.setCurrentIndex(widget.method.findData("pix2pix"))
    assert [widget.mode.itemData(i) for i in range(widget.mode.count())] == ["paired"]
    assert widget.paired_fraction.isHidden()
    widget.method.setCurrentIndex(widget.method.findData("bi-dpm"))
    assert [widget.mode.itemData(i) for i in range(widget.mode.count())] == ["paired", "partial"]
    assert widget.preset.findData("cpu-2step") >= 0
    widget.mode.setCurrentIndex(widget.mode.findData("partial"))
    assert not widget.paired_fraction.isHidden()
    widget.paired_fraction.setValue(0.34)
    widget.data.setText(str(cohort))
    widget.source.setCurrentIndex(widget.source.findData("t1"))
    widget.target.setCurrentIndex(widget.target.findData("t2"))
    widget.preset.setCurrentIndex(widget.preset.findData("tiny"))
    widget.device.setCurrentIndex(widget.device.findData("cpu"))
    widget.out.setText(str(tmp_path / "bidpm"))
    request = widget.request()
    assert (request.method, request.mode, request.paired_fraction) == ("bi-dpm", "partial", 0.34)
    worker = widget.start()
    # The result arrives through the event loop after the worker thread ends: wait for it.
    qtbot.waitUntil(lambda: widget.result is not None or widget.status.text() == "failed", timeout=60000)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=5000)
    assert widget.result is not None and widget.result.steps == 4, widget.status.text()
    card = widget.result.model.card
    assert card["training_data"]["mode"] == "partial"


def test_patch_size_reaches_the_run_and_its_card(make_napari_viewer, qtbot, cohort, tmp_path,
                                                 error_messages):
    viewer = make_napari_viewer()
    widget = _docked(viewer, TrainWidget(viewer))
    widget.method.setCurrentIndex(widget.method.findData("dual-glow"))  # runs whole volumes only
    assert widget.settings["patch_size"].isHidden()
    _fill(widget, cohort, tmp_path / "run", 2, val_every=2)
    assert not widget.settings["patch_size"].isHidden()
    widget.settings["patch_size"].setText("8")
    assert widget.overrides()["patch_size"] == 8
    widget.settings["patch_size"].setText("6")  # not a multiple of the tiny preset's 4
    worker = widget.start()
    qtbot.waitUntil(lambda: len(error_messages()) == 1, timeout=20000)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=5000)
    assert "patch_size (6, 6, 6) is not a multiple of 4" in error_messages()[0]
    assert not (tmp_path / "run" / "config.json").exists()  # refused before any work
    widget.settings["patch_size"].setText("8")
    worker = widget.start()
    qtbot.waitUntil(lambda: widget.result is not None, timeout=120000)
    card = widget.result.model.card
    assert card["patch_size"] == [8, 8, 8] and card["spacing"] == [4.0, 4.0, 4.0]


def test_a_several_source_duiit_model_from_the_widget(make_napari_viewer, qtbot, tmp_path,
                                                      error_messages):
    """Labelled training takes several sources: boxes replace From, the run trains one
    translator per ticked modality, and Translate lists the model for each of them."""
    viewer = make_napari_viewer()
    widget = _docked(viewer, TrainWidget(viewer))
    translator = _docked(viewer, TranslateWidget(viewer))
    widget.method.setCurrentIndex(widget.method.findData("duiit"))
    assert [widget.mode.itemData(i) for i in range(widget.mode.count())] == ["labelled", "unpaired"]
    assert widget.source.isHidden() and not widget.sources.isHidden()
    assert widget.chosen_sources() == ("t1", "pet")  # the paper's MRI and PET, ticked
    widget.mode.setCurrentIndex(widget.mode.findData("unpaired"))  # one source again
    assert not widget.source.isHidden() and widget.sources.isHidden()
    assert widget.chosen_sources() == (widget.source.currentData(),)
    widget.mode.setCurrentIndex(widget.mode.findData("labelled"))
    assert widget.source.isHidden() and not widget.sources.isHidden()

    cohort = write_labelled_cohort(tmp_path / "labelled")
    widget.data.setText(str(cohort))
    widget.target.setCurrentIndex(widget.target.findData("ct"))
    widget.preset.setCurrentIndex(widget.preset.findData("tiny"))
    widget.settings["steps"].setText("3")
    widget.settings["val_every"].setText("3")
    widget.device.setCurrentIndex(widget.device.findData("cpu"))
    widget.out.setText(str(tmp_path / "run"))
    for box in widget.source_boxes.values():
        box.setChecked(False)
    assert widget.start() is None
    assert "tick at least one source modality" in error_messages()[-1]
    widget.source_boxes["t1"].setChecked(True)
    widget.source_boxes["pet"].setChecked(True)
    request = widget.request()
    assert (request.source, request.target, request.mode) == ("t1,pet", "ct", "labelled")

    worker = widget.start()
    qtbot.waitUntil(lambda: widget.result is not None or widget.status.text() == "failed",
                    timeout=120000)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=5000)
    assert widget.result is not None and widget.result.steps == 3, widget.status.text()
    card = widget.result.model.card
    assert card["capabilities"]["sources"] == ["t1", "pet"]
    assert card["training_data"]["mode"] == "labelled"
    assert widget.result.registered.name == "duiit-t1+pet-ct-run"
    assert "'duiit-t1+pet-ct-run' is listed in Translate" in widget.status.text()
    # Translate offers the finished model for ct from either source.
    translator.method.setCurrentIndex(translator.method.findData("duiit"))
    translator.target.setCurrentIndex(translator.target.findData("ct"))
    names = [translator.checkpoint.itemText(i) for i in range(translator.checkpoint.count())]
    assert any(text.startswith("duiit-t1+pet-ct-run") for text in names), names
    sources = [translator.source.itemData(i) for i in range(translator.source.count())]
    assert {"t1", "pet"} <= set(sources), sources
