"""A dock widget's body that scrolls vertically, so the four docks fit one screen together.

napari stacks docked widgets in one column and the window cannot be shorter than the sum
of their minimum heights: unscrolled, Translate, Compare, Age explorer and Train need
about 2,000 px. Each widget therefore puts its controls in a ``ScrollingBody``, whose
minimum height is a few rows (``MIN_VISIBLE_PX``) while its preferred size is its whole
content: docked alone it shows everything, docked with others it scrolls.
napari's ``add_dock_widget(tabify=True)`` would be the other way out, but a plugin's
widgets are docked by napari's menu, which does not tabify them.
"""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject, QSize, Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

# The least a docked widget shows of itself before it scrolls (px): its first rows.
MIN_VISIBLE_PX = 150


class ScrollingBody(QScrollArea):
    """A frameless, vertically scrolling area holding one widget's controls (``content``)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.content = QWidget()
        self.setWidget(self.content)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.content.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        # The content's layout changed (a longer layer name, a row shown): the dock around
        # must re-read our hints, which Qt caches and, through the viewport, never refreshes.
        if watched is self.content and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(watched, event)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        # As wide as the content needs (no horizontal scrolling), a few rows tall.
        content = self.content.minimumSizeHint()
        bar = self.verticalScrollBar().sizeHint().width()
        return QSize(content.width() + bar, min(content.height(), MIN_VISIBLE_PX))

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        # QScrollArea caps its hint at 24 text lines; a dock alone should show everything.
        content = self.content.sizeHint()
        return QSize(content.width() + self.verticalScrollBar().sizeHint().width(), content.height())


def scrolling_layout(widget: QWidget) -> QVBoxLayout:
    """Give ``widget`` a ``ScrollingBody`` filling it; the layout of the body's content.

    Use it where the widget would have made ``QVBoxLayout(widget)``.
    """
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    body = ScrollingBody()
    outer.addWidget(body)
    return QVBoxLayout(body.content)
