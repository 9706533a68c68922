"""All four dock widgets docked at once: the napari window still fits a 1,000 px screen."""

from __future__ import annotations

from qtpy.QtWidgets import QScrollArea

from napari_modality_synth.layers import volume_to_layer_data
from napari_modality_synth.widgets.age_explorer import AgeExplorerWidget
from napari_modality_synth.widgets.compare import CompareWidget
from napari_modality_synth.widgets.train import TrainWidget
from napari_modality_synth.widgets.translate import TranslateWidget

SCREEN_HEIGHT_PX = 1000
WIDGETS = (TranslateWidget, CompareWidget, AgeExplorerWidget, TrainWidget)


def test_four_docked_widgets_fit_a_1000_px_screen(make_napari_viewer, small_volume):
    viewer = make_napari_viewer()
    for name in ("scan [t1]", "other [t2]"):
        data, kwargs, _ = volume_to_layer_data(small_volume, name=name, as_labels=False)
        viewer.add_image(data, **kwargs)
    widgets = [widget_class(viewer) for widget_class in WIDGETS]
    for widget in widgets:
        viewer.window.add_dock_widget(widget, name=type(widget).__name__)
    window = viewer.window._qt_window
    hint = window.minimumSizeHint()
    print(f"main window minimum size hint with the four widgets docked: {hint.width()} x {hint.height()} px")
    assert hint.height() <= SCREEN_HEIGHT_PX
    # Nothing is cut off: what does not fit scrolls, and alone each widget asks for all of it.
    for widget in widgets:
        [body] = widget.findChildren(QScrollArea)[:1]
        content = body.widget()
        assert body.minimumSizeHint().height() < content.minimumSizeHint().height()
        assert body.sizeHint().height() >= content.minimumSizeHint().height()
