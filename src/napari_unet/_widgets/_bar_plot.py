"""Measure's small plot: a histogram of object sizes, or objects per frame, painted with QPainter.

QPainter like the Fine-tune loss plot (:mod:`._loss_plot`) and for its reason: a matplotlib
canvas costs 80-100 ms of GUI thread per redraw on a 2-core machine and is not a dependency.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QWidget


class BarPlot(QWidget):
    """Bars of ``heights`` with the highest count, the first and last bar's texts and a caption."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(90)
        self.setMaximumHeight(120)
        self.heights = np.zeros(0)
        self.left = self.right = ""
        self.caption = "Measure: objects' sizes (or objects per frame) appear here"

    def set_bars(self, heights: np.ndarray, left: str, right: str, caption: str) -> None:
        """Show new bars (one repaint)."""
        self.heights = np.asarray(heights, float)
        self.left, self.right, self.caption = left, right, caption
        self.setToolTip(caption)
        self.update()

    def clear(self, caption: str) -> None:
        self.set_bars(np.zeros(0), "", "", caption)

    def paintEvent(self, event: Any) -> None:
        painter = QPainter(self)
        fg, grid, bar = QColor("#d1d2d4"), QColor("#5a626c"), QColor("#7fb4e8")
        font = painter.font()
        font.setPointSizeF(7.5)
        painter.setFont(font)
        left, right, top, bottom = 36.0, 8.0, 14.0, 16.0
        box = QRectF(left, top, max(1.0, self.width() - left - right), max(1.0, self.height() - top - bottom))
        painter.setPen(QPen(grid, 1))
        painter.drawRect(box)
        painter.setPen(fg)
        painter.drawText(QRectF(left, 0, box.width(), top), int(Qt.AlignmentFlag.AlignCenter), self.caption)
        top_count = float(self.heights.max()) if self.heights.size else 0.0
        if top_count > 0:
            painter.drawText(
                QRectF(0, top, left - 4, 12),
                int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop),
                f"{top_count:.0f}",
            )
            width = box.width() / self.heights.size
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(bar)
            for i, h in enumerate(self.heights):
                height = h / top_count * box.height()
                painter.drawRect(
                    QRectF(box.left() + i * width + 0.5, box.bottom() - height, max(1.0, width - 1), height)
                )
            painter.setPen(fg)
        under = QRectF(box.left(), box.bottom() + 2, box.width(), bottom - 2)
        painter.drawText(under, int(Qt.AlignmentFlag.AlignLeft), self.left)
        painter.drawText(under, int(Qt.AlignmentFlag.AlignRight), self.right)
        painter.end()
