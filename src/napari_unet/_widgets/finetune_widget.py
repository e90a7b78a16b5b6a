"""The Fine-tune dock widget: retrain the model selected in Segment on the user's corrections.

A composition of parts: the image and annotation pickers, the parameter form, the planes
panel, the run progress, the preview layer, the result actions and the close guard. What
counts as annotation is decided in :mod:`._finetune_request` and :mod:`._finetune_plan`;
training, previews and saving run in a napari worker on :func:`._finetune_plan.finetune_job`
(the core's ``iter_finetune``), which never touches a layer. The GUI thread copies the layers
once, then only draws: the status and the loss plot at most 4 times a second, and a preview
(a few hundred pixels square) every few seconds.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Labels
from napari.qt.threading import create_worker
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_unet.engine.devices import select_device
from napari_unet.models.model_file import ModelFileError
from napari_unet.models.registry import bundled_model_path

from . import _finetune_plan as fp
from . import _gc, _notify, _plan
from ._annotation_picker import AnnotationPicker, default_labels_id
from ._close_guard import CloseGuard
from ._finetune_request import Refusal, build_request
from ._image_picker import ImagePicker
from ._model_state import model_state
from ._params import FinetuneParams, align_labels
from ._planes_panel import PlanesPanel
from ._preview import PreviewLayer
from ._result_actions import ResultActions
from ._run_progress import RunProgress
from ._warm_up import warm_up_torch_training

if TYPE_CHECKING:
    import napari


@dataclass
class FinetuneRun:
    """What the dock remembers of the current (or last) run."""

    image_id: Any  # the image "Segment again" segments
    base: str  # the model it started from, as shown
    started: float
    stop_asked_at: float | None = None


class FinetuneWidget(QWidget):
    """Fine-tune the model chosen in Segment on the corrected labels of an image."""

    #: emitted on the main thread after a run ended (saved, stopped, failed)
    run_finished = Signal()

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)

        self.viewer = napari_viewer
        self.model_state = model_state(napari_viewer)
        self.worker: Any = None
        self._gen: Any = None
        self._stop = threading.Event()
        self.done = threading.Event()  # set by the worker's generator when it ends
        self.done.set()
        self._job: FinetuneRun | None = None
        self.device = str(select_device("auto"))

        self.status_label = QLabel("")
        self.status_label.setToolTip(fp.HELDOUT_HELP)
        # room for three wrapped lines: a word-wrapped label in a dock is not given more
        self.status_label.setMinimumHeight(3 * self.status_label.fontMetrics().lineSpacing() + 4)
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.picker = ImagePicker(
            napari_viewer,
            strict_channel=True,
            axes_help="Axes of the image, letters T Z C Y X (e.g. ZYX, TYX, CYX)",
        )
        self.annotations = AnnotationPicker(napari_viewer)
        self.picker.insert_rows(self.annotations.rows())
        self.model_label = QLabel()
        self.model_label.setToolTip("Fine-tuning starts from the model selected in Segment")
        self.picker.form.addRow("start from", self.model_label)
        self.params = FinetuneParams()
        self.planes = PlanesPanel(
            napari_viewer, self.model_state.written, self.annotations.labels_id, self._lead
        )
        self.finetune_button = QPushButton("Fine-tune")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.setToolTip("End training now; the best weights so far are kept and saved")
        self.progress = RunProgress(self.status_label, self._stopping)
        self.preview = PreviewLayer(napari_viewer)
        self.result = ResultActions(self.model_state, self.status_label)
        self._close_guard = CloseGuard(self, stop_when_undocked=True)
        # the parts' widgets under the names scripts and tests use
        self.image_combo = self.picker.image_combo
        self.axes_edit = self.picker.axes_edit
        self.channel_spin = self.picker.channel_spin
        self.labels_combo = self.annotations.labels_combo
        self.regions_combo = self.annotations.regions_combo
        self.budget_spin = self.params.budget.native
        self.steps_spin = self.params.steps.native
        self.lr_spin = self.params.lr.native
        self.ignore_check = self.params.ignore_check.native
        self.ignore_spin = self.params.ignore_value.native
        self.planes_list = self.planes.planes_list
        self.progress_bar = self.progress.progress_bar
        self.loss_plot = self.progress.loss_plot
        self.segment_again_button = self.result.segment_again_button
        self.save_again_button = self.result.save_again_button
        self.save_elsewhere_button = self.result.save_elsewhere_button
        self.export_button = self.result.export_button

        buttons = QHBoxLayout()
        buttons.addWidget(self.finetune_button)
        buttons.addWidget(self.stop_button)
        outer = QVBoxLayout(self)
        outer.addWidget(self.picker)
        outer.addWidget(self.params.form.native)
        outer.addWidget(self.planes)
        outer.addLayout(buttons)
        outer.addWidget(self.progress)
        outer.addWidget(self.status_label)
        outer.addWidget(self.result)
        outer.addStretch(1)
        align_labels(self.picker.form, self.params.form)

        self.finetune_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.picker.image_chosen.connect(self._select_default_labels)
        self.picker.axes_changed.connect(self.planes.refresh)
        self.picker.problem.connect(self.status_label.setText)
        self.labels_combo.currentIndexChanged.connect(self._on_labels_changed)
        self.segment_again_button.clicked.connect(self.segment_again)
        self.model_state.selected.connect(self._show_model)
        self.model_state.registry_changed.connect(self._show_model)

        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_layer_inserted)
        layers.events.removed.connect(self._refresh_layers)
        layers.events.moved.connect(self._refresh_layers)
        for layer in layers:
            self._watch(layer)

        self._show_model()
        self._refresh_layers()
        self._update_enabled()
        warm_up_torch_training()

    # ----------------------------------------------------------------- layers
    def selected_image(self) -> Any:
        return self.picker.selected_image()

    def selected_labels(self) -> Labels | None:
        return self.annotations.selected_labels()

    def _watch(self, layer: Any) -> None:
        layer.events.name.connect(self._refresh_layers)
        if isinstance(layer, Labels):
            layer.events.paint.connect(self.planes.on_paint)

    def _default_labels_id(self) -> Any:
        return default_labels_id(list(self.viewer.layers), self.selected_image())

    def _on_layer_inserted(self, event: Any) -> None:
        layer = event.value
        self._watch(layer)
        self._refresh_layers()
        if isinstance(layer, Labels) and layer.unique_id == self._default_labels_id() and self.worker is None:
            # Segment just wrote labels for the chosen image: those are the ones to correct
            self.annotations.choose_labels(layer.unique_id)

    def _refresh_layers(self, event: Any = None) -> None:
        """Mirror the viewer's layers in the three choosers, keeping choices that still exist."""
        layers = list(self.viewer.layers)
        image_changed = self.picker.fill(layers)
        labels_changed = self.annotations.fill(layers, self.selected_image(), self.preview.ids)
        if image_changed:
            self.picker.on_image_changed()
        elif labels_changed:
            self._on_labels_changed()
        self._update_enabled()

    def _select_default_labels(self) -> None:
        """A new image: its labels are the ones Segment wrote for it, when there are some."""
        self.annotations.choose_labels(self._default_labels_id())

    def _on_labels_changed(self, *_: Any) -> None:
        self.planes.refresh()

    def _lead(self) -> str:
        """The stack axes (T / Z) of the labels; '' for 2D or axes that do not fit."""
        axes = self.picker.axes()
        if axes is None:
            return ""
        try:
            return fp.stack_axes(axes.replace("C", ""))
        except ValueError:
            return ""

    def _show_model(self, *_: Any) -> None:

        path = self.model_state.path
        if path is None or Path(path) == bundled_model_path():
            self.model_label.setText("nuclei (bundled)")
        else:
            self.model_label.setText(Path(path).stem)
        self.model_label.setToolTip(f"the model selected in Segment: {path or bundled_model_path()}")

    # -------------------------------------------------------------------- run
    def _stopping(self) -> bool:
        return self._stop.is_set()

    def _update_enabled(self) -> None:
        running = self.worker is not None
        self.finetune_button.setEnabled(not running and self.picker.has_images())
        self.stop_button.setEnabled(running and not self._stop.is_set())
        self.picker.set_editable(not running)
        self.annotations.set_editable(not running)

    def _refuse(self, message: str, error: bool = False) -> None:
        """No run: say why in a notification and in the status line."""
        (_notify.error if error else _notify.warning)(message)
        self.status_label.setText(message)

    def _build_request(self) -> fp.FinetuneRequest:
        """Copy what the run needs out of the layers; raises :class:`Refusal`."""
        labels = self.selected_labels()
        return build_request(
            self.selected_image(),
            labels,
            self.axes_edit.text(),
            self.picker.channel(),
            self.params.values(),
            self.annotations.regions,
            self.annotations.regions_name(),
            self.planes.used_planes,
            self.model_state.written.get(labels.unique_id) if labels is not None else None,
            lambda: self.model_state.load().config.in_channels,
        )

    def start(self) -> None:
        """Start a run: copy the layers here, train in a worker."""

        if self.worker is not None:
            return
        try:
            request = self._build_request()
            base = self.model_state.load()
        except Refusal as no:
            self._refuse(no.message, no.error)
            return
        except (ModelFileError, OSError, ValueError) as exc:
            self._refuse(fp.one_line(exc), error=True)
            return
        labels, image = self.selected_labels(), self.selected_image()
        target = self.preview.begin(labels, image.name)
        # the preview follows the plane on screen, which may lie outside the frames copied for
        # training: it then reads that plane from the layer itself, in the worker (lazily for dask)
        full = _plan.full_resolution(image)
        source = request.image if request.image.shape == tuple(np.shape(full)) else full
        preview = fp.PlanePreview(source, request.axes, request.channel, target)
        self._stop = threading.Event()
        self.done = threading.Event()
        self.destroyed.connect(self._stop.set)  # the viewer closed under us: end the run
        self._close_guard.watch_window()
        self._job = FinetuneRun(
            image_id=image.unique_id, base=self.model_label.text(), started=time.perf_counter()
        )
        self._gen = fp.finetune_job(base, request, self._stop, preview, self.done)
        worker = create_worker(fp.drive, self._gen, _start_thread=False, _ignore_errors=True)
        # no full garbage collection (a 250+ ms GIL hold in napari's heap) while training
        worker.finished.connect(_gc.defer_full_collections())
        worker.yielded.connect(self._on_yielded)
        worker.aborted.connect(self._on_aborted)
        # not through the widget: it may be gone when a closing window cancels the worker
        worker.finished.connect(self._gen.close)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.progress.begin(request.steps, request.time_budget, self.device)
        self.result.clear()
        self.status_label.setText(f"preparing: {request.source} from {self._job.base} on {self.device}...")
        self._update_enabled()
        self.preview.layer()
        self.progress.start_timer()
        worker.start()

    def stop(self) -> None:
        """End training at the next step; the best weights so far are kept and saved."""
        if self.worker is None or self._stop.is_set():
            return
        self._stop.set()
        if self._job is not None:
            self._job.stop_asked_at = time.perf_counter()
        self.status_label.setText("stopping: keeping the best weights...")
        self._update_enabled()

    def _on_yielded(self, item: Any) -> None:
        if isinstance(item, fp.Prepared):
            self.status_label.setText(
                f"{item.planes} plane(s), {item.annotated_objects} objects, {item.annotated_pixels} px "
                f"annotated; scoring the starting model on the held-out part..."
            )
            return
        self.progress.add(item)
        if item.preview is not None:
            self.preview.show(item.preview)

    def _on_returned(self, outcome: fp.FinetuneOutcome) -> None:
        self.progress.add_final(outcome.model.card)
        self.result.finished(outcome)

    def _on_errored(self, exc: BaseException) -> None:
        _notify.error(f"fine-tuning failed: {fp.one_line(exc)}")
        self.status_label.setText(f"error: {fp.one_line(exc)} (the selected model is unchanged)")

    def _on_aborted(self) -> None:
        """napari cancelled the run (its window is closing): nothing is saved."""
        self.status_label.setText("cancelled: nothing saved")

    def _on_finished(self) -> None:
        gen, self._gen = self._gen, None
        if gen is not None:
            gen.close()  # a cancelled run's generator is still suspended: end it now
        self._close_guard.release_window()  # watched for the run only; no reference kept after
        self.progress.end(complete=self.result.model is not None)
        self.worker = None
        self._update_enabled()
        self.run_finished.emit()

    def segment_again(self) -> None:
        """Ask Segment (docking it if needed) to segment the image with the new model."""
        image_id = self._job.image_id if self._job is not None else None
        state = self.model_state
        try:
            listening = state.receivers(state.resegment_requested) > 0
        except (TypeError, AttributeError):  # pragma: no cover - bindings without receivers()
            listening = True
        if not listening:
            self.viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
        state.resegment_requested.emit(image_id)
