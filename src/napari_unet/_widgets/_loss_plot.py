"""The Fine-tune widget's live loss plot: a few hundred points painted with QPainter.

Measured with benchmarks/bench_gui_finetune.py: a matplotlib canvas took 80-100 ms of GUI
thread per redraw while training; this widget paints in about 1 ms.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QWidget


class LossPlot(QWidget):
    """Training loss per step (line) and held-out loss (dots), painted with QPainter.

    Not matplotlib: on this 2-core machine an Agg redraw of even a small figure took 80-100 ms
    on the GUI thread (text layout of ticks and legend), which alone broke the 50 ms budget
    (benchmarks/bench_gui_finetune.py). Painting a polyline and four labels takes ~1 ms.
    ``add`` only stores points; ``redraw`` (called by the widget's throttle timer) schedules
    a repaint when something changed."""

    MAX_POINTS = 400  # a longer curve is averaged down before drawing (the shape is what matters)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(110)
        self.setMaximumHeight(150)
        self.setToolTip("loss per training step (line) and on the held-out part (dots)")
        self.clear()

    def clear(self) -> None:
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.held: list[tuple[int, float]] = []
        self.dirty = True
        self.draws = 0

    def add(self, step: int, loss: float, heldout: float | None = None) -> None:
        self.steps.append(step)
        self.losses.append(loss)
        if heldout is not None:
            self.held.append((step, heldout))
        self.dirty = True

    def add_heldout(self, step: int, loss: float) -> None:
        self.held.append((step, loss))
        self.dirty = True

    def redraw(self) -> None:
        if self.dirty:
            self.dirty = False
            self.update()

    def _curve(self) -> tuple[np.ndarray, np.ndarray]:
        x, y = np.asarray(self.steps, float), np.asarray(self.losses, float)
        if len(x) > self.MAX_POINTS:
            k = int(np.ceil(len(x) / self.MAX_POINTS))
            n = len(x) // k * k
            x, y = x[:n].reshape(-1, k).mean(1), y[:n].reshape(-1, k).mean(1)
        return x, y

    def paintEvent(self, event: Any) -> None:

        self.draws += 1
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        fg, grid = QColor("#d1d2d4"), QColor("#5a626c")
        w, h = self.width(), self.height()
        left, right, top, bottom = 44.0, 8.0, 8.0, 18.0
        box = QRectF(left, top, max(1.0, w - left - right), max(1.0, h - top - bottom))
        painter.setPen(QPen(grid, 1))
        painter.drawRect(box)
        x, y = self._curve()
        hx = np.asarray([p[0] for p in self.held], float)
        hy = np.asarray([p[1] for p in self.held], float)
        painter.setPen(fg)
        font = painter.font()
        font.setPointSizeF(7.5)
        painter.setFont(font)
        if not len(x) and not len(hx):
            painter.drawText(box, int(Qt.AlignmentFlag.AlignCenter), "loss curve appears here")
            painter.end()
            return
        xs = np.concatenate([x, hx, [0.0]])
        ys = np.concatenate([y, hy])
        x0, x1 = 0.0, max(float(xs.max()), 1.0)
        y0, y1 = float(ys.min()), float(ys.max())
        pad = max((y1 - y0) * 0.08, 1e-3)
        y0, y1 = max(0.0, y0 - pad), y1 + pad

        def to_px(px: float, py: float) -> QPointF:
            return QPointF(
                box.left() + (px - x0) / (x1 - x0) * box.width(),
                box.bottom() - (py - y0) / (y1 - y0) * box.height(),
            )

        for value, flag in ((y1, Qt.AlignmentFlag.AlignTop), (y0, Qt.AlignmentFlag.AlignBottom)):
            painter.drawText(
                QRectF(0, top, left - 4, box.height()),
                int(flag | Qt.AlignmentFlag.AlignRight),
                f"{value:.3g}",
            )
        painter.drawText(
            QRectF(box.left(), box.bottom() + 2, box.width(), bottom - 2),
            int(Qt.AlignmentFlag.AlignRight),
            f"step {int(x1)}",
        )
        painter.drawText(
            QRectF(box.left(), box.bottom() + 2, box.width(), bottom - 2),
            int(Qt.AlignmentFlag.AlignLeft),
            "0",
        )
        if len(x):
            path = QPainterPath(to_px(x[0], y[0]))
            for px, py in zip(x[1:], y[1:], strict=True):
                path.lineTo(to_px(px, py))
            painter.setPen(QPen(QColor("#7fb4e8"), 1.2))
            painter.drawPath(path)
        painter.setPen(QPen(QColor("#f2a65a"), 1))
        painter.setBrush(QColor("#f2a65a"))
        for px, py in zip(hx, hy, strict=True):
            painter.drawEllipse(to_px(px, py), 3.0, 3.0)
        painter.end()
