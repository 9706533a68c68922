"""Train widget: train a method on a folder or manifest of scans without blocking napari.

Start runs ``synth_core.training.train`` in a worker thread (``workers.relay``); its
progress events reach the main thread in batches and feed a progress bar with ETA, a
live loss plot (the last 300 steps, one line per loss, log scale) and the validation
metrics. Stop sets the run's ``StopRequest``: the run ends after the step in progress and
leaves a resumable ``last.ckpt``; Resume continues it (``resume=True``, same output
folder). A finished run's checkpoint is registered in the user zoo and announced on
``workers.checkpoints_changed``, so Translate lists it at once. Closing the widget (or
the viewer, or quitting the application) stops a running run and waits for it briefly.
A method that trains on labelled data (DUIIT) takes several source modalities at once: with
"labelled" pairing, one box per modality replaces From, and the run trains one translator per
ticked source into the target (``TrainRequest.source`` "t1,pet").
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
from pathlib import Path
from typing import Any

from napari.qt.threading import GeneratorWorker
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QWidget,
)

from napari_modality_synth.widgets._controls import make_device_combo, with_buttons
from napari_modality_synth.widgets._plots import LinePlot
from napari_modality_synth.widgets._run_log import RunLog
from napari_modality_synth.widgets._scroll import scrolling_layout
from napari_modality_synth.workers import Failed, RunHandle, checkpoints_changed, stop_on_close
from synth_core import UserError, list_methods
from synth_core.training import ProgressEvent, RunResult, StopRequest, TrainRequest, train
from synth_core.volume import ALL_MODALITIES

RESUMABLE = "last.ckpt"  # the run folder's Lightning checkpoint (for resume only)
# Redraw the loss plot at most this often (s): a draw costs the event loop tens of ms.
PLOT_INTERVAL_S = 1.0
DEFAULT_RUNS = Path.home() / "modality-synth-runs"
# Data pairing choices as the user reads them (the engine's key -> label).
MODE_LABELS = {"partial": "partially paired",
               "labelled": "labelled (unpaired, labels from participants.tsv)"}
# The sources ticked when a labelled (several-source) method is chosen: the paper's MRI and PET.
DEFAULT_SOURCES = ("t1", "pet")
SOURCE_COLUMNS = 3
# Form field -> (override key, type, what the user sees): blank means the preset's value.
SETTINGS: dict[str, tuple[str, type, str]] = {
    "steps": ("max_steps", int, "Steps"),
    "batch_size": ("batch_size", int, "Batch size"),
    "lr": ("lr", float, "Learning rate"),
    "val_every": ("val_every", int, "Validate every"),
    # Voxels a side at the data's own spacing (3D: a cube, 2D: a square of the slice);
    # shown only for methods that run in sliding windows, the way a patch-trained model runs.
    "patch_size": ("patch_size", int, "Patch size"),
}


class TrainWidget(QWidget):
    """Dock widget: data, method, modalities, preset, settings, device, output folder; Start, Stop, Resume.

    Attributes:
        log: the run's progress as its events told it (``_run_log.RunLog``).
        result: the last run's ``RunResult`` (None before, or after a failure).
        worker: the last run's worker; ``stop_seconds``: Stop click to the run's return.
    """

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.methods = list_methods()
        self.log = RunLog()
        self.result: RunResult | None = None
        self.worker: GeneratorWorker | None = None
        self.stop_seconds: float | None = None
        self._stop_clicked: float | None = None
        self._request: TrainRequest | None = None
        self._last_plot = 0.0
        self.handle = RunHandle(StopRequest)

        self.data = QLineEdit()
        self.data.setPlaceholderText("folder of subjects, or a manifest .tsv")
        self.method = QComboBox()
        for key in self.methods:
            self.method.addItem(key, key)
        self.source, self.target = QComboBox(), QComboBox()
        for combo, default in ((self.source, "t1"), (self.target, "pet")):
            for modality in ALL_MODALITIES:
                combo.addItem(modality, modality)
            combo.setCurrentIndex(combo.findData(default))
        # An any-to-any method (unified) learns every direction among these with one model;
        # the field replaces From and To for it.
        self.modalities = QLineEdit("t1,t1ce,t2,flair")
        self.modalities.setToolTip("comma-separated modalities the one model maps among, "
                                   "e.g. t1,t1ce,t2,flair; every subject needs all of them")
        # Labelled training (DUIIT) translates several source modalities into the target with
        # one model (the paper's MRI and PET to CT): one box per modality replaces From.
        self.sources = QWidget()
        grid = QGridLayout(self.sources)
        grid.setContentsMargins(0, 0, 0, 0)
        self.source_boxes: dict[str, QCheckBox] = {}
        for i, modality in enumerate(ALL_MODALITIES):
            box = QCheckBox(modality)
            box.setChecked(modality in DEFAULT_SOURCES)
            box.setToolTip("train a translator from this modality; the subjects with it are "
                           "other people than the target's")
            grid.addWidget(box, i // SOURCE_COLUMNS, i % SOURCE_COLUMNS)
            self.source_boxes[modality] = box
        self.preset = QComboBox()
        # How the two modalities go together in the data: the kinds the method trains on.
        self.mode = QComboBox()
        self.paired_fraction = QDoubleSpinBox()
        self.paired_fraction.setRange(0.01, 1.0)
        self.paired_fraction.setSingleStep(0.05)
        self.paired_fraction.setDecimals(2)
        self.paired_fraction.setValue(0.1)
        self.paired_fraction.setToolTip("share of the training subjects used as pairs; the others "
                                        "are split into unpaired source and target halves")
        self.settings = {name: QLineEdit() for name in SETTINGS}
        for edit in self.settings.values():
            edit.setPlaceholderText("preset's")
        self.settings["patch_size"].setPlaceholderText("preset's (blank: whole volumes)")
        self.settings["patch_size"].setToolTip(
            "train on random patches of this many voxels a side, centred in the brain, at the "
            "data's own spacing; the model then translates in sliding windows of that size")
        self.device = make_device_combo()
        self.out = QLineEdit()
        self.out.setPlaceholderText(f"new folder (blank: under {DEFAULT_RUNS})")
        self.start_button, self.stop_button = QPushButton("Start"), QPushButton("Stop")
        self.resume_button = QPushButton("Resume")
        self.progress = QProgressBar()
        self.status, self.metrics = QLabel("idle"), QLabel(self.log.metrics_text())
        self.status.setWordWrap(True)
        self.plot = LinePlot("step", "loss", log_y=True)

        form = QFormLayout()
        form.addRow("Data", with_buttons(self.data, ("Folder…", self._browse_data_folder),
                                          ("File…", self._browse_manifest)))
        form.addRow("Method", self.method)
        form.addRow("From", self.source)
        form.addRow("From (one or more)", self.sources)
        form.addRow("To", self.target)
        form.addRow("Modalities", self.modalities)
        form.addRow("Preset", self.preset)
        form.addRow("Data pairing", self.mode)
        form.addRow("Paired fraction", self.paired_fraction)
        self._form = form
        for name, (_, _, label) in SETTINGS.items():
            form.addRow(label, self.settings[name])
        form.addRow("Device", self.device)
        form.addRow("Output folder", with_buttons(self.out, ("Browse…", self._browse_out)))
        buttons = QHBoxLayout()
        for button in (self.start_button, self.stop_button, self.resume_button):
            buttons.addWidget(button)
        layout = scrolling_layout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        for widget in (self.progress, self.status, self.metrics):
            layout.addWidget(widget)
        layout.addWidget(self.plot, 1)

        self.method.currentIndexChanged.connect(self._fill_presets)
        self.mode.currentIndexChanged.connect(self._show_mode_fields)
        self.out.textChanged.connect(self._update_buttons)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.resume_button.clicked.connect(self.resume)
        self._fill_presets()
        self._update_buttons()
        # Closing the viewer deletes this widget; quitting may not: stop the run on either.
        stop_on_close(self, self.handle)

    # --- the form ------------------------------------------------------------------------
    def overrides(self) -> dict[str, Any]:
        """The settings typed in (``max_steps``, ``batch_size``, ``lr``, ``val_every``,
        ``patch_size`` where the method takes patches); UserError if not numbers."""
        values: dict[str, Any] = {}
        for name, (key, kind, label) in SETTINGS.items():
            text = self.settings[name].text().strip()
            if not text or self.settings[name].isHidden():
                continue
            try:
                value = kind(text)
            except ValueError:
                value = None
            if value is None or not value > 0:
                what = "a whole number" if kind is int else "a number"
                raise UserError(f"{label} '{text}' is not {what} above 0; type one or leave it blank "
                                "for the preset's")
            values[key] = value
        return values

    def request(self, resume: bool = False) -> TrainRequest:
        """The ``TrainRequest`` the form describes; a blank output folder gets a new dated one."""
        data = self.data.text().strip()
        if not data:
            raise UserError("choose the training data: a folder of subjects or a manifest file")
        modalities = self.chosen_modalities()
        source = "" if modalities else ",".join(self.chosen_sources())
        if not self.out.text().strip():
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            pair = ("any" if modalities
                    else f"{source.replace(',', '+')}-{self.target.currentData()}")
            self.out.setText(str(DEFAULT_RUNS / f"{self.method.currentData()}-{pair}-{stamp}"))
        return TrainRequest(
            method=self.method.currentData(), data=Path(data).expanduser(),
            source=source,
            target="" if modalities else self.target.currentData(), modalities=modalities,
            out=Path(self.out.text().strip()).expanduser(), preset=self.preset.currentData(),
            overrides=self.overrides(), resume=resume, accelerator=self.device.currentData(),
            mode=self.mode.currentData(), paired_fraction=self.paired_fraction.value(),
        )

    def any_to_any(self) -> bool:
        """Does the chosen method learn every direction among several modalities?"""
        caps = self.methods.get(self.method.currentData(), {}).get("capabilities", {})
        return bool(caps.get("any_to_any"))

    def several_sources(self) -> bool:
        """Does the form take several source modalities (labelled training, e.g. DUIIT)?"""
        return not self.any_to_any() and self.mode.currentData() == "labelled"

    def chosen_sources(self) -> tuple[str, ...]:
        """The source modalities: the ticked boxes for labelled training (UserError when none
        is ticked), else the one From choice."""
        if not self.several_sources():
            return (self.source.currentData(),)
        ticked = tuple(m for m, box in self.source_boxes.items() if box.isChecked())
        if not ticked:
            raise UserError("From: tick at least one source modality (e.g. t1 and pet) for "
                            "labelled training")
        return ticked

    def chosen_modalities(self) -> tuple[str, ...]:
        """The Modalities field as a tuple for an any-to-any method, else (); UserError
        when it names an unknown modality (the engine checks the rest)."""
        if not self.any_to_any():
            return ()
        mods = tuple(m.strip() for m in self.modalities.text().split(",") if m.strip())
        unknown = [m for m in mods if m not in ALL_MODALITIES]
        if unknown:
            raise UserError(f"Modalities: {', '.join(unknown)} unknown; choose from "
                            f"{', '.join(ALL_MODALITIES)}, e.g. t1,t1ce,t2,flair")
        return mods

    # --- runs ----------------------------------------------------------------------------
    def start(self) -> GeneratorWorker | None:
        """Start a new run; the worker, or None after an error notification."""
        try:
            request = self.request()
        except UserError as exc:
            show_error(str(exc))
            return None
        self.log = RunLog()
        return self._run(request)

    def resume(self) -> GeneratorWorker | None:
        """Continue the run in the output folder from its ``last.ckpt`` (new Steps, if typed, extend it)."""
        try:
            fresh = self.request(resume=True)
        except UserError as exc:
            show_error(str(exc))
            return None
        previous = self._request
        if previous is not None and previous.out == fresh.out:
            # The same run: keep its method and modalities even if the form changed since.
            fresh = dataclasses.replace(previous, resume=True, overrides=fresh.overrides)
        return self._run(fresh)

    def stop(self) -> None:
        """Ask the running run to stop after its current step."""
        if self.handle.finished.is_set():
            return
        self._stop_clicked = time.monotonic()
        self.handle.stop.set()
        self.stop_button.setEnabled(False)
        self.status.setText("stopping after the current step…")

    def _run(self, request: TrainRequest) -> GeneratorWorker:
        self._request, self.result, self.stop_seconds, self._stop_clicked = request, None, None, None
        handle = self.handle

        def job(report: Any) -> RunResult:
            # The run's own stop request (set by Stop, or by closing): it ends after the step
            # in progress and leaves a resumable last.ckpt, so reports are never cut short.
            return train(request, sink=report, stop=handle.stop)

        task = (f"among {', '.join(request.modalities)}" if request.modalities
                else f"{request.source.replace(',', ' + ')} -> {request.target}")
        self.status.setText(f"{'resuming' if request.resume else 'starting'} {request.method} "
                            f"{task} in {request.out}")
        self.worker = handle.start(job, interrupt=False, yielded=self._on_events,
                                   returned=self._on_result, finished=self._update_buttons)
        self._update_buttons()
        return self.worker

    def _on_events(self, events: list[ProgressEvent]) -> None:
        for event in events:
            self.log.add(event)
        self.progress.setMaximum(max(1, self.log.max_steps))
        self.progress.setValue(min(self.log.step, self.log.max_steps))
        if not self.handle.stop.is_set():
            self.status.setText(self.log.progress_text())
        self.metrics.setText(self.log.metrics_text())
        now = time.monotonic()
        if now - self._last_plot >= PLOT_INTERVAL_S:
            self._last_plot = now
            self._draw()

    def _on_result(self, result: RunResult | Failed) -> None:
        if self._stop_clicked is not None:
            self.stop_seconds = time.monotonic() - self._stop_clicked
        self._draw()
        if isinstance(result, Failed):
            self.status.setText("failed")
            show_error(result.message)
            return
        self.result = result
        if result.stopped:
            self.status.setText(f"stopped at step {result.steps}; Resume continues from "
                                f"{result.run_dir / RESUMABLE}")
        elif result.registered is not None:
            self.status.setText(f"finished {result.steps} steps; checkpoint "
                                f"'{result.registered.name}' is listed in Translate")
            checkpoints_changed.emit(result.registered.name)
        else:
            self.status.setText(f"finished {result.steps} steps in {result.run_dir}")

    def _draw(self) -> None:
        steps, series = self.log.loss_series()
        self.plot.plot(steps, series)

    def _update_buttons(self, *_: Any) -> None:
        running = not self.handle.finished.is_set()
        out = Path(self.out.text().strip()).expanduser() if self.out.text().strip() else None
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running and not self.handle.stop.is_set())
        self.resume_button.setEnabled(not running and out is not None and (out / RESUMABLE).is_file())

    def _fill_presets(self, *_: Any) -> None:
        presets = self.methods.get(self.method.currentData(), {}).get("presets", [])
        self.preset.clear()
        for preset in presets:
            self.preset.addItem(preset, preset)
        if "cpu" in presets:
            self.preset.setCurrentIndex(presets.index("cpu"))
        capabilities = self.methods.get(self.method.currentData(), {}).get("capabilities", {})
        many = bool(capabilities.get("any_to_any"))
        for field, hidden in ((self.source, many), (self.target, many), (self.modalities, not many)):
            field.setHidden(hidden)
            row_label = self._form.labelForField(field)
            if row_label is not None:
                row_label.setHidden(hidden)
        patches = bool(capabilities.get("sliding_window"))
        self.settings["patch_size"].setHidden(not patches)
        label = self._form.labelForField(self.settings["patch_size"])
        if label is not None:
            label.setHidden(not patches)
        kinds = capabilities.get("data", ())
        self.mode.clear()
        for kind in kinds:
            if kind in ("paired", "unpaired", "partial", "labelled"):
                self.mode.addItem(MODE_LABELS.get(kind, kind), kind)
        self._show_mode_fields()

    def _show_mode_fields(self, *_: Any) -> None:
        """Paired fraction for partially paired data; for labelled data the several-source
        boxes replace the one From choice (an any-to-any method shows neither)."""
        partial = self.mode.currentData() == "partial"
        several = self.several_sources()
        many = self.any_to_any()
        for field, visible in ((self.paired_fraction, partial),
                               (self.sources, several and not many),
                               (self.source, not several and not many)):
            field.setVisible(visible)
            label = self._form.labelForField(field)
            if label is not None:
                label.setVisible(visible)

    def _browse_data_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Training data folder")
        if folder:
            self.data.setText(folder)

    def _browse_manifest(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Training manifest", "", "Manifests (*.tsv)")
        if path:
            self.data.setText(path)

    def _browse_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output (run) folder")
        if folder:
            self.out.setText(folder)

