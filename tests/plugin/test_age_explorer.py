"""Age explorer: one (n_ages, X, Y, Z) layer with age on its first world axis, and region means
against age equal to a numpy recomputation; unavailable without an age-conditioned method."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import synth_core
from napari_modality_synth.layers import volume_to_layer_data
from napari_modality_synth.widgets import age_explorer as module
from napari_modality_synth.widgets.age_explorer import UNAVAILABLE, AgeExplorerWidget
from synth_core import Volume

REGIONS = {1: "frontal", 2: "hippocampus", 3: "cerebellum"}


def _age_methods() -> dict:
    real = synth_core.list_methods()
    caps = dict(real["pix2pix"]["capabilities"], conditions=("age",), stochastic=True)
    # Only the fake one conditions on age, whatever methods the engine registers.
    return {"pix2pix": real["pix2pix"],
            "fake-glow": {"title": "fake", "paper": "", "capabilities": caps, "presets": ["cpu"]}}


def _no_age_methods() -> dict:
    return {k: v for k, v in synth_core.list_methods().items() if "age" not in v["capabilities"]["conditions"]}


def _checkpoints(method=None, source=None, target=None) -> list:
    info = SimpleNamespace(name="glow-t1-pet", method="fake-glow", source="t1", target="pet", origin="user",
                           directory=Path("/nowhere/glow-t1-pet"), card={"age_range": [60.0, 80.0]})
    return [info] if method in (None, "fake-glow") else []


def _synthetic(data: np.ndarray, age: float) -> np.ndarray:
    """What the fake method 'synthesizes' at an age: brighter and shifted with age."""
    return data * (1.0 + 0.02 * (age - 60.0)) + 0.5 * age


@pytest.fixture
def fake_age_method(monkeypatch):
    calls = []

    def fake_translate(volume, method, to, **kwargs):
        calls.append(dict(kwargs, method=method, to=to))
        kwargs["progress"](1.0, "done")
        out = Volume(_synthetic(volume.data, kwargs["age"]).astype(np.float32), volume.affine, to,
                     {"provenance": {"Synthetic": True, "Parameters": {"age": kwargs["age"]}}})
        return SimpleNamespace(volume=out, std=None, provenance=out.metadata["provenance"], warnings=[])

    monkeypatch.setattr(module, "list_methods", _age_methods)
    monkeypatch.setattr(module, "list_checkpoints", _checkpoints)
    monkeypatch.setattr(module, "translate", fake_translate)
    return calls


def _labels(shape: tuple[int, ...]) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[2:6, 2:5, 1:4] = 1
    labels[6:10, 4:8, 3:7] = 2
    labels[1:4, 6:9, 5:8] = 3
    return labels


def _setup(make_napari_viewer, volume: Volume, labels: np.ndarray):
    viewer = make_napari_viewer()
    data, kwargs, _ = volume_to_layer_data(volume, name="scan [t1]", as_labels=False)
    viewer.add_image(data, **kwargs)
    viewer.add_labels(labels, name="regions", affine=volume.affine, units=kwargs["units"],
                      features={"index": [0, *REGIONS], "region": ["background", *REGIONS.values()]})
    widget = AgeExplorerWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def test_ages_form_one_layer_on_an_age_axis_and_region_means_match_numpy(
        make_napari_viewer, qtbot, fake_age_method, small_volume):
    labels = _labels(small_volume.shape)
    viewer, widget = _setup(make_napari_viewer, small_volume, labels)
    assert (widget.first.value(), widget.last.value(), widget.step.value()) == (60, 80, 5)
    assert widget.labels.currentText() == "regions" and widget.button.isEnabled()

    widget.button.click()
    qtbot.waitUntil(lambda: widget.layer is not None, timeout=10000)
    qtbot.waitUntil(lambda: not widget.worker.is_running, timeout=5000)

    ages = np.array([60.0, 65.0, 70.0, 75.0, 80.0])
    assert [c["age"] for c in fake_age_method] == list(ages)
    assert {(c["method"], c["to"], c["checkpoint"]) for c in fake_age_method} == {
        ("fake-glow", "pet", str(Path("/nowhere/glow-t1-pet")))}
    layer = widget.layer
    assert layer.data.shape == (5, *small_volume.shape)
    expected = np.stack([_synthetic(small_volume.data, a) for a in ages])
    np.testing.assert_allclose(layer.data, expected, rtol=1e-5)
    matrix = layer.affine.affine_matrix
    assert (matrix[0, 0], matrix[0, 4]) == (5.0, 60.0)  # age = 60 + 5 * index, in years
    np.testing.assert_allclose(matrix[1:4, 1:4], small_volume.affine[:3, :3], atol=1e-12)
    np.testing.assert_allclose(matrix[1:4, 4], small_volume.affine[:3, 3], atol=1e-12)
    assert viewer.dims.range[0][:2] == pytest.approx((60.0, 80.0))  # the slider reads years
    assert layer.metadata["provenance"]["Parameters"]["age"] == list(ages)
    viewer.dims.set_current_step(0, 2)
    assert widget.age_shown.text().startswith("showing age 70 years")

    np.testing.assert_allclose(widget.plot.x, ages)
    assert set(widget.plot.series) == set(REGIONS.values())
    for value, name in REGIONS.items():
        recomputed = [expected[i][labels == value].mean() for i in range(len(ages))]
        np.testing.assert_allclose(widget.plot.series[name], recomputed, rtol=1e-6)
    if widget.plot.canvas is not None:  # what is drawn is what was computed
        drawn = {line.get_label(): line.get_ydata() for line in widget.plot.axes.get_lines()}
        np.testing.assert_allclose(drawn["hippocampus"], widget.plot.series["hippocampus"])


def test_labels_on_another_grid_give_a_notification_and_no_layer(
        make_napari_viewer, qtbot, fake_age_method, small_volume, error_messages):
    viewer, widget = _setup(make_napari_viewer, small_volume, _labels((8, 8, 8)))
    widget.first.setValue(70)
    widget.explore()
    qtbot.waitUntil(lambda: bool(error_messages()), timeout=10000)
    qtbot.waitUntil(lambda: not widget.worker.is_running, timeout=5000)
    [message] = error_messages()
    assert "(8, 8, 8)" in message and "(12, 10, 9)" in message
    assert len(viewer.layers) == 2 and widget.layer is None and widget.button.isEnabled()


def test_says_it_is_unavailable_without_an_age_method(make_napari_viewer, monkeypatch, small_volume,
                                                      error_messages):
    monkeypatch.setattr(module, "list_methods", _no_age_methods)
    viewer, widget = _setup(make_napari_viewer, small_volume, _labels(small_volume.shape))
    assert widget.notice.text() == UNAVAILABLE and "age condition" in UNAVAILABLE
    assert not widget.button.isEnabled() and widget.method.count() == 0
    assert widget.explore() is None
    assert error_messages() == [UNAVAILABLE] and len(viewer.layers) == 2


def test_without_matplotlib_the_plot_is_a_table(qtbot, monkeypatch):
    from napari_modality_synth.widgets import _plots

    monkeypatch.setattr(_plots, "HAS_MATPLOTLIB", False)
    plot = _plots.LinePlot("age (years)", "mean")
    qtbot.addWidget(plot)
    plot.plot([60.0, 65.0], {"frontal": [1.5, 1.25], "hippocampus": [0.75, 0.5]})
    table = plot.table
    assert plot.canvas is None and (table.rowCount(), table.columnCount()) == (2, 3)
    header = [table.horizontalHeaderItem(c).text() for c in range(3)]
    assert header == ["age (years)", "frontal", "hippocampus"]
    assert [table.item(1, c).text() for c in range(3)] == ["65", "1.25", "0.5"]


def test_the_plot_names_the_region_actually_averaged(make_napari_viewer, qtbot, fake_age_method, small_volume):
    viewer = make_napari_viewer()
    data, kwargs, _ = volume_to_layer_data(small_volume, name="sub-001_t1 [t1]", as_labels=False)
    viewer.add_image(data, **kwargs)
    mask = (small_volume.data > 30).astype(np.uint8)
    regions = _labels(small_volume.shape)
    # As read from files: no features table naming the regions.
    viewer.add_labels(regions, name="sub-001_labels", affine=small_volume.affine)
    viewer.add_labels(mask, name="sub-001_brainmask", affine=small_volume.affine)
    widget = AgeExplorerWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.first.setValue(70)
    widget.last.setValue(75)

    def explore(labels_name: str) -> dict:
        widget.labels.setCurrentText(labels_name)
        widget.layer = None
        widget.explore()
        qtbot.waitUntil(lambda: widget.layer is not None, timeout=10000)
        qtbot.waitUntil(lambda: not widget.worker.is_running, timeout=5000)
        return widget.plot.series

    # A brain mask is one region: named as the mask, not as the phantom's region 1 ("frontal").
    series = explore("sub-001_brainmask")
    assert list(series) == ["sub-001_brainmask"]
    recomputed = [_synthetic(small_volume.data, age)[mask == 1].mean() for age in (70.0, 75.0)]
    np.testing.assert_allclose(series["sub-001_brainmask"], recomputed, rtol=1e-6)
    if widget.plot.canvas is not None:
        assert [line.get_label() for line in widget.plot.axes.get_lines()] == ["sub-001_brainmask"]
    # The phantom's own labels file: its region names.
    assert set(explore("sub-001_labels")) == {"frontal", "parietal", "temporal"}
