"""Measure, the last rows of the Segment dock: per-object numbers of a labels layer.

Measure takes the selected Labels layer (else the result of the image chosen above) and
that image, measures them in a worker (in memory, or block by block for a lazy layer) and
puts the table where napari shows it: the layer's ``features`` (napari's feature table and
the tooltip under the cursor), a small plot here, and Save CSV. Deciding and measuring are
in :mod:`._measure_job`; this part only wires buttons, the worker and the layer.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Labels
from napari.qt.threading import create_worker
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_unet.common.axes import AxesError
from napari_unet.engine.measure import one_channel, table_to_csv

from . import _dialogs, _notify, _plan
from . import _measure_job as mj
from ._bar_plot import BarPlot
from ._image_picker import ImagePicker
from ._labels_writer import LabelsWriter
from ._plan import one_line


class MeasurePanel(QWidget):
    """Measure and Save CSV buttons, the plot, and the table of the last measurement."""

    #: emitted on the main thread after a measurement ended (done or failed)
    measured = Signal()

    def __init__(self, viewer: Any, picker: ImagePicker, writer: LabelsWriter) -> None:
        super().__init__()
        self.viewer = viewer
        self._picker = picker
        self._writer = writer
        self.worker: Any = None
        self.result: mj.MeasureResult | None = None
        self._started = 0.0
        self._frame: int | None = None  # the time-lapse frame whose rows the layer's features hold
        self.measure_button = QPushButton("Measure")
        self.measure_button.setToolTip(
            "Per-object area, centroid, box, intensity and shape of the selected Labels layer "
            "(else the chosen image's result), in the layer's features and tooltips"
        )
        self.save_button = QPushButton("Save CSV...")
        self.save_button.setToolTip("Write the last measurement as a CSV table, one row per object")
        self.save_button.setEnabled(False)
        self.plot = BarPlot()
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.measure_button)
        buttons.addWidget(self.save_button)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.addLayout(buttons)
        column.addWidget(self.plot)
        column.addWidget(self.status_label)
        self.measure_button.clicked.connect(self.measure)
        self.save_button.clicked.connect(self.save_csv)
        viewer.dims.events.current_step.connect(self._on_step)

    # ------------------------------------------------------------------ inputs
    def labels_layer(self) -> Labels | None:
        """The selected Labels layer, else the result of the image chosen in the dock."""
        active = self.viewer.layers.selection.active
        if isinstance(active, Labels):
            return active
        image = self._picker.selected_image()
        return None if image is None else self._writer.result_layer(image.unique_id, image.name)

    def _plan(self, labels: Labels) -> mj.MeasureJob:
        """The job, from the layers as they are now; raises MeasureError or AxesError."""
        data = _plan.full_resolution(labels)
        image_layer = self._picker.selected_image()
        image, image_axes = None, None
        if image_layer is not None:
            raw = _plan.full_resolution(image_layer)
            image_axes = self._picker.validated(tuple(np.shape(raw)))
            image = one_channel(raw, image_axes, self._picker.channel())
        axes = mj.labels_axes(image_axes, tuple(np.shape(data)), labels.axis_labels)
        units = [f"{u:~}" for u in getattr(labels, "units", ())]
        scale, unit = mj.physical(axes, tuple(labels.scale), units)
        return mj.plan_measure(
            data,
            axes=axes,
            scale=scale,
            unit=unit,
            labels_id=labels.unique_id,
            labels_name=labels.name,
            image=image,
            image_name=None if image_layer is None else image_layer.name,
        )

    # --------------------------------------------------------------------- run
    def measure(self) -> None:
        """Start a measurement in a worker (the layers are read here, on the GUI thread)."""
        if self.worker is not None:
            return
        labels = self.labels_layer()
        if labels is None:
            self._fail("no labels to measure: segment an image, or select a Labels layer")
            return
        try:
            job = self._plan(labels)
        except (mj.MeasureError, AxesError) as exc:
            self._fail(one_line(exc))
            return
        worker = create_worker(mj.measure_job, job, _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._started = time.perf_counter()
        self.measure_button.setEnabled(False)
        self.status_label.setText(f"measuring '{labels.name}'...")
        worker.start()

    def stop(self) -> None:
        """Stop a block-by-block measurement at its next block (the dock is closing)."""
        if self.worker is not None:
            self.worker.quit()

    def _fail(self, message: str) -> None:
        _notify.error(f"measure: {message}")
        self.status_label.setText(f"error: {message}")

    def _on_progress(self, p: Any) -> None:
        if p.total > 1:
            self.status_label.setText(f"measuring: block {p.done}/{p.total}")

    def _on_returned(self, result: mj.MeasureResult) -> None:
        job, n = result.job, result.n_objects
        self.result, self._frame = result, None
        bars = mj.bars(result)
        self.plot.set_bars(bars.heights, bars.left, bars.right, bars.caption)
        self._show_features()
        self.save_button.setEnabled(n > 0)
        seconds = time.perf_counter() - self._started
        image = f" and '{job.image_name}'" if job.image_name else ""
        self.status_label.setText(f"{n} objects measured in '{job.labels_name}'{image} ({seconds:.1f} s)")
        if n == 0:
            _notify.warning(f"measure: no objects in '{job.labels_name}'")

    def _on_errored(self, exc: BaseException) -> None:
        self._fail(one_line(exc))

    def _on_finished(self) -> None:
        self.worker = None
        self.measure_button.setEnabled(True)
        self.measured.emit()

    # ---------------------------------------------------------------- features
    def _layer(self) -> Labels | None:
        if self.result is None:
            return None
        layer = _plan.layer_by_id(self.viewer.layers, self.result.job.labels_id)
        return layer if isinstance(layer, Labels) else None

    def _show_features(self) -> None:
        """Put the rows napari can match by label value into the layer (one frame's in a time-lapse)."""
        layer = self._layer()
        if layer is None or self.result is None:
            return
        frame = None
        n_frames = self.result.job.n_frames
        if n_frames is not None:
            frame = mj.frame_at(self.viewer.dims.point, layer.world_to_data, self.result.job.axes, n_frames)
            if frame == self._frame:
                return
        self._frame = frame
        layer.features = mj.features(self.result, mj.frame_rows(self.result, frame))

    def _on_step(self, event: Any = None) -> None:
        """The user moved to another frame: the layer's features follow it."""
        if self.result is not None and self.result.job.n_frames is not None:
            self._show_features()

    # -------------------------------------------------------------------- save
    def save_csv(self) -> None:
        """Write the last table where the user says, atomically; one line if that fails."""
        if self.result is None:
            return
        name = f"{self.result.job.labels_name}_objects.csv".replace(" ", "_")
        path = _dialogs.ask_save_table(self, name)
        if path is None:
            return
        target = Path(path) if Path(path).suffix else Path(path).with_suffix(".csv")
        try:
            table_to_csv(self.result.table, target)
        except OSError as exc:
            self._fail(f"cannot write {target} ({exc.strerror or one_line(exc)})")
            return
        self.status_label.setText(f"{self.result.n_objects} rows written to {target}")
