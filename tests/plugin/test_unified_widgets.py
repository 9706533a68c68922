"""The widgets speak any-to-any: Translate offers an any-to-any checkpoint's targets and "all
missing contrasts" (one layer per target, aligned with the input); Train shows a Modalities
field instead of From and To for the unified method."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

import synth_core
from napari_modality_synth.layers import volume_to_layer_data
from napari_modality_synth.widgets import translate as translate_module
from napari_modality_synth.widgets.train import TrainWidget
from napari_modality_synth.widgets.translate import TranslateWidget
from synth_core import Volume

MODS = ["t1", "t1ce", "t2", "flair"]
BUNDLED_UNIFIED = "unified-mr-small"


def _unified_checkpoints(method=None, source=None, target=None) -> list:
    info = SimpleNamespace(name="unified-any", method="unified", source="t1", target="t1ce",
                           origin="user", directory=Path("/nowhere/unified-any"),
                           card={"any_to_any": True, "modalities": MODS, "age_range": None})
    return [info] if method in (None, "unified") else []


def _texts(combo) -> list[str]:
    return [combo.itemText(i) for i in range(combo.count())]


def test_translate_completes_a_study_one_layer_per_target(make_napari_viewer, qtbot, monkeypatch,
                                                          small_volume):
    calls = []

    def fake_translate(volume, method, to, **kwargs):
        calls.append((to, kwargs["source"], kwargs["checkpoint"]))
        kwargs["progress"](1.0, "done")
        provenance = {"Synthetic": True, "Method": method, "TargetModality": to}
        scale = 1.0 + MODS.index(to)
        return SimpleNamespace(volume=Volume(volume.data * scale, volume.affine, to,
                                             {"provenance": provenance}),
                               std=None, provenance=provenance, warnings=[])

    monkeypatch.setattr(translate_module, "list_checkpoints", _unified_checkpoints)
    monkeypatch.setattr(translate_module, "translate", fake_translate)
    viewer = make_napari_viewer()
    widget = TranslateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    data, kwargs, _ = volume_to_layer_data(small_volume, name="sub-001_t1 [t1]", as_labels=False)
    source = viewer.add_image(data, **kwargs)
    widget.method.setCurrentIndex(widget.method.findData("unified"))

    assert _texts(widget.source) == MODS and widget.source.currentData() == "t1"
    assert _texts(widget.target) == ["t1ce", "t2", "flair", "all missing contrasts (t1ce, t2, flair)"]
    assert _texts(widget.checkpoint) == ["unified-any (any of t1, t1ce, t2, flair, user)"]
    widget.source.setCurrentIndex(widget.source.findData("t2"))  # targets follow the source
    assert _texts(widget.target)[:3] == ["t1", "t1ce", "flair"]
    assert widget.controls.reverse.isHidden() or not widget.controls.reverse.isChecked()
    widget.source.setCurrentIndex(widget.source.findData("t1"))
    widget.target.setCurrentIndex(widget.target.count() - 1)
    assert widget.button.isEnabled()
    widget.translate()
    qtbot.waitUntil(lambda: len(viewer.layers) == 4, timeout=10000)
    qtbot.waitUntil(lambda: not widget.worker.is_running, timeout=5000)

    assert [c[0] for c in calls] == ["t1ce", "t2", "flair"]
    assert all(c[1] == "t1" and c[2] == str(Path("/nowhere/unified-any")) for c in calls)
    for target in ("t1ce", "t2", "flair"):
        layer = viewer.layers[f"sub-001_t1 [t1] -> {target} (unified)"]
        np.testing.assert_allclose(layer.affine.affine_matrix, source.affine.affine_matrix,
                                   atol=1e-12)
        np.testing.assert_allclose(layer.data, small_volume.data * (1.0 + MODS.index(target)),
                                   rtol=1e-6)
        assert layer.metadata["provenance"]["TargetModality"] == target
    assert len(widget.added) == 3 and "added 3 layers" in widget.status.text()


def test_translate_one_target_of_an_any_to_any_checkpoint(make_napari_viewer, qtbot, monkeypatch,
                                                          small_volume):
    calls = []

    def fake_translate(volume, method, to, **kwargs):
        calls.append(to)
        provenance = {"Synthetic": True, "Method": method, "TargetModality": to}
        return SimpleNamespace(volume=Volume(volume.data, volume.affine, to, {"provenance": provenance}),
                               std=None, provenance=provenance, warnings=[])

    monkeypatch.setattr(translate_module, "list_checkpoints", _unified_checkpoints)
    monkeypatch.setattr(translate_module, "translate", fake_translate)
    viewer = make_napari_viewer()
    widget = TranslateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    data, kwargs, _ = volume_to_layer_data(small_volume, name="scan [t1]", as_labels=False)
    viewer.add_image(data, **kwargs)
    widget.method.setCurrentIndex(widget.method.findData("unified"))
    widget.target.setCurrentIndex(widget.target.findData("flair"))
    widget.translate()
    qtbot.waitUntil(lambda: len(viewer.layers) == 2, timeout=10000)
    assert calls == ["flair"] and "scan [t1] -> flair (unified)" in viewer.layers


def test_train_widget_shows_modalities_for_unified(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.method.setCurrentIndex(widget.method.findData("pix2pix"))
    assert widget.modalities.isHidden() and not widget.source.isHidden()
    widget.method.setCurrentIndex(widget.method.findData("unified"))
    assert not widget.modalities.isHidden() and widget.source.isHidden() and widget.target.isHidden()
    assert "cpu" in _texts(widget.preset)
    widget.data.setText(str(tmp_path))
    widget.modalities.setText("t1, t2,flair")
    request = widget.request()
    assert request.modalities == ("t1", "t2", "flair") and request.method == "unified"
    assert "unified-any-" in str(request.out)
    widget.modalities.setText("t1,mri")
    try:
        widget.request()
    except synth_core.UserError as exc:
        assert "mri" in str(exc)
    else:
        raise AssertionError("an unknown modality was accepted")


def test_the_bundled_unified_checkpoint_completes_a_study_in_the_widget(make_napari_viewer, qtbot):
    """No stand-ins: the bundled any-to-any checkpoint, listed from the zoo, translates a
    phantom T1 into the three other contrasts, one layer each, aligned with the input and
    marked synthetic with the checkpoint's sha256."""
    from synth_core import zoo
    from synth_core.phantom import generate_subject

    info = zoo.locate(BUNDLED_UNIFIED)
    subject = generate_subject(0, seed=1000, preset="small")
    viewer = make_napari_viewer()
    widget = TranslateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    data, kwargs, _ = volume_to_layer_data(subject.volumes["t1"], name="sub-001_t1 [t1]",
                                           as_labels=False)
    source = viewer.add_image(data, **kwargs)
    widget.method.setCurrentIndex(widget.method.findData("unified"))
    assert any(BUNDLED_UNIFIED in t for t in _texts(widget.checkpoint))
    widget.checkpoint.setCurrentIndex(
        next(i for i, t in enumerate(_texts(widget.checkpoint)) if BUNDLED_UNIFIED in t))
    widget.target.setCurrentIndex(widget.target.count() - 1)  # all missing contrasts
    widget.translate()
    qtbot.waitUntil(lambda: len(viewer.layers) == 4, timeout=60000)
    qtbot.waitUntil(lambda: not widget.worker.is_running, timeout=10000)
    brain = subject.volumes["brainmask"].data > 0
    for target in ("t1ce", "t2", "flair"):
        layer = viewer.layers[f"sub-001_t1 [t1] -> {target} (unified)"]
        np.testing.assert_allclose(layer.affine.affine_matrix, source.affine.affine_matrix,
                                   atol=1e-9)
        provenance = layer.metadata["provenance"]
        assert provenance["Synthetic"] is True and provenance["TargetModality"] == target
        assert provenance["CheckpointSHA256"] == info.sha256
        truth = subject.volumes[target].data[brain]
        assert np.corrcoef(np.asarray(layer.data)[brain], truth)[0, 1] > 0.8
