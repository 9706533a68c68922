"""A line plot for dock widgets: matplotlib's Qt canvas, or a table of values without matplotlib.

matplotlib comes with the ``dev`` extra, not with the plugin's own dependencies; without
it the same numbers are shown in a ``QTableWidget`` (one row per x, one column per line).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from qtpy.QtWidgets import QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

try:
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure
except ImportError:  # pragma: no cover - exercised only without matplotlib
    FigureCanvasQTAgg = None
    Figure = None

HAS_MATPLOTLIB = FigureCanvasQTAgg is not None
# napari's dark theme: the plot sits on the dock's own background.
BACKGROUND = "#262930"
MAX_INSIDE_LEGEND = 5
FOREGROUND = "#f0f1f2"


class LinePlot(QWidget):
    """One or more lines y(x) sharing the x axis.

    Attributes:
        x: the last x values drawn, shape (N,).
        series: the last lines drawn, name -> y values shape (N,).
        canvas: the matplotlib canvas (None without matplotlib); ``table`` otherwise.
    """

    def __init__(self, xlabel: str, ylabel: str, *, log_y: bool = False, markers: bool = False,
                 height: float = 2.8, parent: QWidget | None = None) -> None:
        """``height`` in inches at 100 dpi (the canvas's minimum height is 80 px less)."""
        super().__init__(parent)
        self.xlabel, self.ylabel, self.log_y, self.markers = xlabel, ylabel, log_y, markers
        self.x = np.zeros(0)
        self.series: dict[str, np.ndarray] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.canvas = None
        self.table: QTableWidget | None = None
        if HAS_MATPLOTLIB:
            # Fixed margins, not a layout engine: "constrained" doubles the cost of every
            # draw, and the Train widget redraws while a run competes for the CPU.
            figure = Figure(figsize=(4.0, height), facecolor=BACKGROUND)
            figure.subplots_adjust(left=0.17, right=0.97, bottom=0.6 / height, top=1 - 0.28 / height)
            self.canvas = FigureCanvasQTAgg(figure)
            self.canvas.setMinimumHeight(round(100 * height) - 80)
            self.axes = figure.add_subplot(1, 1, 1)
            self._lines: dict[str, Any] = {}
            self._style()
            layout.addWidget(self.canvas)
        else:
            self.table = QTableWidget()
            self.table.setMinimumHeight(160)
            layout.addWidget(self.table)

    def plot(self, x: Sequence[float] | np.ndarray, series: Mapping[str, Sequence[float] | np.ndarray],
             title: str = "") -> None:
        """Draw ``series`` (name -> y, each as long as ``x``) against ``x``, replacing what was shown."""
        self.x = np.asarray(x, dtype=float)
        self.series = {name: np.asarray(y, dtype=float) for name, y in series.items()}
        if self.canvas is None:
            self._fill_table()
            return
        if list(self._lines) == list(self.series) and self.series:
            # The same lines with new points (a live plot): move them, keep the rest.
            for name, y in self.series.items():
                self._lines[name].set_data(self.x, y)
            self._set_scale()
            self.axes.relim()
            self.axes.autoscale_view()
            self.canvas.draw_idle()
            return
        self.axes.clear()
        self._style()
        self._lines = {}
        for name, y in self.series.items():
            (self._lines[name],) = self.axes.plot(self.x, y, label=name, linewidth=1.3,
                                                  marker="o" if self.markers else "", markersize=3)
        if title:
            self.axes.set_title(title, color=FOREGROUND, fontsize=9)
        many = len(self.series) > MAX_INSIDE_LEGEND
        # Many lines (e.g. one per brain region): the legend goes right of the axes.
        self.axes.figure.subplots_adjust(right=0.66 if many else 0.97)
        if self.series:
            legend = self.axes.legend(
                fontsize=7 if not many else 6, facecolor=BACKGROUND, edgecolor="#555",
                labelcolor=FOREGROUND, **({"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)} if many else {}),
            )
            legend.set_draggable(True)
        self.canvas.draw_idle()

    def clear(self) -> None:
        self.plot([], {})

    def _style(self) -> None:
        axes = self.axes
        axes.set_facecolor(BACKGROUND)
        axes.set_xlabel(self.xlabel, color=FOREGROUND, fontsize=8)
        axes.set_ylabel(self.ylabel, color=FOREGROUND, fontsize=8)
        axes.tick_params(colors=FOREGROUND, labelsize=7)
        for spine in axes.spines.values():
            spine.set_color("#888")
        self._set_scale()

    def _set_scale(self) -> None:
        # Log only when every value is positive (a loss can reach 0; a log axis would hide it).
        positive = all(bool(np.all(y > 0)) for y in self.series.values() if y.size)
        scale = "log" if self.log_y and positive else "linear"
        if self.axes.get_yscale() != scale:
            self.axes.set_yscale(scale)

    def _fill_table(self) -> None:
        assert self.table is not None
        names = list(self.series)
        self.table.clear()
        self.table.setColumnCount(1 + len(names))
        self.table.setRowCount(len(self.x))
        self.table.setHorizontalHeaderLabels([self.xlabel, *names])
        for row, x in enumerate(self.x):
            self.table.setItem(row, 0, QTableWidgetItem(f"{x:g}"))
            for column, name in enumerate(names, start=1):
                self.table.setItem(row, column, QTableWidgetItem(f"{self.series[name][row]:.4g}"))
