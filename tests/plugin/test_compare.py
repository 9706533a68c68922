"""Compare widget: its numbers are synth_core.evaluate's, its difference map is centred on zero."""

from __future__ import annotations

import numpy as np
import pytest

from napari_modality_synth.layers import volume_to_layer_data
from napari_modality_synth.widgets.compare import METRIC_LABELS, CompareWidget
from synth_core import Volume, evaluate


def _add(viewer, volume: Volume, name: str, as_labels: bool = False):
    data, kwargs, layer_type = volume_to_layer_data(volume, name=name, as_labels=as_labels)
    return viewer.add_labels(data, **kwargs) if layer_type == "labels" else viewer.add_image(data, **kwargs)


@pytest.fixture
def viewer_and_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = CompareWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def _choose(widget: CompareWidget, first: str, second: str, mask: str | None = None) -> None:
    widget.first.setCurrentText(first)
    widget.second.setCurrentText(second)
    widget.mask.setCurrentIndex(0 if mask is None else widget.mask.findText(mask))


def test_compare_matches_evaluate_and_centres_the_difference(viewer_and_widget, qtbot, small_volume):
    viewer, widget = viewer_and_widget
    rng = np.random.default_rng(3)
    target = small_volume
    pred = target.with_data(target.data * 0.9 + rng.normal(0, 3, target.shape) + 4.0)
    pred.affine = target.affine.copy()
    mask = target.with_data((target.data > 30).astype(np.float32), modality=None)
    _add(viewer, pred, "synth [t1]")
    _add(viewer, target, "true [t1]")
    _add(viewer, mask, "brain_mask", as_labels=True)
    _choose(widget, "synth [t1]", "true [t1]", mask="brain_mask")

    worker = widget.compare()
    assert worker is not None
    qtbot.waitUntil(lambda: widget.metrics is not None, timeout=10000)

    inside = mask.data > 0
    expected = evaluate(pred.data, target.data, mask=inside)
    assert set(widget.metrics) == set(expected)
    assert {k: widget.metrics[k] for k in METRIC_LABELS} == pytest.approx(
        {k: expected[k] for k in METRIC_LABELS}, rel=1e-12)
    assert widget.units.text() == f"units: {expected['units']}"  # the figures say what they are in
    assert widget.values["psnr"].text() == f"{expected['psnr']:.4g}"
    signed = viewer.layers["difference: synth [t1] - true [t1]"]
    absolute = viewer.layers["|difference|: synth [t1] - true [t1]"]
    np.testing.assert_allclose(signed.data, pred.data - target.data, atol=1e-5)
    np.testing.assert_allclose(absolute.data, np.abs(pred.data - target.data), atol=1e-5)
    low, high = signed.contrast_limits
    m = np.percentile(np.abs(pred.data - target.data)[inside], 99)
    assert (low, high) == pytest.approx((-m, m), rel=1e-5)
    np.testing.assert_allclose(signed.affine.affine_matrix, pred.affine, atol=1e-12)
    np.testing.assert_allclose(absolute.affine.affine_matrix, pred.affine, atol=1e-12)

    # Again, without the mask: same two layers updated, numbers over every voxel.
    widget.mask.setCurrentIndex(0)
    widget.metrics = None
    widget.compare()
    qtbot.waitUntil(lambda: widget.metrics is not None, timeout=10000)
    unmasked = evaluate(pred.data, target.data)
    assert {k: widget.metrics[k] for k in METRIC_LABELS} == pytest.approx(
        {k: unmasked[k] for k in METRIC_LABELS}, rel=1e-12)
    assert len(viewer.layers) == 5


def test_compare_reports_mismatched_shapes_without_a_layer(viewer_and_widget, qtbot, small_volume, error_messages):
    viewer, widget = viewer_and_widget
    cropped = Volume(small_volume.data[:-2], small_volume.affine, "t1")
    _add(viewer, small_volume, "a [t1]")
    _add(viewer, cropped, "b [t1]")
    _choose(widget, "a [t1]", "b [t1]")
    worker = widget.compare()
    qtbot.waitUntil(lambda: bool(error_messages()), timeout=10000)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=10000)
    [message] = error_messages()
    assert "(12, 10, 9)" in message and "(10, 10, 9)" in message and "resample" in message
    assert [layer.name for layer in viewer.layers] == ["a [t1]", "b [t1]"]
    assert widget.metrics is None and widget.button.isEnabled()


def test_compare_refuses_one_layer_twice(viewer_and_widget, small_volume, error_messages):
    viewer, widget = viewer_and_widget
    _add(viewer, small_volume, "only [t1]")
    _choose(widget, "only [t1]", "only [t1]")
    assert widget.compare() is None
    [message] = error_messages()
    assert "'only [t1]' is chosen twice" in message
    assert len(viewer.layers) == 1


def test_layer_lists_follow_the_viewer(viewer_and_widget, small_volume):
    viewer, widget = viewer_and_widget
    first = _add(viewer, small_volume, "one [t1]")
    _add(viewer, small_volume, "two [t1]")
    assert (widget.first.currentText(), widget.second.currentText()) == ("one [t1]", "two [t1]")
    first.name = "renamed [t1]"
    assert widget.first.currentText() == "renamed [t1]"
    viewer.layers.remove(first)
    assert [widget.first.itemText(i) for i in range(widget.first.count())] == ["two [t1]"]
    assert widget.mask.itemText(0) == "(no mask)"


def _synthesized(viewer, volume: Volume, name: str, target: str, subject: str | None = None):
    """A layer as the Translate widget adds it: provenance (and the input's subject) in its metadata."""
    data, kwargs, _ = volume_to_layer_data(volume.with_data(volume.data * 0.5, modality=target), name=name)
    kwargs["metadata"]["provenance"] = {"Synthetic": True, "TargetModality": target, "SourceModality": "t1"}
    if subject is not None:
        kwargs["metadata"]["subject_id"] = subject
    return viewer.add_image(data, **kwargs)


def test_the_default_pair_is_a_synthesized_layer_and_its_true_target(viewer_and_widget, qtbot, small_volume):
    viewer, widget = viewer_and_widget
    for name in ("sub-001_t1 [t1]", "sub-001_t1ce [t1ce]", "sub-002_pet [pet]", "sub-001_pet [pet]"):
        modality = name.split("[")[1].rstrip("]")
        _add(viewer, small_volume.with_data(small_volume.data, modality=modality), name)
    # No synthesized layer, no two scans of one modality and subject: the first two, and a hint.
    assert (widget.first.currentText(), widget.second.currentText()) == ("sub-001_t1 [t1]", "sub-001_t1ce [t1ce]")
    assert "choose the pair" in widget.pair_hint.text()

    _synthesized(viewer, small_volume, "sub-001_t1 [t1] -> pet (pix2pix)", "pet", subject="sub-001")
    # The synthesized PET against the true PET of its own subject (not sub-002's, listed first).
    assert (widget.first.currentText(), widget.second.currentText()) == (
        "sub-001_t1 [t1] -> pet (pix2pix)", "sub-001_pet [pet]")
    assert "true pet" in widget.pair_hint.text()

    # Compare's own outputs and a newer synthesized layer without a truth do not take over.
    _synthesized(viewer, small_volume, "sub-001_t1 [t1] -> ct (pix2pix)", "ct", subject="sub-001")
    assert widget.compare() is not None
    qtbot.waitUntil(lambda: widget.metrics is not None and not widget.handle.running, timeout=10000)
    assert "difference: sub-001_t1 [t1] -> pet (pix2pix) - sub-001_pet [pet]" in viewer.layers
    assert (widget.first.currentText(), widget.second.currentText()) == (
        "sub-001_t1 [t1] -> pet (pix2pix)", "sub-001_pet [pet]")

    # The user's own choice is kept when layers come and go.
    widget.second.setCurrentIndex(widget.second.findText("sub-002_pet [pet]"))
    _synthesized(viewer, small_volume, "sub-002_t1 [t1] -> pet (pix2pix)", "pet", subject="sub-002")
    assert (widget.first.currentText(), widget.second.currentText()) == (
        "sub-001_t1 [t1] -> pet (pix2pix)", "sub-002_pet [pet]")
    assert widget.pair_hint.text() == ""


def test_a_subject_is_read_from_names_paths_and_metadata(small_volume):
    from types import SimpleNamespace

    from napari_modality_synth.widgets._pairs import layer_subject

    def layer(name, **metadata):
        return SimpleNamespace(name=name, metadata=metadata)

    assert layer_subject(layer("sub-07_T1w")) == "sub-07"
    assert layer_subject(layer("scan", source_path="/data/sub-ab12/anat/sub-ab12_T1w.nii.gz")) == "sub-ab12"
    assert layer_subject(layer("x -> pet", provenance={"Sources": ["in/sub-003_t1.nii.gz"]})) == "sub-003"
    assert layer_subject(layer("sub-001_t1 [t1]", phantom={"subject_id": "sub-009"})) == "sub-009"
    assert layer_subject(layer("mysub-001scan")) is None and layer_subject(layer("scan")) is None
