"""The Segment dock widget: pick an image and a model, run the U-Net off the GUI thread.

A composition of parts: the image picker, the model picker, the parameter form, the labels
writer, the close guard and Measure (:mod:`._measure_panel`). Decisions that are not Qt
(which part of the image, where the result goes, whether that would destroy user edits) live
in :mod:`._plan`; the work itself is :func:`napari_unet.engine.predict.iter_segment`, a
generator that a napari worker drives, one yield per tile, so the GUI keeps repainting and
Stop takes effect at the next tile.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Labels
from napari.qt.threading import create_worker
from napari.utils import progress
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_unet.common.axes import AxesError
from napari_unet.models.model_file import ModelFileError

from . import _gc, _lazy, _notify, _plan
from ._close_guard import CloseGuard
from ._image_picker import ImagePicker
from ._labels_writer import LabelsWriter
from ._measure_panel import MeasurePanel
from ._model_picker import ModelPicker
from ._model_state import model_state
from ._params import SegmentParams, align_labels
from ._plan import one_line
from ._segment_run import JobResult, RunState, SegmentJob, segment_job, segment_lazy_job, with_anisotropy

if TYPE_CHECKING:
    import napari

    from napari_unet.engine.config import Progress
    from napari_unet.models.model_file import Model


class SegmentWidget(QWidget):
    """Segment the chosen image layer with a U-Net into a Labels layer."""

    #: emitted on the main thread after a run ended (done, stopped or failed)
    run_finished = Signal()

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker = None
        self._run: RunState | None = None
        self._latest: Progress | None = None
        self._showing = False
        self.model_state = model_state(napari_viewer)

        self.picker = ImagePicker(napari_viewer, strict_channel=False)
        self.models = ModelPicker(self.model_state)
        self.params = SegmentParams(_plan.SCOPES)
        self.writer = LabelsWriter(napari_viewer, self.model_state.written)
        self.measure = MeasurePanel(napari_viewer, self.picker, self.writer)
        # the parts' widgets under the names scripts and tests use
        self.image_combo = self.picker.image_combo
        self.axes_edit = self.picker.axes_edit
        self.channel_spin = self.picker.channel_spin
        self.model_combo = self.models.model_combo
        self.threshold_spin = self.params.threshold.native
        self.min_size_spin = self.params.min_size.native
        self.diameter_spin = self.params.diameter.native
        self.scope_combo = self.params.scope.native
        self.segment_button = QPushButton("Segment")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)

        self.picker.form.addRow("model", self.models)
        buttons = QHBoxLayout()
        buttons.addWidget(self.segment_button)
        buttons.addWidget(self.stop_button)
        outer = QVBoxLayout(self)
        outer.addWidget(self.picker)
        outer.addWidget(self.params.form.native)
        outer.addLayout(buttons)
        outer.addWidget(self.status_label)
        outer.addWidget(self.measure)
        outer.addStretch(1)
        self._close_guard = CloseGuard(self, stop_when_undocked=False)
        align_labels(self.picker.form, self.params.form)

        self.segment_button.clicked.connect(self.segment)
        self.stop_button.clicked.connect(self.stop)
        self.picker.axes_changed.connect(self._on_axes_changed)
        self.picker.problem.connect(self.status_label.setText)
        self.models.problem.connect(self.status_label.setText)
        self.models.card_loaded.connect(self.params.apply_card)
        self.model_state.resegment_requested.connect(self._on_resegment_requested)

        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_layer_inserted)
        layers.events.removed.connect(self._refresh_images)
        layers.events.removed.connect(self.writer.forget_store)
        layers.events.moved.connect(self._refresh_images)
        for layer in layers:
            layer.events.name.connect(self._refresh_images)

        self.models.select_initial()
        self._refresh_images()
        _lazy.start_cache_cleaning()  # stores of lazy results whose napari died: once per session
        # napari imports pandas & co. the first time any Labels layer is built (~0.3 s on the
        # GUI thread): pay it when the widget opens, not as a freeze when the first result lands
        Labels(np.zeros((1, 1), np.uint8))

    # ----------------------------------------------------------------- layers
    def selected_image(self) -> Any:
        """The image layer chosen in the widget (None if there is none)."""
        return self.picker.selected_image()

    def selected_model(self) -> Model:
        """The chosen model, loaded; raises ModelFileError when its file is unusable."""
        return self.models.selected_model()

    def _on_layer_inserted(self, event: Any) -> None:
        event.value.events.name.connect(self._refresh_images)
        self._refresh_images()

    def _refresh_images(self, event: Any = None) -> None:
        """Mirror the viewer's image layers, keeping the current choice when it still exists."""
        if self.picker.fill(list(self.viewer.layers)):
            self.picker.on_image_changed()
        self._update_enabled()

    def _on_axes_changed(self) -> None:
        """The scope row only shows for a stack ("current slice" and "whole stack" differ there)."""
        axes, shape = self.picker.typed_axes(), self.picker.shape()
        self.params.scope.visible = _plan.has_stack_axes(axes) if len(axes) == len(shape) else False

    # -------------------------------------------------------------------- run
    def _update_enabled(self) -> None:
        running = self.worker is not None
        self.segment_button.setEnabled(not running and self.picker.has_images())
        self.stop_button.setEnabled(running and not (self._run is not None and self._run.stop_requested))

    def _capture(self, layer: Any, axes: str, plan: _plan.Plan, lazy: bool) -> SegmentJob:
        """What the result needs from the image layer, copied now (the layer may change)."""
        kept_axes = axes if not layer.rgb else axes[:-1]  # napari's scale has no RGB entry
        return SegmentJob(
            image_id=layer.unique_id,
            image_name=layer.name,
            plan=plan,
            scale=_plan.drop_channel(layer.scale, kept_axes),
            translate=_plan.drop_channel(layer.translate, kept_axes),
            axis_labels=tuple(lbl for lbl, a in zip(layer.axis_labels, kept_axes, strict=True) if a != "C"),
            started=time.perf_counter(),
            units=tuple(u for u, a in zip(layer.units, kept_axes, strict=True) if a != "C"),
            store=_lazy.labels_store_path(layer.name) if lazy else None,
        )

    def segment(self) -> None:
        """Start a run: copy what it needs from the layers here, compute in a worker."""

        if self.worker is not None:
            return
        layer = self.selected_image()
        if layer is None:
            _notify.warning("no image layer to segment")
            return
        data = _plan.full_resolution(layer)
        try:
            axes = self.picker.validated(tuple(np.shape(data)))
            model = self.selected_model()
        except (AxesError, ModelFileError, OSError) as exc:
            _notify.error(one_line(exc))
            self.status_label.setText(f"error: {one_line(exc)}")
            return
        position = layer.world_to_data(self.viewer.dims.point)
        scope = self.params.scope.value
        view = self._visible_box(layer, axes) if scope == _plan.SCOPE_VIEW else None
        plan = _plan.plan_segmentation(np.shape(data), axes, scope, position, view)
        lazy = not plan.is_slice and _lazy.is_lazy(data)  # never loaded whole: chunked, to disk
        # materialise (dask, zarr) and detach from the layer on this thread: the worker must
        # never read a layer. A plane is copied; a whole stack is not duplicated in memory.
        image = data if lazy else np.array(data[plan.source]) if plan.is_slice else np.asarray(data)
        try:
            job = self._capture(layer, axes, plan, lazy)
        except OSError as exc:  # the labels cache cannot be written (a lazy stack's store goes there)
            _notify.error(f"cannot write to the labels cache {_lazy.cache_folder()}: {exc.strerror or exc}")
            self.status_label.setText(f"error: {exc.strerror or one_line(exc)}")
            return
        # a one-channel model sees the chosen channel; a multi-channel model takes them all
        one = model.config.in_channels == 1
        channel = self.picker.channel() if "C" in plan.axes and one else None
        job_args = (
            (segment_lazy_job, image, plan.axes, job.store, axes)
            if lazy
            else (segment_job, image, plan.axes, not plan.is_slice)
        )
        params = self.params.postprocess_params(model)
        config = with_anisotropy(self.params.predict_config(), job.scale, plan.axes)
        self.model_state.segmented_with[layer.unique_id] = (params, config, channel)
        worker = create_worker(
            *job_args,
            model=model,
            channel=channel,
            params=params,
            config=config,
            _start_thread=False,
            _ignore_errors=True,
        )
        worker.finished.connect(_gc.defer_full_collections())  # see _gc: no 250 ms full GC mid-run
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._run = RunState(job, progress(total=0, desc=f"Segmenting {layer.name}"))
        self.status_label.setText(f"segmenting {layer.name}...")
        self._update_enabled()
        worker.start()

    def stop(self) -> None:
        """Ask the worker to stop at its next tile; nothing is written."""
        self.measure.stop()  # the dock closes: a block-by-block measurement stops too
        if self.worker is None:
            return
        if self._run is not None:
            self._run.stop_requested = True
        self.worker.quit()
        self.status_label.setText("stopping after the current tile...")
        self._update_enabled()

    def _pbar(self) -> progress | None:
        return self._run.pbar if self._run is not None else None

    def _on_progress(self, p: Progress) -> None:
        """Show a tile's progress. napari's progress bar calls processEvents() on every
        update, so this handler can be re-entered (and the run can even finish) inside
        itself: nested calls only record the newest value, the outer call shows it."""
        if p.stage == "size":  # the object-size estimate: in the status line's tooltip, and the result
            if self._run is not None:
                self._run.size = p.detail
            self.status_label.setToolTip(p.detail.describe())
            return
        self._latest = p
        if self._showing:
            return
        self._showing = True
        try:
            while self._latest is not None and self._pbar() is not None and not self._run.stop_requested:
                p, self._latest = self._latest, None
                self._show_progress(self._pbar(), p)
        finally:
            self._showing = False

    def _show_progress(self, pbar: progress, p: Progress) -> None:
        text = "post-processing..." if p.stage == "postprocess" else f"predicting: tile {p.done}/{p.total}"
        self.status_label.setText(text)
        if pbar.total != p.total:
            pbar.total = p.total
        if self._pbar() is pbar:
            pbar.n = p.done
            pbar.update(0)
        if self._pbar() is pbar and pbar.desc.rstrip(": ") != text.split(":")[0]:
            pbar.set_description(text.split(":")[0])

    def _on_returned(self, result: JobResult) -> None:
        run = self._run
        if run is None or run.stop_requested:
            return
        if _plan.layer_by_id(self.viewer.layers, run.job.image_id) is None:
            # the image was deleted while Segment ran: its labels would stand alone, unasked for
            _notify.warning(f"'{run.job.image_name}' was deleted while Segment ran: no labels layer added")
            self.status_label.setText(f"'{run.job.image_name}' was deleted: result discarded")
            return
        name = self.writer.write(run.job, result)
        seconds = time.perf_counter() - run.job.started
        size = f"; {run.size.short()}" if run.size is not None else ""
        self.status_label.setText(f"{result.n_objects} objects in '{name}' ({seconds:.1f} s{size})")

    def _on_errored(self, exc: BaseException) -> None:
        _notify.error(f"segmentation failed: {one_line(exc)}")
        self.status_label.setText(f"error: {one_line(exc)}")

    def _on_finished(self) -> None:
        run, self._run = self._run, None
        if run is not None and run.pbar is not None:
            run.pbar.close()
        if run is not None and run.job.store is not None and not self.writer.holds(run.job.store):
            _lazy.remove_store(run.job.store)  # a lazy run stopped, failed or discarded: no layer uses it
        if run is not None and run.stop_requested:
            self.status_label.setText("stopped: nothing written")
        self.worker = None  # drops the generator, which closes iter_segment
        self._update_enabled()
        self.run_finished.emit()

    def _visible_box(self, layer: Any, axes: str) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """The part of the current plane visible in the canvas, in data pixels ((y0, y1), (x0, x1)),
        from napari's ``corner_pixels``; None (the whole plane) unless Y and X are the axes shown."""
        dims = [a for a in axes if not (layer.rgb and a == "C")]
        corners = np.asarray(getattr(layer, "corner_pixels", ()), float)
        if "Y" not in dims or "X" not in dims or corners.shape != (2, len(dims)):
            return None
        iy, ix = dims.index("Y"), dims.index("X")
        shown = {len(dims) - self.viewer.dims.ndim + d for d in self.viewer.dims.displayed}
        if shown != {iy, ix}:
            return None
        return (corners[0, iy], corners[1, iy] + 1), (corners[0, ix], corners[1, ix] + 1)

    def _on_resegment_requested(self, image_id: Any) -> None:
        """Fine-tune saved a model: segment its image again (edited labels are never overwritten)."""
        self.picker.choose(image_id)
        self.segment()
