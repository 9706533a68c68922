"""Translate widget: the result matches the engine's own translate, on the input's grid, with
provenance; errors become notifications; controls follow the method's capabilities."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from _tiny_cohort import write_tiny_cohort

import synth_core
from napari_modality_synth.layers import volume_to_layer_data
from napari_modality_synth.widgets import translate as translate_module
from napari_modality_synth.widgets.translate import TranslateWidget
from synth_core import Volume

CHECKPOINT = "plugin-tiny-pix2pix-t1-pet"


def _train_tiny(root: Path, method: str, source: str, target: str, name: str,
                overrides: dict | None = None) -> str:
    """Train ``method`` (tiny preset) on a tiny cohort under ``root``, registered as ``name``."""
    import torch

    from synth_core.training import TrainRequest, train

    cohort = write_tiny_cohort(root / "cohort")
    # One intra-op thread: on a shared, oversubscribed machine two OpenMP threads spin-wait
    # on each other and a tiny step takes seconds instead of milliseconds.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(TrainRequest(method=method, data=cohort, source=source, target=target, out=root / "run",
                           preset="tiny", name=name,
                           overrides={"val_every": 1000, "checkpoint_every": 1000} | (overrides or {})))
    finally:
        torch.set_num_threads(before)
    return name


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny pix2pix t1 -> pet trained here and registered in the session's zoo; its name."""
    return _train_tiny(tmp_path_factory.mktemp("plugin-translate"), "pix2pix", "t1", "pet", CHECKPOINT)


@pytest.fixture(scope="module")
def sample_t1() -> Volume:
    from napari_modality_synth._sample_data import _subject

    return _subject().volumes["t1"]


def _add(viewer, volume: Volume, name: str):
    data, kwargs, _ = volume_to_layer_data(volume, name=name, as_labels=False)
    return viewer.add_image(data, **kwargs)


def _widget(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = TranslateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def _texts(combo) -> list[str]:
    return [combo.itemText(i) for i in range(combo.count())]


def test_translate_adds_the_engines_result_aligned_with_its_input(
        make_napari_viewer, qtbot, tiny_checkpoint, sample_t1):
    viewer, widget = _widget(make_napari_viewer)
    source_layer = _add(viewer, sample_t1, "sub-001_t1 [t1]")
    widget.method.setCurrentIndex(widget.method.findData("pix2pix"))
    assert widget.source.currentData() == "t1"  # from the layer's modality
    assert "pet" in _texts(widget.target)
    widget.target.setCurrentIndex(widget.target.findData("pet"))
    index = next(i for i, text in enumerate(_texts(widget.checkpoint)) if text.startswith(CHECKPOINT))
    widget.checkpoint.setCurrentIndex(index)
    widget.device.setCurrentIndex(widget.device.findData("cpu"))

    widget.button.click()
    name = "sub-001_t1 [t1] -> pet (pix2pix)"
    qtbot.waitUntil(lambda: name in viewer.layers, timeout=20000)
    qtbot.waitUntil(lambda: not widget.worker.is_running, timeout=5000)

    layer = viewer.layers[name]
    np.testing.assert_allclose(layer.affine.affine_matrix, source_layer.affine.affine_matrix, atol=1e-12)
    np.testing.assert_allclose(layer.affine.affine_matrix, sample_t1.affine, atol=1e-12)
    expected = synth_core.translate(sample_t1, "pix2pix", "pet", source="t1",
                                    checkpoint=CHECKPOINT, device="cpu")
    assert layer.data.shape == sample_t1.shape
    np.testing.assert_allclose(layer.data, expected.volume.data, rtol=1e-5, atol=1e-4)
    provenance = layer.metadata["provenance"]
    assert provenance["Synthetic"] is True
    assert (provenance["Method"], provenance["Checkpoint"]) == ("pix2pix", CHECKPOINT)
    assert (provenance["SourceModality"], provenance["TargetModality"]) == ("t1", "pet")
    assert layer.colormap.name == "hot" and widget.progress.value() == 100
    assert widget.added == [layer] and widget.button.isEnabled()


def test_a_2d_layer_gives_a_notification_and_no_layer(make_napari_viewer, tiny_checkpoint, error_messages):
    viewer, widget = _widget(make_napari_viewer)
    viewer.add_image(np.ones((16, 16), np.float32), name="slice [t1]")
    widget.method.setCurrentIndex(widget.method.findData("pix2pix"))
    assert widget.translate() is None
    [message] = error_messages()
    assert "2 dimensions" in message and "3D" in message
    assert len(viewer.layers) == 1


def _fake_methods() -> dict:
    real = synth_core.list_methods()
    base = real["pix2pix"]["capabilities"]
    glow = dict(base, conditions=("age",), stochastic=True, bidirectional=False)
    flow = dict(base, steps=(1, 100), default_steps=20, bidirectional=True)
    return real | {
        "fake-glow": {"title": "fake age method", "paper": "", "capabilities": glow, "presets": ["cpu"]},
        "fake-flow": {"title": "fake ODE method", "paper": "", "capabilities": flow, "presets": ["cpu"]},
    }


def _fake_checkpoints(method=None, source=None, target=None) -> list:
    infos = [
        SimpleNamespace(name="glow-t1-pet", method="fake-glow", source="t1", target="pet", origin="user",
                        directory=Path("/nowhere/glow-t1-pet"), card={"age_range": [60.0, 80.0]}),
        SimpleNamespace(name="flow-t1-t2", method="fake-flow", source="t1", target="t2", origin="bundled",
                        directory=Path("/nowhere/flow-t1-t2"), card={"age_range": None}),
    ]
    return [i for i in infos if method in (None, i.method)]


def test_controls_follow_the_methods_capabilities(make_napari_viewer, monkeypatch, small_volume):
    monkeypatch.setattr(translate_module, "list_methods", _fake_methods)
    monkeypatch.setattr(translate_module, "list_checkpoints", _fake_checkpoints)
    viewer, widget = _widget(make_napari_viewer)
    _add(viewer, small_volume, "scan [t1]")
    rows = widget.controls.rows

    def shown() -> set[str]:
        return {name for name, row in rows.items() if not row.isHidden()}

    widget.method.setCurrentIndex(widget.method.findData("pix2pix"))
    assert shown() == set()
    widget.method.setCurrentIndex(widget.method.findData("fake-glow"))
    assert shown() == {"age", "samples", "temperature"}
    assert (widget.controls.age.minimum(), widget.controls.age.maximum()) == (60, 80)
    assert _texts(widget.target) == ["pet"] and widget.button.isEnabled()

    widget.method.setCurrentIndex(widget.method.findData("fake-flow"))
    assert shown() == {"steps", "reverse"}
    assert (widget.controls.steps.minimum(), widget.controls.steps.maximum()) == (1, 100)
    assert widget.controls.steps.value() == 20
    assert _texts(widget.source) == ["t1", "t2"] and widget.target.currentData() == "t2"
    widget.controls.reverse.setChecked(True)  # the direction flips the modalities
    assert (widget.source.currentData(), widget.target.currentData()) == ("t2", "t1")
    assert widget.controls.values()["reverse"] is True
    widget.source.setCurrentIndex(widget.source.findData("t1"))
    assert widget.controls.reverse.isChecked() is False


def test_samples_of_a_stochastic_method_add_a_std_layer(make_napari_viewer, qtbot, monkeypatch, small_volume):
    calls = []

    def fake_translate(volume, method, to, **kwargs):
        calls.append((method, to, kwargs))
        kwargs["progress"](0.5, "sampling")
        provenance = {"Synthetic": True, "Method": method, "Parameters": {"age": kwargs["age"]}}
        mean = Volume(volume.data * 0.5, volume.affine, "pet", {"provenance": provenance})
        std = Volume(np.abs(volume.data) * 0.1 + 1.0, volume.affine, "pet", {"provenance": provenance})
        return SimpleNamespace(volume=mean, std=std, provenance=provenance, warnings=[])

    monkeypatch.setattr(translate_module, "list_methods", _fake_methods)
    monkeypatch.setattr(translate_module, "list_checkpoints", _fake_checkpoints)
    monkeypatch.setattr(translate_module, "translate", fake_translate)
    viewer, widget = _widget(make_napari_viewer)
    _add(viewer, small_volume, "scan [t1]")
    widget.method.setCurrentIndex(widget.method.findData("fake-glow"))
    widget.controls.age.setValue(72)
    widget.controls.samples.setValue(4)
    widget.controls.temperature.setValue(0.7)
    widget.translate()
    qtbot.waitUntil(lambda: len(viewer.layers) == 3, timeout=10000)

    [(method, to, kwargs)] = calls
    assert (method, to, kwargs["source"]) == ("fake-glow", "pet", "t1")
    assert kwargs["checkpoint"] == str(Path("/nowhere/glow-t1-pet"))
    assert (kwargs["age"], kwargs["samples"], kwargs["steps"], kwargs["reverse"]) == (72.0, 4, None, False)
    assert kwargs["temperature"] == pytest.approx(0.7)
    mean, std = viewer.layers["scan [t1] -> pet (fake-glow)"], viewer.layers["scan [t1] -> pet (fake-glow) std"]
    np.testing.assert_allclose(mean.data, small_volume.data * 0.5, rtol=1e-6)
    np.testing.assert_allclose(std.data, np.abs(small_volume.data) * 0.1 + 1.0, rtol=1e-6)
    np.testing.assert_allclose(std.affine.affine_matrix, small_volume.affine, atol=1e-12)
    assert list(viewer.layers).index(mean) > list(viewer.layers).index(std)  # the mean on top
    assert mean.metadata["provenance"]["Synthetic"] is True


BIDPM = "plugin-tiny-bidpm-t1-t2"


@pytest.fixture(scope="session")
def tiny_bidpm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny two-time-point Bi-DPM t1 <-> t2 trained here and registered in the session's
    zoo; its name."""
    return _train_tiny(tmp_path_factory.mktemp("plugin-bidpm"), "bi-dpm", "t1", "t2", BIDPM,
                       overrides={"time_points": 2})


def test_bidpm_runs_backwards_with_the_chosen_step_count(make_napari_viewer, qtbot, tiny_bidpm):
    from napari_modality_synth._sample_data import _subject

    t2 = _subject().volumes["t2"]
    viewer, widget = _widget(make_napari_viewer)
    _add(viewer, t2, "sub-001_t2 [t2]")
    widget.method.setCurrentIndex(widget.method.findData("bi-dpm"))
    assert widget.source.currentData() == "t2"
    widget.target.setCurrentIndex(widget.target.findData("t1"))
    index = next(i for i, text in enumerate(_texts(widget.checkpoint)) if text.startswith(BIDPM))
    widget.checkpoint.setCurrentIndex(index)
    assert not widget.controls.rows["steps"].isHidden()
    # The trained time points, from the model card, are the only step count offered.
    assert widget.controls.steps.value() == 2
    assert (widget.controls.steps.minimum(), widget.controls.steps.maximum()) == (2, 2)
    assert widget.controls.reverse.isChecked()  # t2 -> t1 runs the t1 -> t2 model backwards
    widget.device.setCurrentIndex(widget.device.findData("cpu"))
    widget.button.click()
    name = "sub-001_t2 [t2] -> t1 (bi-dpm)"
    qtbot.waitUntil(lambda: name in viewer.layers, timeout=20000)
    qtbot.waitUntil(lambda: not widget.worker.is_running, timeout=5000)
    layer = viewer.layers[name]
    expected = synth_core.translate(t2, "bi-dpm", "t1", source="t2", checkpoint=BIDPM, steps=2,
                                    device="cpu")
    np.testing.assert_allclose(layer.data, expected.volume.data, rtol=1e-5, atol=1e-4)
    params = layer.metadata["provenance"]["Parameters"]
    assert (params["steps"], params["reverse"]) == (2, True)


def test_a_models_predicted_age_is_shown_with_the_result(make_napari_viewer, sample_t1):
    from synth_core.inference import TranslationResult

    viewer, widget = _widget(make_napari_viewer)
    provenance = {"Synthetic": True, "Prediction": {"age": 71.26, "units": "years", "Task": "age"}}
    widget._add_result(TranslationResult(sample_t1, None, provenance), "ct (duiit)")
    assert "predicted age 71.3 years" in widget.status.text()
    assert viewer.layers["ct (duiit)"].metadata["provenance"]["Prediction"]["age"] == 71.26
    widget._add_result(TranslationResult(sample_t1, None, {"Synthetic": True}), "pet")
    assert "predicted" not in widget.status.text()


def test_a_model_of_several_sources_is_offered_from_each():
    from napari_modality_synth.widgets import _choices

    caps = synth_core.list_methods()["duiit"]["capabilities"]
    info = SimpleNamespace(source="t1", target="ct", name="m", origin="user",
                           card={"capabilities": {"sources": ["t1", "pet"]}})
    assert _choices.source_options([info], caps) == ["t1", "pet", "ct"]
    assert _choices.target_options([info], caps, "pet") == ["ct"]
    assert _choices.target_options([info], caps, "ct") == ["t1", "pet"]
    assert _choices.runs_reverse(info, "ct", "pet") and not _choices.runs_reverse(info, "pet", "ct")
    assert _choices.checkpoint_label(info) == "m (t1/pet -> ct, user)"
