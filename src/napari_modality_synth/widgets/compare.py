"""Compare widget: the difference map of two image layers and MAE, PSNR, SSIM, correlation.

The first layer is the one judged (e.g. a synthesized PET), the second the reference
(the true PET). Compare adds a signed difference layer (first - second; a diverging
colormap with limits (-m, m), m the 99th percentile of |difference|, so zero is the
colormap's centre) and an absolute difference layer, both on the first layer's grid, and
shows ``synth_core.evaluate``'s numbers: inside the mask when one is chosen, PSNR and
SSIM with the reference's data range there (as ``modality-synth evaluate`` does).
The numbers are computed in a worker thread; the window stays responsive, and closing
the widget (or the viewer) waits briefly for them and drops them.

Until the user picks a layer, the pair follows the viewer's layers (``_pairs.default_pair``):
a synthesized layer against its true target (same modality, same subject) when there is
one, the newest first; a line under the lists says which pair was chosen and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import GeneratorWorker
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QComboBox, QFormLayout, QLabel, QPushButton, QWidget

from napari_modality_synth.layers import layer_to_volume, volume_to_layer_data
from napari_modality_synth.widgets._pairs import default_pair
from napari_modality_synth.widgets._scroll import scrolling_layout
from napari_modality_synth.workers import Failed, RunHandle, stop_on_close
from synth_core import UserError, Volume, evaluate

DIFFERENCE_COLORMAP = "PiYG"
ABSOLUTE_COLORMAP = "magma"
LIMIT_PERCENTILE = 99.0
METRIC_LABELS: dict[str, str] = {
    "mae": "MAE", "psnr": "PSNR (dB)", "ssim": "SSIM", "corrcoef": "Correlation r",
}
_NO_MASK = "(no mask)"


@dataclass
class Comparison:
    """What one Compare computes: ``evaluate``'s metrics and the signed difference (X, Y, Z)."""

    metrics: dict[str, float]
    difference: np.ndarray
    limit: float  # colormap half-width m, in the layers' units


def compare_volumes(pred: Volume, target: Volume, mask: np.ndarray | None) -> Comparison:
    """Metrics of ``pred`` against ``target`` and ``pred - target``; UserError for a mismatch.

    ``limit`` is the 99th percentile of |pred - target| (inside ``mask`` when given), or
    the maximum when that is 0, or 1 for identical volumes: a valid, symmetric range.
    """
    metrics = evaluate(pred, target, mask=mask)  # checks shapes and mask first
    difference = pred.data - target.data
    magnitude = np.abs(difference if mask is None else difference[mask])
    limit = float(np.percentile(magnitude, LIMIT_PERCENTILE))
    if not limit > 0:
        limit = float(magnitude.max()) or 1.0
    return Comparison(metrics, difference, limit)


class CompareWidget(QWidget):
    """Dock widget: choose two image layers and an optional mask, click Compare.

    ``metrics`` holds the last result (``{'mae', 'psnr', 'ssim', 'corrcoef'}``), ``worker``
    the last worker thread, ``pair_hint`` why the pair shown was chosen (blank once the
    user chose).
    """

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.metrics: dict[str, float] | None = None
        self.worker: GeneratorWorker | None = None
        self.handle = RunHandle()
        self._chosen = False  # the user picked a layer: keep the pair, do not follow defaults
        self._filling = False
        self.first = QComboBox()
        self.second = QComboBox()
        self.mask = QComboBox()
        self.pair_hint = QLabel("")
        self.pair_hint.setWordWrap(True)
        self.button = QPushButton("Compare")
        self.button.clicked.connect(self.compare)
        self.values = {key: QLabel("-") for key in METRIC_LABELS}
        self.units = QLabel("")  # what the numbers are in, as evaluate says
        self.units.setWordWrap(True)

        choices = QFormLayout()
        choices.addRow("Image (e.g. synthesized)", self.first)
        choices.addRow("Reference (e.g. true)", self.second)
        choices.addRow("Mask (voxels > 0)", self.mask)
        results = QFormLayout()
        for key, label in self.values.items():
            results.addRow(METRIC_LABELS[key], label)
        layout = scrolling_layout(self)
        layout.addLayout(choices)
        layout.addWidget(self.pair_hint)
        layout.addWidget(self.button)
        layout.addLayout(results)
        layout.addWidget(self.units)
        layout.addStretch()

        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self.refresh_choices)
        events.inserted.connect(self._follow_name)
        for layer in self.viewer.layers:
            layer.events.name.connect(self.refresh_choices)
        # An index change outside refresh_choices is someone's choice (user or script).
        for combo in (self.first, self.second):
            combo.currentIndexChanged.connect(self._pair_chosen)
        stop_on_close(self, self.handle)
        self.refresh_choices()

    def refresh_choices(self, event: Any = None) -> None:
        """Fill the layer lists from the viewer.

        The pair follows ``default_pair`` until the user picks a layer; then each current
        choice is kept while it remains (a removed one falls back to the default).
        """
        self._filling = True
        try:
            self._fill()
        finally:
            self._filling = False

    def _fill(self) -> None:
        images = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        masks = [layer for layer in self.viewer.layers if isinstance(layer, Image | Labels)]
        pair = default_pair([layer for layer in images if layer.ndim == 3])
        kept = self._chosen and all(any(layer is combo.currentData() for layer in images)
                                    for combo in (self.first, self.second))
        if not kept:
            self._chosen = False
            self.first.setCurrentIndex(-1)  # forget the old choice: the fill takes the default
            self.second.setCurrentIndex(-1)
        fill_layer_combo(self.first, images, default=_index(images, pair.first, 0))
        fill_layer_combo(self.second, images, default=_index(images, pair.second, 1))
        if len(images) > 1 and self.second.currentData() is self.first.currentData():
            self.second.setCurrentIndex(1 if self.first.currentIndex() == 0 else 0)
        fill_layer_combo(self.mask, masks, default=None, empty=_NO_MASK)
        self.pair_hint.setText("" if kept else pair.reason)

    def _pair_chosen(self, *_: Any) -> None:
        if self._filling:
            return
        self._chosen = True
        self.pair_hint.setText("")

    def compare(self) -> GeneratorWorker | None:
        """Start a comparison of the chosen layers; the worker, or None after an error notification."""
        first, second = self.first.currentData(), self.second.currentData()
        mask_layer = self.mask.currentData()
        if first is None or second is None:
            show_error("Compare needs two image layers: open or add a second image first")
            return None
        if first is second:
            show_error(
                f"'{first.name}' is chosen twice: choose two different image layers, "
                "e.g. a synthesized scan and the true one"
            )
            return None
        try:
            pred, target = layer_to_volume(first), layer_to_volume(second)
        except UserError as exc:
            show_error(str(exc))
            return None
        mask = None if mask_layer is None else np.asarray(mask_layer.data) > 0
        self.button.setEnabled(False)
        self.worker = self.handle.start(
            lambda report: compare_volumes(pred, target, mask), interrupt=False,
            returned=lambda result: self._show(result, first.name, second.name, pred.affine),
            finished=lambda: self.button.setEnabled(True))
        return self.worker

    def _show(
        self, result: Comparison | Failed, first: str, second: str, affine: np.ndarray
    ) -> None:
        if isinstance(result, Failed):
            show_error(result.message)
            return
        self.metrics = result.metrics
        for key, label in self.values.items():
            label.setText(f"{result.metrics[key]:.4g}")
        units = result.metrics.get("units")
        self.units.setText(f"units: {units}" if units else "")
        m = result.limit
        # The signed map is added last: it is the one shown on top.
        self._put_layer(f"|difference|: {first} - {second}", np.abs(result.difference), affine,
                        ABSOLUTE_COLORMAP, (0.0, m), (first, second))
        self._put_layer(f"difference: {first} - {second}", result.difference, affine,
                        DIFFERENCE_COLORMAP, (-m, m), (first, second))

    def _put_layer(
        self, name: str, data: np.ndarray, affine: np.ndarray, colormap: str,
        limits: tuple[float, float], pair: tuple[str, str],
    ) -> None:
        # A second Compare of the same pair updates its layers instead of stacking copies.
        data, kwargs, _ = volume_to_layer_data(Volume(data, affine), name=name, as_labels=False)
        kwargs.update(colormap=colormap, contrast_limits=limits)
        kwargs["metadata"]["difference_of"] = list(pair)  # never offered as a default pair
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data, layer.affine, layer.metadata = data, kwargs["affine"], kwargs["metadata"]
            layer.colormap, layer.contrast_limits = colormap, limits
        else:
            self.viewer.add_image(data, **kwargs)

    def _follow_name(self, event: Any) -> None:
        event.value.events.name.connect(self.refresh_choices)


def _index(layers: list[Any], layer: Any, fallback: int) -> int:
    return next((i for i, candidate in enumerate(layers) if candidate is layer), fallback)


def fill_layer_combo(combo: QComboBox, layers: list[Any], default: int | None, empty: str | None = None) -> None:
    current = combo.currentData()
    combo.blockSignals(True)
    combo.clear()
    if empty is not None:
        combo.addItem(empty, None)
    for layer in layers:
        combo.addItem(layer.name, layer)
    offset = 0 if empty is None else 1
    if current is not None and any(layer is current for layer in layers):
        index = offset + next(i for i, layer in enumerate(layers) if layer is current)
    elif default is not None and layers:
        index = offset + min(default, len(layers) - 1)
    else:
        index = 0
    combo.setCurrentIndex(index)
    combo.blockSignals(False)
