"""Age explorer widget: one MRI synthesized across a range of ages, and ROI means against age.

For a method conditioned on age (``"age"`` in its capabilities' conditions), the input
is translated once per age in ``from, from + step, ..., to`` (years). The results form
ONE image layer of shape (n_ages, X, Y, Z) whose first axis is age: its affine is the
input's 4x4 affine extended to 5x5 with age scale = step and age offset = the first
age, so napari's slider reads years. Beside it, the mean synthesized intensity of each
region of a labels layer (names from the layer's features table, else the phantom's
``LABELS``) is plotted against age, as in Figure 7 of the Dual-GLOW paper.
Until a method with an age condition is registered, the widget says so and stays idle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import GeneratorWorker
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)

from napari_modality_synth.layers import (
    AXIS_LABELS,
    UNITS,
    display_settings,
    layer_modality,
    layer_to_volume,
    volume_to_layer_data,
)
from napari_modality_synth.widgets import _choices
from napari_modality_synth.widgets._age_series import (
    AgeSeries,
    age_affine,
    age_grid,
    region_names,
    synthesize_ages,
)
from napari_modality_synth.widgets._controls import (
    RefreshingComboBox,
    disconnect_on_destroy,
    fill_combo,
    make_device_combo,
)
from napari_modality_synth.widgets._plots import LinePlot
from napari_modality_synth.widgets._scroll import scrolling_layout
from napari_modality_synth.widgets.compare import fill_layer_combo as fill_layers
from napari_modality_synth.workers import (
    Failed,
    RunHandle,
    Stopped,
    checkpoints_changed,
    stop_on_close,
)
from synth_core import UserError, Volume, list_checkpoints, list_methods, translate

DEFAULT_AGE_STEP = 5
# The phantom cohort's ages, for a checkpoint whose card has no age range (years).
DEFAULT_AGE_RANGE = (55.0, 95.0)
_WHOLE = "(whole volume)"
UNAVAILABLE = ("No registered method takes an age condition (such as dual-glow); "
               "the Age explorer needs one.")


class AgeExplorerWidget(QWidget):
    """Dock widget: MRI layer, labels layer, age method and checkpoint, ages from/to/step, Explore.

    Attributes:
        series: the last result (None before the first); ``layer`` the layer it made.
        plot: the ROI-mean-against-age plot (``plot.x`` ages, ``plot.series`` region means).
    """

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        methods = list_methods()
        self.methods = {key: methods[key] for key in _choices.methods_with_condition(methods, "age")}
        self._age_range: tuple[float, float] | None = None
        self.series: AgeSeries | None = None
        self.layer: Any = None
        self.worker: GeneratorWorker | None = None
        self.handle = RunHandle()

        self.notice = QLabel("")
        self.notice.setWordWrap(True)
        self.input = QComboBox()
        self.labels = QComboBox()
        self.method = QComboBox()
        for key in self.methods:
            self.method.addItem(key, key)
        self.checkpoint = RefreshingComboBox()
        self.first, self.last, self.step = QSpinBox(), QSpinBox(), QSpinBox()
        self.step.setRange(1, 50)
        self.step.setValue(DEFAULT_AGE_STEP)
        ages = QHBoxLayout()
        for text, box in (("from", self.first), ("to", self.last), ("step", self.step)):
            ages.addWidget(QLabel(text))
            ages.addWidget(box, 1)
        self.device = make_device_combo()
        self.button = QPushButton("Explore ages")
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.plot = LinePlot("age (years)", "mean synthesized intensity", markers=True,
                             height=3.8)  # room for a legend of 14 regions
        self.age_shown = QLabel("")

        form = QFormLayout()
        form.addRow("MRI layer", self.input)
        form.addRow("Regions", self.labels)
        form.addRow("Method", self.method)
        form.addRow("Checkpoint", self.checkpoint)
        form.addRow("Ages (years)", ages)
        form.addRow("Device", self.device)
        layout = scrolling_layout(self)
        layout.addWidget(self.notice)
        layout.addLayout(form)
        layout.addWidget(self.button)
        layout.addWidget(self.progress)
        layout.addWidget(self.age_shown)
        layout.addWidget(self.plot, 1)

        self.method.currentIndexChanged.connect(self.refresh_checkpoints)
        self.checkpoint.about_to_show.connect(self.refresh_checkpoints)
        self.checkpoint.currentIndexChanged.connect(self._checkpoint_changed)
        self.button.clicked.connect(self.explore)
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self.refresh_layers)
        self.viewer.dims.events.current_step.connect(self.show_age)
        disconnect_on_destroy(self, self.viewer.dims.events.current_step, self.show_age)
        checkpoints_changed.connect(self.refresh_checkpoints)
        disconnect_on_destroy(self, checkpoints_changed, self.refresh_checkpoints)
        stop_on_close(self, self.handle)
        self.refresh_layers()
        # Start on the first age method that has a checkpoint to run.
        ready = [key for key in self.methods if list_checkpoints(method=key)]
        if ready:
            self.method.setCurrentIndex(self.method.findData(ready[0]))
        self.refresh_checkpoints()

    def refresh_layers(self, event: Any = None) -> None:
        """Image layers (not already age stacks) as inputs; labels layers as regions."""
        images = [layer for layer in self.viewer.layers
                  if isinstance(layer, Image) and layer.ndim == 3]
        fill_layers(self.input, images, default=0)
        labels = [layer for layer in self.viewer.layers if isinstance(layer, Labels)]
        fill_layers(self.labels, labels, default=0, empty=_WHOLE)
        if labels and self.labels.currentData() is None and self.labels.currentIndex() == 0:
            self.labels.setCurrentIndex(1)

    def refresh_checkpoints(self, *_: Any) -> None:
        """Re-read the age method's checkpoints; the widget is idle without method or checkpoint."""
        key = self.method.currentData()
        infos = list_checkpoints(method=key) if key else []
        fill_combo(self.checkpoint, [(_choices.checkpoint_label(i), i) for i in infos],
                   empty="(none)")
        self._checkpoint_changed()

    def _checkpoint_changed(self, *_: Any) -> None:
        info = self.checkpoint.currentData()
        if not self.methods:
            self.notice.setText(UNAVAILABLE)
        elif info is None:
            self.notice.setText(f"No {self.method.currentData()} checkpoint yet: train one in the "
                                "Train widget.")
        else:
            self.notice.setText(f"Synthesizes {info.target} from {info.source} at each age.")
        bounds = _choices.age_range(info) or DEFAULT_AGE_RANGE
        if bounds != self._age_range:  # a new range: start from its ends again
            self._age_range = bounds
            lo, hi = int(np.ceil(bounds[0])), int(np.floor(bounds[1]))
            for box in (self.first, self.last):
                box.setRange(lo, hi)
            self.first.setValue(lo)
            self.last.setValue(hi)
        running = self.worker is not None and self.worker.is_running
        self.button.setEnabled(info is not None and not running)

    def explore(self) -> GeneratorWorker | None:
        """Start the age series; the worker, or None after an error notification."""
        layer, info = self.input.currentData(), self.checkpoint.currentData()
        if not self.methods or info is None:
            show_error(UNAVAILABLE if not self.methods else "no checkpoint for the age method: train one first")
            return None
        if layer is None:
            show_error("the Age explorer needs an MRI image layer: open one or load the phantom sample")
            return None
        labels_layer = self.labels.currentData()
        try:
            volume = layer_to_volume(layer)
            ages = age_grid(self.first.value(), self.last.value(), self.step.value())
        except UserError as exc:
            show_error(str(exc))
            return None
        labels = None if labels_layer is None else np.asarray(labels_layer.data)
        names = {} if labels_layer is None else region_names(labels_layer)
        method, device, source = self.method.currentData(), self.device.currentData(), layer_modality(layer)

        def job(report: Callable[[Any], None]) -> AgeSeries:
            return synthesize_ages(volume, method, info, ages, source=source, device=device,
                                   labels=labels, names=names, report=report, translate_fn=translate)

        name = f"{layer.name} -> {info.target} by age ({method})"
        self.button.setEnabled(False)
        self.progress.setValue(0)
        self.worker = self.handle.start(
            job, interrupt=True, yielded=self._show_progress, finished=self._finished,
            returned=lambda result: self._show(result, name))
        return self.worker

    def _show_progress(self, reports: list[tuple[float, str]]) -> None:
        self.progress.setValue(round(100 * reports[-1][0]))

    def _show(self, result: AgeSeries | Failed | Stopped, name: str) -> None:
        if isinstance(result, Failed):
            show_error(result.message)
            return
        if isinstance(result, Stopped):
            return
        self.series = result
        step = float(result.ages[1] - result.ages[0]) if len(result.ages) > 1 else 1.0
        _, kwargs, _ = volume_to_layer_data(Volume(result.stack[0], result.affine, result.modality),
                                            name=name, as_labels=False)
        kwargs.update(display_settings(result.stack, result.modality))
        kwargs["affine"] = age_affine(result.affine, float(result.ages[0]), step)
        kwargs["axis_labels"] = ("age", *AXIS_LABELS)
        kwargs["units"] = ("year", *UNITS)
        kwargs["metadata"].update(provenance=result.provenance, ages=[float(a) for a in result.ages])
        self.layer = self.viewer.add_image(result.stack, **kwargs)
        self.plot.plot(result.ages, result.region_means,
                       title=f"mean synthesized {result.modality} per region")
        self.show_age()

    def show_age(self, event: Any = None) -> None:
        """Say which age the viewer's slider shows (napari's slider itself counts steps)."""
        layer = self.layer
        if layer is None or layer not in self.viewer.layers:
            self.age_shown.setText("")
            return
        age = self.viewer.dims.point[self.viewer.dims.ndim - layer.ndim]  # world axis = years
        self.age_shown.setText(f"showing age {age:g} years ('age' slider below the canvas)")

    def _finished(self) -> None:
        self.button.setEnabled(self.checkpoint.currentData() is not None)
        self.progress.setValue(100 if self.series is not None else 0)
