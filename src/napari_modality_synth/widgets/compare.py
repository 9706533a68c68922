"""Compare widget: the difference map of two image layers and MAE, PSNR, SSIM, correlation.

The first layer is the one judged (e.g. a synthesized PET), the second the reference
(the true PET). Compare adds a signed difference layer (first - second; a diverging
colormap with limits (-m, m), m the 99th percentile of |difference|, so zero is the
colormap's centre) and an absolute difference layer, both on the first layer's grid, and
shows ``synth_core.evaluate``'s numbers: inside the mask when one is chosen, PSNR and
SSIM with the reference's data range there (as ``modality-synth evaluate`` does).
The numbers are computed in a worker thread; the window stays responsive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import FunctionWorker, thread_worker
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QComboBox, QFormLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_modality_synth.layers import layer_to_volume, volume_to_layer_data
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
    the last worker thread.
    """

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.metrics: dict[str, float] | None = None
        self.worker: FunctionWorker | None = None
        self.first = QComboBox()
        self.second = QComboBox()
        self.mask = QComboBox()
        self.button = QPushButton("Compare")
        self.button.clicked.connect(self.compare)
        self.values = {key: QLabel("-") for key in METRIC_LABELS}

        choices = QFormLayout()
        choices.addRow("Image (e.g. synthesized)", self.first)
        choices.addRow("Reference (e.g. true)", self.second)
        choices.addRow("Mask (voxels > 0)", self.mask)
        results = QFormLayout()
        for key, label in self.values.items():
            results.addRow(METRIC_LABELS[key], label)
        layout = QVBoxLayout(self)
        layout.addLayout(choices)
        layout.addWidget(self.button)
        layout.addLayout(results)
        layout.addStretch()

        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self.refresh_choices)
        events.inserted.connect(self._follow_name)
        for layer in self.viewer.layers:
            layer.events.name.connect(self.refresh_choices)
        self.refresh_choices()

    def refresh_choices(self, event: Any = None) -> None:
        """Fill the layer lists from the viewer, keeping each current choice if it remains."""
        images = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        masks = [layer for layer in self.viewer.layers if isinstance(layer, Image | Labels)]
        fill_layer_combo(self.first, images, default=0)
        fill_layer_combo(self.second, images, default=1)
        if len(images) > 1 and self.second.currentData() is self.first.currentData():
            self.second.setCurrentIndex(1 if self.first.currentIndex() == 0 else 0)
        fill_layer_combo(self.mask, masks, default=None, empty=_NO_MASK)

    def compare(self) -> FunctionWorker | None:
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
        worker = thread_worker(_compare_or_error)(pred, target, mask)
        worker.returned.connect(
            lambda result: self._show(result, first.name, second.name, pred.affine)
        )
        worker.finished.connect(lambda: self.button.setEnabled(True))
        self.button.setEnabled(False)
        self.worker = worker
        worker.start()
        return worker

    def _show(
        self, result: Comparison | str, first: str, second: str, affine: np.ndarray
    ) -> None:
        if isinstance(result, str):
            show_error(result)
            return
        self.metrics = result.metrics
        for key, label in self.values.items():
            label.setText(f"{result.metrics[key]:.4g}")
        m = result.limit
        # The signed map is added last: it is the one shown on top.
        self._put_layer(f"|difference|: {first} - {second}", np.abs(result.difference), affine,
                        ABSOLUTE_COLORMAP, (0.0, m))
        self._put_layer(f"difference: {first} - {second}", result.difference, affine,
                        DIFFERENCE_COLORMAP, (-m, m))

    def _put_layer(
        self, name: str, data: np.ndarray, affine: np.ndarray, colormap: str,
        limits: tuple[float, float],
    ) -> None:
        # A second Compare of the same pair updates its layers instead of stacking copies.
        data, kwargs, _ = volume_to_layer_data(Volume(data, affine), name=name, as_labels=False)
        kwargs.update(colormap=colormap, contrast_limits=limits)
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data, layer.affine, layer.metadata = data, kwargs["affine"], kwargs["metadata"]
            layer.colormap, layer.contrast_limits = colormap, limits
        else:
            self.viewer.add_image(data, **kwargs)

    def _follow_name(self, event: Any) -> None:
        event.value.events.name.connect(self.refresh_choices)


def _compare_or_error(pred: Volume, target: Volume, mask: np.ndarray | None) -> Comparison | str:
    # A UserError comes back as its message: raised (or returned: the worker re-raises
    # exceptions) in the thread, napari would show it with a traceback.
    try:
        return compare_volumes(pred, target, mask)
    except UserError as exc:
        return str(exc)


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
