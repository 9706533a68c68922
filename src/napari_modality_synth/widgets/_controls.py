"""Small Qt pieces the Translate, Age explorer and Train widgets share.

``ConditionControls`` holds the controls that depend on the method: an age slider
(methods conditioned on age, limited to the checkpoint card's ``age_range``), an ODE
step count (methods that integrate one, limited to their ``steps`` range), a reverse
checkbox (bidirectional methods), samples and temperature (stochastic methods). Each
row shows only when the capabilities call for it.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

# The engine refuses more samples than this (synth_core.inference.MAX_SAMPLES).
MAX_SAMPLES = 64
TEMPERATURE_RANGE = (0.0, 2.0)
# Below the temperature range: "use the method's default" (passes None).
_TEMPERATURE_DEFAULT = -0.05
# The engine's default range when a card gives none (years).
DEFAULT_AGE_RANGE = (0.0, 120.0)


class RefreshingComboBox(QComboBox):
    """A combo box that emits ``about_to_show`` just before its list opens (to re-query it)."""

    about_to_show = Signal()

    def showPopup(self) -> None:  # noqa: N802 - Qt's name
        self.about_to_show.emit()
        super().showPopup()


def fill_combo(combo: QComboBox, items: Sequence[tuple[str, Any]], prefer: Any = None,
               empty: str | None = None) -> None:
    """Replace ``combo``'s items (text, data) without emitting; keep the current data if it remains.

    ``prefer`` is chosen when the current data is gone; ``empty`` is shown (with data None)
    when there are no items. Emits ``currentIndexChanged`` once if the data changed.
    """
    before = combo.currentData()
    combo.blockSignals(True)
    combo.clear()
    for text, data in items:
        combo.addItem(text, data)
    if not items and empty is not None:
        combo.addItem(empty, None)
    datas = [data for _, data in items]
    for wanted in (before, prefer):
        if wanted is not None and any(_same(wanted, data) for data in datas):
            combo.setCurrentIndex(next(i for i, data in enumerate(datas) if _same(wanted, data)))
            break
    else:
        combo.setCurrentIndex(0 if combo.count() else -1)
    combo.blockSignals(False)
    if not _same(before, combo.currentData()):
        combo.currentIndexChanged.emit(combo.currentIndex())


def disconnect_on_destroy(widget: QWidget, signal: Any, slot: Callable[..., Any]) -> None:
    """Disconnect ``slot`` from a psygnal or napari ``signal`` when ``widget``'s Qt side is deleted.

    Both hold bound methods weakly, but a Python wrapper can outlive its deleted Qt
    widget (a worker still refers to it); a call then would raise RuntimeError.
    """
    # A weak reference: a strong one, held by the widget's own connection, would keep a
    # widget without a parent (and its viewer) alive.
    widget.destroyed.connect(functools.partial(_disconnect, signal, weakref.WeakMethod(slot)))


def _disconnect(signal: Any, slot: weakref.WeakMethod, *_: Any) -> None:
    method = slot()
    if method is None:
        return
    try:
        signal.disconnect(method, missing_ok=True)  # psygnal
    except TypeError:
        signal.disconnect(method)  # napari's EventEmitter


def device_choices() -> list[str]:
    """``auto``, ``cpu`` and, when torch sees a GPU, ``cuda``."""
    import torch

    return ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def make_device_combo() -> QComboBox:
    combo = QComboBox()
    for device in device_choices():
        combo.addItem(device, device)
    return combo


def labelled_row(label: str, field: QWidget, tip: str = "") -> QWidget:
    """One ``label: field`` row as a widget, so the row hides as a whole."""
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    text = QLabel(label)
    text.setMinimumWidth(90)
    layout.addWidget(text)
    layout.addWidget(field, 1)
    if tip:
        row.setToolTip(tip)
    return row


class ConditionControls(QWidget):
    """The method-dependent options of one translation; ``values()`` gives translate's kwargs.

    Attributes:
        rows: ``{"age", "steps", "reverse", "samples", "temperature"}`` -> row widget.
        reverse_toggled: emitted with the new state when the user flips the direction.
    """

    reverse_toggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.age = QSlider(Qt.Orientation.Horizontal)
        self.age_value = QLabel()
        self.age.valueChanged.connect(lambda years: self.age_value.setText(f"{years} years"))
        age_field = QWidget()
        age_layout = QHBoxLayout(age_field)
        age_layout.setContentsMargins(0, 0, 0, 0)
        age_layout.addWidget(self.age, 1)
        age_layout.addWidget(self.age_value)
        self.steps = QSpinBox()
        self.reverse = QCheckBox("target -> source of the checkpoint")
        self.reverse.toggled.connect(self.reverse_toggled)
        self.samples = QSpinBox()
        self.samples.setRange(1, MAX_SAMPLES)
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(_TEMPERATURE_DEFAULT, TEMPERATURE_RANGE[1])
        self.temperature.setSingleStep(0.05)
        self.temperature.setSpecialValueText("method default")
        self.temperature.setValue(_TEMPERATURE_DEFAULT)
        self.rows: dict[str, QWidget] = {
            "age": labelled_row("Age", age_field, "the age the synthesized scan should show (years)"),
            "steps": labelled_row("ODE steps", self.steps, "more steps: slower, closer to the exact flow"),
            "reverse": labelled_row("Direction", self.reverse),
            "samples": labelled_row("Samples", self.samples,
                                    "several samples: their mean, and their standard deviation as a layer"),
            "temperature": labelled_row("Temperature", self.temperature,
                                        "spread of the sampled latent (0: the mode)"),
        }
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for row in self.rows.values():
            layout.addWidget(row)
        self.configure({}, None)

    def configure(self, capabilities: Mapping[str, Any], age_range: tuple[float, float] | None) -> None:
        """Show the rows ``capabilities`` (``list_methods()[key]["capabilities"]``) call for.

        The age slider spans ``age_range`` (whole years inside it; the engine's 0-120
        when None) and keeps its value when still inside; the step count spans
        ``capabilities["steps"]`` and starts at ``default_steps``.
        """
        conditions = capabilities.get("conditions") or ()
        stochastic = bool(capabilities.get("stochastic"))
        steps = capabilities.get("steps")
        self.rows["age"].setHidden("age" not in conditions)
        self.rows["steps"].setHidden(steps is None)
        self.rows["reverse"].setHidden(not capabilities.get("bidirectional"))
        self.rows["samples"].setHidden(not stochastic)
        self.rows["temperature"].setHidden(not stochastic)
        lo, hi = age_range or DEFAULT_AGE_RANGE
        old = self.age.value()
        self.age.setRange(math.ceil(lo), math.floor(hi))
        inside = self.age.minimum() <= old <= self.age.maximum() and old != 0
        self.age.setValue(old if inside else round((self.age.minimum() + self.age.maximum()) / 2))
        self.age_value.setText(f"{self.age.value()} years")
        if steps is not None:
            self.steps.setRange(int(steps[0]), int(steps[1]))
            default = capabilities.get("default_steps")
            self.steps.setValue(int(default) if default is not None else int(steps[0]))

    def set_reverse(self, checked: bool) -> None:
        """Show the direction without emitting ``reverse_toggled``."""
        self.reverse.blockSignals(True)
        self.reverse.setChecked(checked)
        self.reverse.blockSignals(False)

    def values(self) -> dict[str, Any]:
        """``translate`` keyword arguments: age, steps, samples, temperature, reverse (None/defaults when hidden)."""
        def shown(name: str) -> bool:
            return not self.rows[name].isHidden()

        temperature = self.temperature.value()
        return {
            "age": float(self.age.value()) if shown("age") else None,
            "steps": self.steps.value() if shown("steps") else None,
            "samples": self.samples.value() if shown("samples") else 1,
            "temperature": (
                None if not shown("temperature") or temperature < TEMPERATURE_RANGE[0] else temperature
            ),
            "reverse": self.reverse.isChecked() if shown("reverse") else False,
        }


def _same(a: Any, b: Any) -> bool:
    # Layers match only themselves (two layers may share a name); strings and checkpoint
    # infos (re-read from disk on every refresh) match by value. None never matches.
    if a is None or b is None:
        return False
    if a is b:
        return True
    if hasattr(a, "data") or hasattr(b, "data"):
        return False
    return bool(a == b)


def with_buttons(edit: QWidget, *buttons: tuple[str, Callable[[], None]]) -> QWidget:
    """``edit`` with push buttons (text, slot) on its right, as one row widget."""
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(edit, 1)
    for text, slot in buttons:
        button = QPushButton(text)
        button.clicked.connect(slot)
        layout.addWidget(button)
    return row
