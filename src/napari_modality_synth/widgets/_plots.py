"""A line plot for dock widgets: matplotlib's Qt canvas, or a table of values without matplotlib.

matplotlib comes with the ``dev`` extra, not with the plugin's own dependencies; without
it the same numbers are shown in a ``QTableWidget`` (one row per x, one column per line).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
FOREGROUND = "#f0f1f2"


class LinePlot(QWidget):
    """One or more lines y(x) sharing the x axis.

    Attributes:
        x: the last x values drawn, shape (N,).
        series: the last lines drawn, name -> y values shape (N,).
        canvas: the matplotlib canvas (None without matplotlib); ``table`` otherwise.
    """

    def __init__(self, xlabel: str, ylabel: str, *, log_y: bool = False,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.xlabel, self.ylabel, self.log_y = xlabel, ylabel, log_y
        self.x = np.zeros(0)
        self.series: dict[str, np.ndarray] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.canvas = None
        self.table: QTableWidget | None = None
        if HAS_MATPLOTLIB:
            figure = Figure(figsize=(4.0, 2.8), facecolor=BACKGROUND, layout="constrained")
            self.canvas = FigureCanvasQTAgg(figure)
            self.canvas.setMinimumHeight(220)
            self.axes = figure.add_subplot(1, 1, 1)
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
        self.axes.clear()
        self._style()
        for name, y in self.series.items():
            self.axes.plot(self.x, y, label=name, linewidth=1.3, marker="o" if len(self.x) < 30 else None,
                           markersize=3)
        if title:
            self.axes.set_title(title, color=FOREGROUND, fontsize=9)
        if self.series:
            legend = self.axes.legend(fontsize=7, ncol=2 if len(self.series) > 4 else 1,
                                      facecolor=BACKGROUND, edgecolor="#555", labelcolor=FOREGROUND)
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
        positive = all(bool(np.all(y > 0)) for y in self.series.values() if y.size)
        axes.set_yscale("log" if self.log_y and positive else "linear")

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
