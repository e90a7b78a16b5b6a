"""Fine-tune's run progress: a progress bar and the loss plot, redrawn on a timer.

Steps arrive many times a second; the GUI thread only stores them and redraws at most
4 times a second (the status, the bar and the plot), so training never makes it stutter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel, QProgressBar, QVBoxLayout, QWidget

from . import _finetune_plan as fp
from ._loss_plot import LossPlot

if TYPE_CHECKING:
    from napari_unet.training.finetune import FinetuneStep

REDRAW_MS = 250  # status, progress bar and loss plot: at most 4 redraws a second


class RunProgress(QWidget):
    """Progress bar (with the live figures in its text) and loss plot of one run at a time."""

    def __init__(self, status: QLabel, stopping: Callable[[], bool]) -> None:
        super().__init__()
        self._status = status  # the dock's status line (held-out loss goes there)
        self._stopping = stopping  # no progress is shown once Stop was asked
        self._latest: FinetuneStep | None = None
        self._steps: int | None = None
        self._budget: float | None = None
        self._device = ""
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setTextVisible(False)
        self.loss_plot = LossPlot()
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self.progress_bar)
        box.addWidget(self.loss_plot)
        self._tick = QTimer(self)
        self._tick.setInterval(REDRAW_MS)
        self._tick.timeout.connect(self._redraw)

    def begin(self, steps: int | None, budget: float, device: str) -> None:
        """A run starts: empty plot and bar, the limits the bar measures against."""
        self._latest = None
        self._steps, self._budget, self._device = steps, budget, device
        self.loss_plot.clear()
        self.loss_plot.redraw()
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(False)  # until the first step

    def start_timer(self) -> None:
        self._tick.start()

    def add(self, item: FinetuneStep) -> None:
        """Store a step (drawn at the next tick)."""
        self._latest = item
        self.loss_plot.add(item.step, item.loss, item.heldout.loss if item.heldout is not None else None)

    def add_final(self, card: dict[str, Any]) -> None:
        """The held-out losses before the first step and at the end (scored, not yielded)."""
        ft = card.get("finetune") or {}
        m = card.get("metrics") or {}
        if "heldout_loss_before" in m:
            self.loss_plot.add_heldout(0, m["heldout_loss_before"])
            self.loss_plot.add_heldout(int(ft.get("best_step", 0)), m["heldout_loss_after"])

    def _redraw(self) -> None:
        """The throttled part of progress: status line, progress bar, loss plot."""
        st = self._latest
        if st is not None and not self._stopping():
            frac = fp.progress_fraction(st.step, st.elapsed, self._steps, self._budget)
            self.progress_bar.setValue(int(1000 * frac))
            # the live figures go in the bar's own text: repainting it costs no re-layout, while a
            # word-wrapped label re-lays out its dock on every new text (7-17 ms, measured)
            self.progress_bar.setFormat(
                f"step {st.step} \u00b7 loss {st.loss:.3f} \u00b7 {st.steps_per_second:.1f} steps/s "
                f"\u00b7 {self._device}"
            )
            self.progress_bar.setTextVisible(True)
            if self.loss_plot.held:  # changes every few seconds only
                text = f"held-out loss {self.loss_plot.held[-1][1]:.3f} (best weights: step {st.best_step})"
                if text != self._status.text():
                    self._status.setText(text)
        self.loss_plot.redraw()

    def end(self, complete: bool) -> None:
        """The run ended: last redraw; a full bar when it produced a model."""
        self._tick.stop()
        self.loss_plot.redraw()
        if complete:
            self.progress_bar.setValue(1000)
