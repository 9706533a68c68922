"""PLACEHOLDER for the Train widget: replaced wholesale by its own module.

It exists so that the manifest's command resolves (`npe2 validate --imports`).
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget


class TrainWidget(QWidget):
    """PLACEHOLDER: a label saying the Train widget is not available yet."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Train: not available yet"))
