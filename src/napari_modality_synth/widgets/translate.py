"""Translate widget: synthesize a target modality from an image layer with a trained method.

Choices narrow from left to right: the method (``synth_core.list_methods()``), the
source modality (what its checkpoints accept, by default the input layer's own), the
target (what they reach from that source), the checkpoint (those that fit, user ones
newest first, then bundled). For an any-to-any method (unified) the targets end with
"all missing contrasts": every other modality the checkpoint maps the source to, each added
as its own layer aligned with the input (the study completed from one scan). The method's capabilities decide which further controls
show (``_controls.ConditionControls``). Translate runs ``synth_core.translate`` in a
worker thread; the result is added as ``<input> -> <target> (<method>)`` on the input's
own grid (same affine) with its provenance (``"Synthetic": true``) in the layer's
metadata, and with several samples their standard deviation as a second layer.

The checkpoint list is read again whenever a training run registers one
(``workers.checkpoints_changed``) and whenever its list is opened. Closing the widget
(or the viewer, or quitting) stops a running translation at its next progress report and
waits for it briefly (``workers.stop_on_close``).
"""

from __future__ import annotations

from typing import Any

from napari.layers import Image
from napari.qt.threading import GeneratorWorker
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFormLayout, QLabel, QProgressBar, QPushButton, QWidget

from napari_modality_synth.layers import layer_modality, layer_to_volume, volume_to_layer_data
from napari_modality_synth.widgets import _choices
from napari_modality_synth.widgets._controls import (
    ConditionControls,
    RefreshingComboBox,
    disconnect_on_destroy,
    fill_combo,
    make_device_combo,
)
from napari_modality_synth.widgets._pairs import layer_subject
from napari_modality_synth.widgets._scroll import scrolling_layout
from napari_modality_synth.widgets.compare import fill_layer_combo as fill_layers
from napari_modality_synth.workers import (
    Failed,
    RunHandle,
    Stopped,
    checkpoints_changed,
    stop_on_close,
)
from synth_core import UserError, list_checkpoints, list_methods, translate

STD_COLORMAP = "magma"
_NO_CHECKPOINT = "(none: train one in the Train widget)"


def result_name(input_name: str, target: str, method: str) -> str:
    """The synthesized layer's name: ``<input> -> <target> (<method>)``."""
    return f"{input_name} -> {target} ({method})"


class TranslateWidget(QWidget):
    """Dock widget: input layer, method, modalities, checkpoint, method options, Translate.

    Attributes:
        methods: ``list_methods()`` as read when the widget opened.
        checkpoints: the method's checkpoints as last read (``list_checkpoints(method)``).
        worker: the last translation's worker thread (None before the first).
        handle: the translation job (``workers.RunHandle``), stopped when the widget closes.
        added: the layers the last translation added (result, then std map if any).
    """

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.methods = list_methods()
        self.worker: GeneratorWorker | None = None
        self.handle = RunHandle()
        self.added: list[Any] = []
        self.checkpoints: list[Any] = []
        self._refreshing = False

        self.input = RefreshingComboBox()
        self.method = RefreshingComboBox()
        for key, entry in self.methods.items():
            self.method.addItem(key, key)
            self.method.setItemData(self.method.count() - 1, entry["title"], Qt.ItemDataRole.ToolTipRole)
        self.source = RefreshingComboBox()
        self.target = RefreshingComboBox()
        self.checkpoint = RefreshingComboBox()
        self.controls = ConditionControls()
        self.device = make_device_combo()
        self.button = QPushButton("Translate")
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Input layer", self.input)
        form.addRow("Method", self.method)
        form.addRow("From", self.source)
        form.addRow("To", self.target)
        form.addRow("Checkpoint", self.checkpoint)
        layout = scrolling_layout(self)
        layout.addLayout(form)
        layout.addWidget(self.controls)
        device_form = QFormLayout()
        device_form.addRow("Device", self.device)
        layout.addLayout(device_form)
        layout.addWidget(self.button)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch()

        self.input.currentIndexChanged.connect(self._input_changed)
        self.input.about_to_show.connect(self.refresh_layers)
        for combo in (self.method, self.source, self.target):
            combo.currentIndexChanged.connect(self._choice_changed)
        self.checkpoint.currentIndexChanged.connect(self._checkpoint_changed)
        self.checkpoint.about_to_show.connect(self.refresh_choices)
        self.controls.reverse_toggled.connect(self._swap_direction)
        self.button.clicked.connect(self.translate)

        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self.refresh_layers)
        events.inserted.connect(self._follow_name)
        for layer in self.viewer.layers:
            layer.events.name.connect(self.refresh_layers)
        checkpoints_changed.connect(self.refresh_choices)
        disconnect_on_destroy(self, checkpoints_changed, self.refresh_choices)
        stop_on_close(self, self.handle)
        self.refresh_layers()
        self.refresh_choices()

    # --- choices -------------------------------------------------------------------------
    def refresh_layers(self, event: Any = None) -> None:
        """Fill the input list with the viewer's image layers, keeping the current one."""
        images = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        before = self.input.currentData()
        fill_layers(self.input, images, default=0)
        if self.input.currentData() is not before:
            self._input_changed()

    def refresh_choices(self, *_: Any) -> None:
        """Re-read the method's checkpoints and narrow source, target and checkpoint to what fits."""
        self._refreshing = True
        try:
            self._refresh_choices()
        finally:
            self._refreshing = False
        self._checkpoint_changed()

    def _choice_changed(self, *_: Any) -> None:
        if not self._refreshing:
            self.refresh_choices()

    def _refresh_choices(self) -> None:
        key = self.method.currentData()
        caps = self.methods[key]["capabilities"] if key else {}
        self.checkpoints = list_checkpoints(method=key) if key else []
        layer = self.input.currentData()
        hint = layer_modality(layer) if layer is not None else None
        sources = _choices.source_options(self.checkpoints, caps)
        fill_combo(self.source, [(m, m) for m in sources], prefer=hint, empty="(no checkpoint)")
        source = self.source.currentData()
        targets = _choices.target_options(self.checkpoints, caps, source)
        items = [(m, m) for m in targets]
        if caps.get("any_to_any") and len(targets) > 1:
            items.append((_choices.all_missing_label(targets), _choices.ALL_MISSING))
        fill_combo(self.target, items, empty="(no checkpoint)")
        target = self.target.currentData()
        if target == _choices.ALL_MISSING:
            fits = [i for i in self.checkpoints
                    if len(_choices.study_targets(i, caps, source)) > 1]
        else:
            fits = _choices.fitting(self.checkpoints, caps, source, target)
        fill_combo(self.checkpoint, [(_choices.checkpoint_label(i), i) for i in fits],
                   empty=_NO_CHECKPOINT)

    def _input_changed(self, *_: Any) -> None:
        layer = self.input.currentData()
        modality = layer_modality(layer) if layer is not None else None
        if modality is not None and self.source.findData(modality) >= 0:
            self.source.setCurrentIndex(self.source.findData(modality))  # refreshes the rest

    def _checkpoint_changed(self, *_: Any) -> None:
        info = self.checkpoint.currentData()
        key = self.method.currentData()
        caps = dict(self.methods[key]["capabilities"]) if key else {}
        card_caps = (info.card.get("capabilities") or {}) if info is not None else {}
        if card_caps.get("default_steps"):
            # An ODE model's own default (Bi-DPM: the time points it was trained on).
            caps["default_steps"] = card_caps["default_steps"]
        if caps.get("steps") and card_caps.get("steps"):
            # ... and its own range (Bi-DPM runs exactly the step count it was trained for).
            caps["steps"] = card_caps["steps"]
        self.controls.configure(caps, _choices.age_range(info))
        source, target = self.source.currentData(), self.target.currentData()
        self.controls.set_reverse(info is not None and _choices.runs_reverse(info, source, target))
        self.button.setEnabled(info is not None and not self._running())
        if info is None and key:
            self.status.setText(f"No {key} checkpoint for this input yet: train one in the Train widget.")
        elif not self._running():
            self.status.setText("")

    def _swap_direction(self, checked: bool) -> None:
        source, target = self.source.currentData(), self.target.currentData()
        if source is None or target is None or self.source.findData(target) < 0:
            return
        self.source.setCurrentIndex(self.source.findData(target))
        if self.target.findData(source) >= 0:
            self.target.setCurrentIndex(self.target.findData(source))

    def _follow_name(self, event: Any) -> None:
        event.value.events.name.connect(self.refresh_layers)

    def _running(self) -> bool:
        return self.worker is not None and self.worker.is_running

    # --- translation ---------------------------------------------------------------------
    def translate(self) -> GeneratorWorker | None:
        """Start translating the chosen layer; the worker, or None after an error notification."""
        layer = self.input.currentData()
        info = self.checkpoint.currentData()
        method, source, target = (self.method.currentData(), self.source.currentData(),
                                  self.target.currentData())
        if layer is None:
            show_error("Translate needs an image layer: open a scan or load the phantom sample first")
            return None
        if info is None:
            show_error(f"no {method} checkpoint translates {source} -> {target}: train one in the "
                       "Train widget or pick another method")
            return None
        try:
            volume = layer_to_volume(layer)
        except UserError as exc:
            show_error(str(exc))
            return None
        looks_like = layer_modality(layer)
        if looks_like is not None and looks_like != source:
            show_warning(f"'{layer.name}' looks like {looks_like}; it is read as {source} (From), "
                         f"as the checkpoint expects")
        options = self.controls.values()
        device = self.device.currentData()
        caps = self.methods[method]["capabilities"]
        targets = (_choices.study_targets(info, caps, source) if target == _choices.ALL_MISSING
                   else [target])

        def job(report: Any) -> Any:
            # `translate` is looked up when the job runs (tests stand a fake in for it).
            results = []
            for k, each in enumerate(targets):
                def progress(f: float, m: str, k: int = k, each: str = each) -> None:
                    report(((k + f) / len(targets), f"{each}: {m}" if len(targets) > 1 else m))

                results.append(translate(volume, method, each, source=source,
                                         checkpoint=str(info.directory), device=device,
                                         progress=progress, **options))
            return results if target == _choices.ALL_MISSING else results[0]

        name = (result_name(layer.name, targets[0], method) if len(targets) == 1 else
                [result_name(layer.name, each, method) for each in targets])
        subject = layer_subject(layer)
        self.button.setEnabled(False)
        self.progress.setValue(0)
        self.status.setText("starting")
        self.worker = self.handle.start(
            job, interrupt=True, yielded=self._show_progress, finished=self._finished,
            returned=lambda result: self._add_result(result, name, subject))
        return self.worker

    def _show_progress(self, reports: list[tuple[float, str]]) -> None:
        fraction, message = reports[-1]
        self.progress.setValue(round(100 * fraction))
        self.status.setText(message)

    def _add_result(self, result: Any, name: str | list[str], subject: str | None = None) -> None:
        if isinstance(result, list):  # all missing contrasts: one layer per target
            added = []
            for each, each_name in zip(result, name, strict=True):
                self._add_result(each, each_name, subject)
                added += self.added
            self.added = added
            self.status.setText(f"added {len(added)} layers: {', '.join(name)}")
            return
        if isinstance(result, Failed):
            self.status.setText("failed")
            show_error(result.message)
            return
        if isinstance(result, Stopped):
            self.status.setText("stopped")
            return
        for text in result.warnings:
            show_warning(text)
        assert isinstance(name, str)
        data, kwargs, _ = volume_to_layer_data(result.volume, name=name, as_labels=False)
        kwargs["metadata"]["provenance"] = result.provenance
        if subject is not None:  # the input's subject: Compare pairs the result with its truth
            kwargs["metadata"]["subject_id"] = subject
        std_layer = None
        if result.std is not None:
            # Added first, so the synthesized mean lies on top of its spread.
            std, std_kwargs, _ = volume_to_layer_data(result.std, name=f"{name} std", as_labels=False)
            std_kwargs["metadata"]["provenance"] = result.std.metadata.get("provenance", result.provenance)
            std_kwargs["metadata"]["std_of"] = name
            low, high = float(std.min()), float(std.max())
            std_kwargs.update(colormap=STD_COLORMAP, contrast_limits=(low, high if high > low else low + 1))
            std_layer = self.viewer.add_image(std, **std_kwargs)
        self.added = [self.viewer.add_image(data, **kwargs)]
        if std_layer is not None:
            self.added.append(std_layer)
        self.status.setText(f"added '{name}'{prediction_text(result.provenance)}")

    def _finished(self) -> None:
        self.button.setEnabled(self.checkpoint.currentData() is not None)
        self.progress.setValue(100 if self.added else 0)


def prediction_text(provenance: dict[str, Any]) -> str:
    """What a model's own predictor (DUIIT's) estimated for the synthesized volume, as a
    status suffix: "; predicted age 71.3 years (an estimate)", or "" for other models."""
    prediction = provenance.get("Prediction") or {}
    if "age" in prediction:
        return f"; predicted age {float(prediction['age']):.1f} years (an estimate)"
    if "diagnosis" in prediction:
        return f"; predicted diagnosis {prediction['diagnosis']} (an estimate)"
    return ""
