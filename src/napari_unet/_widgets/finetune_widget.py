"""The Fine-tune dock widget: retrain the model selected in Segment on the user's corrections.

Thin glue only. What counts as annotation (edited planes, reviewed regions) is decided in
:mod:`._finetune_plan`; training, previews and saving run in a napari worker on
:func:`._finetune_plan.finetune_job` (the core's ``iter_finetune``), which never touches a
layer. The GUI thread copies the layers once, then only draws: the status and the loss plot
at most 4 times a second, and a preview (a few hundred pixels square) every few seconds.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Shapes
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from . import _finetune_plan as fp
from . import _gc, _plan
from ._choosers import fill_layer_combo
from ._loss_plot import LossPlot
from ._model_state import model_state

if TYPE_CHECKING:
    import napari

    from napari_unet.models.model_file import Model
    from napari_unet.training.loop import FinetuneStep

NO_REGIONS = "(whole planes)"
MODEL_FILE_FILTER = "napari-unet model (*.pt);;All files (*)"
REDRAW_MS = 250  # status, progress bar and loss plot: at most 4 redraws a second


_WARMED = threading.Event()
WARM_DONE = threading.Event()  #: set when the warm-up imports are finished


def _warm_up_torch_training() -> None:
    """Import what torch's first optimiser imports (~800 modules: torch._dynamo, sympy ...),
    in a background thread when the widget opens.

    Measured with benchmarks/bench_gui_finetune.py: done by the first training step, those
    imports held the GIL for 100-270 ms at a time (unmarshalling code, registering ops), which
    froze the GUI right after Fine-tune was clicked. Here it happens once, while the user is
    still choosing layers."""
    if _WARMED.is_set():
        return
    _WARMED.set()

    def work() -> None:
        import torch

        try:
            torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
        finally:
            WARM_DONE.set()

    threading.Thread(target=work, name="napari-unet warm-up", daemon=True).start()


class FinetuneWidget(QWidget):
    """Fine-tune the model chosen in Segment on the corrected labels of an image."""

    #: emitted on the main thread after a run ended (saved, stopped, failed)
    run_finished = Signal()
    #: napari's window, watched for its closing (a class default: Qt may filter events early)
    _watched_window: Any = None
    worker: Any = None
    _gen: Any = None

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from napari_unet.engine.devices import select_device

        self.viewer = napari_viewer
        self.model_state = model_state(napari_viewer)
        self.worker: Any = None
        self._stop = threading.Event()
        self.done = threading.Event()  # set by the worker's generator when it ends
        self.done.set()
        self._job: dict[str, Any] = {}
        self._latest: FinetuneStep | None = None
        self._result: Model | None = None  # the last fine-tuned model (kept when saving failed)
        self._planes: dict[Any, dict[fp.Plane, bool]] = {}  # labels id -> plane -> used
        self._pending: dict[Any, set[fp.Plane]] = {}  # labels id -> painted, not yet classified
        self._preview_ids: set[Any] = set()
        self.previews_shown = 0
        self.device = str(select_device("auto"))

        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.labels_combo.setToolTip("The corrected labels: 0 = background, one id per object")
        self.regions_combo = QComboBox()
        self.regions_combo.setToolTip(
            "Optional Shapes layer: only pixels inside its rectangles, polygons and ellipses "
            "count (reviewed regions); pixels outside are ignored, never learned as background"
        )
        self.axes_edit = QLineEdit()
        self.axes_edit.setToolTip("Axes of the image, letters T Z C Y X (e.g. ZYX, TYX, CYX)")
        self.channel_spin = QSpinBox()
        self.channel_spin.setToolTip("Which channel the model sees")
        self.model_label = QLabel()
        self.model_label.setToolTip("Fine-tuning starts from the model selected in Segment")
        self.budget_spin = QDoubleSpinBox()
        self.budget_spin.setRange(1.0, 24 * 3600.0)
        self.budget_spin.setDecimals(0)
        self.budget_spin.setValue(60.0)
        self.budget_spin.setSuffix(" s")
        self.budget_spin.setToolTip("Training time; Stop ends earlier and keeps the best weights")
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(0, 1_000_000)
        self.steps_spin.setSpecialValueText("no limit")
        self.steps_spin.setToolTip("Optional number of steps; training ends at whichever limit comes first")
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(5)
        self.lr_spin.setRange(1e-5, 1e-1)
        self.lr_spin.setSingleStep(1e-4)
        self.lr_spin.setValue(1e-3)
        self.lr_spin.setToolTip("Learning rate (1e-3 works for a few minutes of fine-tuning)")
        self.ignore_check = QCheckBox("ignore label")
        self.ignore_spin = QSpinBox()
        self.ignore_spin.setRange(-(2**31), 2**31 - 1)
        self.ignore_spin.setValue(65535)
        self.ignore_spin.setEnabled(False)
        self.ignore_check.setToolTip(
            "Pixels painted with this label value are 'not annotated': they are never learned "
            "as background. Paint it over parts you have not checked."
        )
        self.planes_label = QLabel("planes used (edited or added)")
        self.planes_list = QListWidget()
        self.planes_list.setMaximumHeight(110)
        self.planes_list.setToolTip("Only these slices / frames are trained on; untick or remove to skip one")
        self.add_plane_button = QPushButton("Add current plane")
        self.add_plane_button.setToolTip("Use the plane on screen as reviewed, even if you did not edit it")
        self.remove_plane_button = QPushButton("Remove")
        self.finetune_button = QPushButton("Fine-tune")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.setToolTip("End training now; the best weights so far are kept and saved")
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setTextVisible(False)
        self.loss_plot = LossPlot()
        self.status_label = QLabel("")
        self.status_label.setToolTip(fp.HELDOUT_HELP)
        # room for three wrapped lines: a word-wrapped label in a dock is not given more
        self.status_label.setMinimumHeight(3 * self.status_label.fontMetrics().lineSpacing() + 4)
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.segment_again_button = QPushButton("Segment again")
        self.segment_again_button.setToolTip(
            "Segment the image with the fine-tuned model (edited labels are kept: a new layer is written)"
        )
        self.segment_again_button.setEnabled(False)
        self.save_again_button = QPushButton("Save again")
        self.export_button = QPushButton("Export...")
        self.export_button.setToolTip("Write the last fine-tuned model to a file")
        self.export_button.setEnabled(False)
        self.save_again_button.setVisible(False)

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("labels", self.labels_combo)
        form.addRow("reviewed regions", self.regions_combo)
        form.addRow("axes", self.axes_edit)
        form.addRow("channel", self.channel_spin)
        form.addRow("start from", self.model_label)
        form.addRow("time budget", self.budget_spin)
        form.addRow("max steps", self.steps_spin)
        form.addRow("learning rate", self.lr_spin)
        ignore_row = QHBoxLayout()
        ignore_row.addWidget(self.ignore_check)
        ignore_row.addWidget(self.ignore_spin, 1)
        form.addRow(ignore_row)
        self._form = form
        plane_buttons = QHBoxLayout()
        plane_buttons.addWidget(self.add_plane_button)
        plane_buttons.addWidget(self.remove_plane_button)
        buttons = QHBoxLayout()
        buttons.addWidget(self.finetune_button)
        buttons.addWidget(self.stop_button)
        after = QHBoxLayout()
        after.addWidget(self.segment_again_button)
        after.addWidget(self.save_again_button)
        after.addWidget(self.export_button)
        outer = QVBoxLayout(self)
        outer.addLayout(form)
        outer.addWidget(self.planes_label)
        outer.addWidget(self.planes_list)
        outer.addLayout(plane_buttons)
        outer.addLayout(buttons)
        outer.addWidget(self.progress_bar)
        outer.addWidget(self.loss_plot)
        outer.addWidget(self.status_label)
        outer.addLayout(after)
        outer.addStretch(1)
        self._plane_widgets = (
            self.planes_label,
            self.planes_list,
            self.add_plane_button,
            self.remove_plane_button,
        )

        self._tick = QTimer(self)
        self._tick.setInterval(REDRAW_MS)
        self._tick.timeout.connect(self._redraw)
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(0)
        self._flush_timer.timeout.connect(self._flush_pending)

        self.finetune_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.add_plane_button.clicked.connect(self.add_current_plane)
        self.remove_plane_button.clicked.connect(self.remove_selected_planes)
        self.planes_list.itemChanged.connect(self._on_plane_item_changed)
        self.ignore_check.toggled.connect(self.ignore_spin.setEnabled)
        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        self.labels_combo.currentIndexChanged.connect(self._on_labels_changed)
        self.axes_edit.textChanged.connect(self._on_axes_changed)
        self.segment_again_button.clicked.connect(self.segment_again)
        # bound methods, not lambdas: a lambda holding ``self`` keeps the viewer alive after closing
        self.save_again_button.clicked.connect(self._on_save_again_clicked)
        self.export_button.clicked.connect(self._on_export_clicked)
        self.model_state.selected.connect(self._show_model)
        self.model_state.registry_changed.connect(self._show_model)

        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_layer_inserted)
        layers.events.removed.connect(self._refresh_layers)
        layers.events.moved.connect(self._refresh_layers)
        for layer in layers:
            self._watch(layer)
        self.viewer.dims.events.current_step.connect(self._on_view_changed)
        self._camera().events.center.connect(self._on_view_changed)

        self._show_model()
        self._refresh_layers()
        self._update_enabled()
        _warm_up_torch_training()

    # ----------------------------------------------------------------- layers
    def _layer_by_id(self, uid: Any) -> Any:
        return _plan.layer_by_id(self.viewer.layers, uid)

    def selected_image(self) -> Image | None:
        return self._layer_by_id(self.image_combo.currentData())

    def selected_labels(self) -> Labels | None:
        return self._layer_by_id(self.labels_combo.currentData())

    def selected_regions(self) -> Shapes | None:
        uid = self.regions_combo.currentData()
        return None if uid is None else self._layer_by_id(uid)

    def _watch(self, layer: Any) -> None:
        layer.events.name.connect(self._refresh_layers)
        if isinstance(layer, Labels):
            layer.events.paint.connect(self._on_paint)

    def _on_layer_inserted(self, event: Any) -> None:
        layer = event.value
        self._watch(layer)
        self._refresh_layers()
        if isinstance(layer, Labels) and layer.unique_id == self._default_labels_id() and self.worker is None:
            # Segment just wrote labels for the chosen image: those are the ones to correct
            self.labels_combo.setCurrentIndex(self.labels_combo.findData(layer.unique_id))

    def _refresh_layers(self, event: Any = None) -> None:
        """Mirror the viewer's layers in the three choosers, keeping choices that still exist."""
        layers = list(self.viewer.layers)
        old_image, old_labels = self.image_combo.currentData(), self.labels_combo.currentData()
        fill_layer_combo(self.image_combo, [lyr for lyr in layers if isinstance(lyr, Image)])
        labels = [lyr for lyr in layers if isinstance(lyr, Labels) and lyr.unique_id not in self._preview_ids]
        fill_layer_combo(self.labels_combo, labels, prefer=self._default_labels_id())
        shapes = [lyr for lyr in layers if isinstance(lyr, Shapes)]
        fill_layer_combo(self.regions_combo, shapes, none=NO_REGIONS)
        if self.image_combo.currentData() != old_image:
            self._on_image_changed()
        elif self.labels_combo.currentData() != old_labels:
            self._on_labels_changed()
        self._update_enabled()

    def _default_labels_id(self) -> Any:
        """The '<image> labels' layer Segment writes (or the newest '<image> labels [k]')."""
        image = self.selected_image()
        if image is None:
            return None
        base = f"{image.name} labels"
        named = [
            lyr
            for lyr in self.viewer.layers
            if isinstance(lyr, Labels) and (lyr.name == base or lyr.name.startswith(base + " ["))
        ]
        return named[-1].unique_id if named else None

    def _on_image_changed(self, *_: Any) -> None:
        layer = self.selected_image()
        default = self._default_labels_id()
        if default is not None and self.labels_combo.findData(default) >= 0:
            self.labels_combo.setCurrentIndex(self.labels_combo.findData(default))
        if layer is None:
            self.axes_edit.setText("")
        else:
            try:
                axes = _plan.first_axes_guess(layer)
            except ValueError as exc:
                axes = ""
                self.status_label.setText(fp.one_line(exc))
            self.axes_edit.setText(axes)
        self._on_axes_changed()

    def _on_labels_changed(self, *_: Any) -> None:
        self._refresh_planes_list()

    def _axes(self) -> str | None:
        """The image's axes as typed, if they fit the image; None otherwise."""
        from napari_unet.common.axes import AxesError, validate_axes

        layer = self.selected_image()
        if layer is None:
            return None
        shape = tuple(np.shape(_plan.full_resolution(layer)))
        try:
            return validate_axes(self.axes_edit.text().strip().upper(), shape)
        except AxesError:
            return None

    def _lead(self) -> str:
        """The stack axes (T / Z) of the labels; '' for 2D or axes that do not fit."""
        axes = self._axes()
        if axes is None:
            return ""
        try:
            return fp.stack_axes(axes.replace("C", ""))
        except ValueError:
            return ""

    def _on_axes_changed(self, *_: Any) -> None:
        axes = self._axes() or ""
        layer = self.selected_image()
        has_c = "C" in axes and layer is not None
        if has_c:
            shape = np.shape(_plan.full_resolution(layer))
            self.channel_spin.setRange(0, int(shape[axes.index("C")]) - 1)
        label = self._form.labelForField(self.channel_spin)
        if label is not None:
            label.setVisible(has_c)
        self.channel_spin.setVisible(has_c)
        self._refresh_planes_list()

    # ----------------------------------------------------------------- planes
    def _on_paint(self, event: Any) -> None:
        """A brush / fill / eraser stroke (or Segment's own write) ended: classify it later,
        once Segment has recorded what it wrote (a write's paint event comes first)."""
        layer = event.source
        planes = fp.painted_planes(event.value, np.shape(layer.data))
        if planes:
            self._pending.setdefault(layer.unique_id, set()).update(planes)
            self._flush_timer.start()

    def _flush_pending(self) -> None:
        pending, self._pending = self._pending, {}
        changed = False
        for uid, planes in pending.items():
            layer = self._layer_by_id(uid)
            if layer is None:
                continue
            written = self.model_state.written.get(uid)
            data = layer.data
            used = self._planes.setdefault(uid, {})
            for p in planes:
                if p in used or fp.is_segment_output(data, p, written):
                    continue
                used[p] = True
                changed = True
        if changed:
            self._refresh_planes_list()

    def used_planes(self) -> list[fp.Plane]:
        """The ticked planes of the chosen labels layer (after classifying pending strokes)."""
        self._flush_pending()
        uid = self.labels_combo.currentData()
        return sorted(p for p, on in self._planes.get(uid, {}).items() if on)

    def _refresh_planes_list(self) -> None:
        lead = self._lead()
        for w in self._plane_widgets:
            w.setVisible(bool(lead))
        self.planes_list.blockSignals(True)
        self.planes_list.clear()
        if lead:
            uid = self.labels_combo.currentData()
            for plane, on in sorted(self._planes.get(uid, {}).items()):
                if len(plane) != len(lead):
                    continue
                item = QListWidgetItem(fp.plane_name(plane, lead))
                item.setData(Qt.ItemDataRole.UserRole, plane)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
                self.planes_list.addItem(item)
        self.planes_list.blockSignals(False)

    def _on_plane_item_changed(self, item: QListWidgetItem) -> None:
        plane = tuple(item.data(Qt.ItemDataRole.UserRole))
        uid = self.labels_combo.currentData()
        self._planes.setdefault(uid, {})[plane] = item.checkState() == Qt.CheckState.Checked

    def current_plane(self) -> fp.Plane | None:
        """The plane of the chosen labels layer shown in the viewer (None without a stack)."""
        layer = self.selected_labels()
        lead = self._lead()
        if layer is None or not lead:
            return None
        pos = layer.world_to_data(self.viewer.dims.point)
        shape = np.shape(layer.data)
        return tuple(
            int(np.clip(np.round(v), 0, n - 1)) for v, n in zip(pos[: len(lead)], shape, strict=False)
        )

    def add_current_plane(self) -> None:
        plane = self.current_plane()
        uid = self.labels_combo.currentData()
        if plane is None or uid is None:
            return
        self._planes.setdefault(uid, {})[plane] = True
        self._refresh_planes_list()

    def remove_selected_planes(self) -> None:
        uid = self.labels_combo.currentData()
        for item in self.planes_list.selectedItems():
            self._planes.get(uid, {}).pop(tuple(item.data(Qt.ItemDataRole.UserRole)), None)
        self._refresh_planes_list()

    # ----------------------------------------------------------------- model
    def _show_model(self, *_: Any) -> None:
        from napari_unet.models.registry import bundled_model_path

        path = self.model_state.path
        if path is None or Path(path) == bundled_model_path():
            self.model_label.setText("nuclei (bundled)")
        else:
            self.model_label.setText(Path(path).stem)
        self.model_label.setToolTip(f"the model selected in Segment: {path or bundled_model_path()}")

    # -------------------------------------------------------------------- run
    def _update_enabled(self) -> None:
        running = self.worker is not None
        self.finetune_button.setEnabled(not running and self.image_combo.count() > 0)
        self.stop_button.setEnabled(running and not self._stop.is_set())
        for w in (self.image_combo, self.labels_combo, self.regions_combo, self.axes_edit):
            w.setEnabled(not running)

    def _refuse(self, message: str, error: bool = False) -> None:
        """No run: say why in a notification and in the status line."""
        (show_error if error else show_warning)(f"napari-unet: {message}")
        self.status_label.setText(message)

    def _regions(self, labels: Labels) -> fp.Regions | None:
        shapes = self.selected_regions()
        if shapes is None:
            return None
        to_labels = fp.affine_between(shapes.scale, shapes.translate, labels.scale, labels.translate)
        return fp.regions_mask(
            list(shapes.data), list(shapes.shape_type), to_labels, labels.data.shape, shapes.ndim
        )

    def _build_request(self) -> fp.FinetuneRequest | None:
        """Copy what the run needs out of the layers, or say why there is nothing to train on."""
        from napari_unet.common.axes import AxesError, validate_axes

        image, labels = self.selected_image(), self.selected_labels()
        if image is None or labels is None:
            self._refuse("choose an image and its corrected labels layer (Segment it first)")
            return None
        data = _plan.full_resolution(image)
        try:
            axes = validate_axes(self.axes_edit.text().strip().upper(), tuple(np.shape(data)))
            lead = fp.stack_axes(axes.replace("C", ""))
        except (AxesError, ValueError) as exc:
            self._refuse(fp.one_line(exc), error=True)
            return None
        lab_data = _plan.full_resolution(labels)
        want = _plan.labels_shape(np.shape(data), axes)
        if tuple(np.shape(lab_data)) != want:
            self._refuse(
                f"labels '{labels.name}' have shape {tuple(np.shape(lab_data))}, image '{image.name}' "
                f"needs {want}",
                error=True,
            )
            return None
        regions = self._regions(labels)
        if regions is not None and not regions.mask.any():
            self._refuse(
                f"'{self.regions_combo.currentText()}' has no rectangle, polygon or ellipse", error=True
            )
            return None
        written = self.model_state.written.get(labels.unique_id)
        slices: list[Any] | None = None
        if lead:
            planes = set(self.used_planes()) | set(regions.planes if regions is not None else ())
            if planes:
                slices = fp.planes_to_slices(sorted(planes), lead)
            elif written is not None:
                self._refuse(
                    "no edited plane: correct a slice with the brush, eraser or fill, "
                    "or add the current plane as reviewed"
                )
                return None
        elif regions is None and fp.is_segment_output(lab_data, (), written):
            self._refuse(
                "the labels are exactly what Segment wrote: correct some objects first "
                "(brush, eraser, fill) or draw reviewed regions"
            )
            return None
        one = self.model_state.load().config.in_channels == 1
        steps = int(self.steps_spin.value())
        reviewed = None if regions is None else regions.mask
        image_copy, labels_copy, slices, reviewed, frames = fp.used_frames(
            data, lab_data, axes, slices, reviewed
        )
        return fp.FinetuneRequest(
            image=image_copy,
            labels=labels_copy,
            axes=axes,
            channel=int(self.channel_spin.value()) if "C" in axes and one else None,
            ignore_label=int(self.ignore_spin.value()) if self.ignore_check.isChecked() else None,
            reviewed=reviewed,
            slices=slices,
            time_budget=float(self.budget_spin.value()),
            steps=steps or None,
            lr=float(self.lr_spin.value()),
            source=image.name,
            frames=frames,
        )

    def _preview_target(self, labels: Labels) -> tuple[fp.Plane, tuple[int, int, int, int]]:
        """The plane on screen and a window around the view's centre, in the labels' pixels."""
        shape = np.shape(labels.data)
        point = list(self.viewer.dims.point)
        displayed = list(self.viewer.dims.displayed)[-2:]
        center = list(self._camera().center)[-2:]
        for d, c in zip(displayed, center, strict=False):
            point[d] = c
        pos = labels.world_to_data(point)
        n_lead = len(shape) - 2
        plane = tuple(int(np.clip(np.round(v), 0, n - 1)) for v, n in zip(pos[:n_lead], shape, strict=False))
        return plane, fp.preview_window(shape[-2:], pos[-2:])

    def _camera(self) -> Any:
        """napari >= 0.9 moved the camera to ``viewer.scene.camera``."""
        scene = getattr(self.viewer, "scene", None)
        return scene.camera if scene is not None and hasattr(scene, "camera") else self.viewer.camera

    def _on_view_changed(self, *_: Any) -> None:
        target = self._job.get("target")
        labels = self._layer_by_id(self._job.get("labels_id"))
        if target is not None and labels is not None:
            target.value = self._preview_target(labels)

    def start(self) -> None:
        """Start a run: copy the layers here, train in a worker."""
        from napari_unet.models.model_file import ModelFileError

        if self.worker is not None:
            return
        try:
            request = self._build_request()
            if request is None:
                return
            base = self.model_state.load()
        except (ModelFileError, OSError, ValueError) as exc:
            self._refuse(fp.one_line(exc), error=True)
            return
        labels = self.selected_labels()
        image = self.selected_image()
        target = fp.PreviewTarget(*self._preview_target(labels))
        # the preview follows the plane on screen, which may lie outside the frames copied for
        # training: it then reads that plane from the layer itself, in the worker (lazily for dask)
        full = _plan.full_resolution(image)
        source = request.image if request.image.shape == tuple(np.shape(full)) else full
        preview = fp.PlanePreview(source, request.axes, request.channel, target)
        self._stop = threading.Event()
        self.done = threading.Event()
        self.destroyed.connect(self._stop.set)  # the viewer closed under us: end the run
        self._watch_window()
        self._job = {
            "target": target,
            "labels_id": labels.unique_id,
            "image_id": image.unique_id,
            "image_name": image.name,
            "scale": tuple(labels.scale),
            "translate": tuple(labels.translate),
            "units": tuple(labels.units),
            "axis_labels": tuple(labels.axis_labels),
            "shape": tuple(np.shape(labels.data)),
            # the labels layer's dtype: napari reuses its texture format and shader for the preview
            "dtype": fp.preview_dtype(np.asarray(labels.data[(0,) * labels.ndim]).dtype),
            "preview_id": None,
            "preview_removed": False,
            "started": time.perf_counter(),
            "budget": request.time_budget,
            "steps": request.steps,
            "base": self.model_label.text(),
            "stop_asked_at": None,
        }
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
        self._latest = None
        self._result = None
        self.previews_shown = 0
        self.loss_plot.clear()
        self.loss_plot.redraw()
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(False)  # until the first step
        self.segment_again_button.setEnabled(False)
        self.save_again_button.setVisible(False)
        self.status_label.setText(f"preparing: {request.source} from {self._job['base']} on {self.device}...")
        self._update_enabled()
        self._preview_layer()
        self._tick.start()
        worker.start()

    def stop(self) -> None:
        """End training at the next step; the best weights so far are kept and saved."""
        if self.worker is None or self._stop.is_set():
            return
        self._stop.set()
        self._job["stop_asked_at"] = time.perf_counter()
        self.status_label.setText("stopping: keeping the best weights...")
        self._update_enabled()

    def _on_yielded(self, item: Any) -> None:
        if isinstance(item, fp.Prepared):
            self.status_label.setText(
                f"{item.planes} plane(s), {item.annotated_objects} objects, {item.annotated_pixels} px "
                f"annotated; scoring the starting model on the held-out part..."
            )
            return
        self._latest = item
        self.loss_plot.add(item.step, item.loss, item.heldout.loss if item.heldout is not None else None)
        if item.preview is not None:
            self._show_preview(item.preview)

    def _redraw(self) -> None:
        """The throttled part of progress: status line, progress bar, loss plot."""
        st = self._latest
        if st is not None and not self._stop.is_set():
            frac = fp.progress_fraction(st.step, st.elapsed, self._job.get("steps"), self._job.get("budget"))
            self.progress_bar.setValue(int(1000 * frac))
            # the live figures go in the bar's own text: repainting it costs no re-layout, while a
            # word-wrapped label re-lays out its dock on every new text (7-17 ms, measured)
            self.progress_bar.setFormat(
                f"step {st.step} \u00b7 loss {st.loss:.3f} \u00b7 {st.steps_per_second:.1f} steps/s "
                f"\u00b7 {self.device}"
            )
            self.progress_bar.setTextVisible(True)
            if self.loss_plot.held:  # changes every few seconds only
                text = f"held-out loss {self.loss_plot.held[-1][1]:.3f} (best weights: step {st.best_step})"
                if text != self.status_label.text():
                    self.status_label.setText(text)
        self.loss_plot.redraw()

    def _preview_layer(self) -> Labels | None:
        """'<image> preview' (created once per image; never the user's labels), or None when the
        user deleted it during this run. Created when the run starts: adding a layer costs
        napari a few hundred ms on the GUI thread (controls, visual), better at the click than
        as a freeze in the middle of training."""
        job = self._job
        if job.get("preview_removed"):
            return None
        layer = self._layer_by_id(job.get("preview_id"))
        if job.get("preview_id") is not None and layer is None:
            job["preview_removed"] = True  # the user deleted it: stop previewing this run
            return None
        if layer is None:
            name = f"{job['image_name']} preview"
            layer = next(
                (lyr for lyr in self.viewer.layers if lyr.name == name and isinstance(lyr, Labels)), None
            )
            if layer is None or tuple(np.shape(layer.data)) != job["shape"]:
                active = self.viewer.layers.selection.active
                layer = Labels(
                    np.zeros(job["shape"], job["dtype"]),
                    name=_plan.next_free_name(name, [lyr.name for lyr in self.viewer.layers]),
                    scale=job["scale"],
                    translate=job["translate"],
                    units=job["units"],
                    axis_labels=job["axis_labels"],
                    opacity=0.6,
                )
                self._preview_ids.add(layer.unique_id)
                self.viewer.layers.append(layer)
                if active is not None:  # keep the user's brush on the layer they were painting
                    self.viewer.layers.selection.active = active
            self._preview_ids.add(layer.unique_id)
            job["preview_id"] = layer.unique_id
            job["last_window"] = None
        return layer

    def _show_preview(self, result: fp.PreviewResult) -> None:
        """Write the preview window into the preview layer (the previous window is cleared)."""
        job = self._job
        layer = self._preview_layer()
        if layer is None:
            return
        y0, y1, x0, x1 = result.window
        data = layer.data
        last = job.get("last_window")
        if last is not None:
            plane, (a, b, c, d) = last
            data[plane][a:b, c:d] = 0
        values = result.labels
        if values.max(initial=0) > np.iinfo(data.dtype).max:
            values = values % np.iinfo(data.dtype).max  # a preview: colours only, ids may wrap
        data[result.plane][y0:y1, x0:x1] = values
        job["last_window"] = (result.plane, result.window)
        layer.refresh()
        self.previews_shown += 1

    def _on_returned(self, outcome: fp.FinetuneOutcome) -> None:
        self._result = outcome.model
        self.export_button.setEnabled(True)
        card = outcome.model.card
        ft = card.get("finetune") or {}
        m = card.get("metrics") or {}
        if "heldout_loss_before" in m:  # scored before the first step and at the end: not yielded
            self.loss_plot.add_heldout(0, m["heldout_loss_before"])
            self.loss_plot.add_heldout(int(ft.get("best_step", 0)), m["heldout_loss_after"])
        how = "stopped" if ft.get("stopped_early") else "done"
        summary = (
            f"{how}: {ft.get('steps', 0)} steps in {ft.get('seconds', 0):.0f} s; {fp.result_summary(card)}"
        )
        if outcome.saved is not None:
            self._saved(outcome.saved, summary)
        else:
            self._save_failed(outcome.save_error or "unknown error", summary)

    def _saved(self, info: Any, summary: str) -> None:
        if self._result is not None:
            self._result.card["name"] = info.name  # as in the saved file
            with contextlib.suppress(OSError):
                self.model_state.remember(str(info.path), self._result)
        self.model_state.changed()
        self.model_state.select(str(info.path))
        self.segment_again_button.setEnabled(True)
        self.save_again_button.setVisible(False)
        self.status_label.setText(f"{summary}. Saved and selected in Segment as '{info.name}'.")
        show_info(
            f"napari-unet: fine-tuned model saved as {info.name} ({fp.result_summary(self._result.card)})"
        )

    def _save_failed(self, error: str, summary: str) -> None:
        show_error(f"napari-unet: fine-tuned model not saved: {error}")
        self.save_again_button.setVisible(True)
        self.status_label.setText(f"{summary}. NOT saved ({error}): Save again or Export it to a file.")

    def save_result(self) -> bool:
        """Retry saving the last fine-tuned model (after a full disk or unwritable folder)."""
        from napari_unet.models.registry import ModelSaveError, save_version

        if self._result is None:
            return False
        try:
            info = save_version(self._result)
        except (ModelSaveError, OSError, ValueError) as exc:
            self._save_failed(fp.one_line(exc), "save failed again")
            return False
        self._saved(info, "saved")
        return True

    def _on_save_again_clicked(self) -> None:
        self.save_result()

    def _on_export_clicked(self) -> None:
        self.export_result()

    def _ask_export_path(self) -> str | None:
        """The file dialog, apart so tests can replace it."""
        name = f"{self._result.card.get('name', 'model')}.pt" if self._result is not None else "model.pt"
        path, _ = QFileDialog.getSaveFileName(self, "Export the fine-tuned model", name, MODEL_FILE_FILTER)
        return path or None

    def export_result(self, path: str | Path | None = None) -> Path | None:
        """Write the last fine-tuned model to a file of the user's choice."""
        if self._result is None:
            return None
        path = path or self._ask_export_path()
        if not path:
            return None
        try:
            out = self._result.save(path)
        except OSError as exc:
            show_error(f"napari-unet: cannot export: {exc.strerror or exc}")
            return None
        show_info(f"napari-unet: model written to {out}")
        return out

    def _on_errored(self, exc: BaseException) -> None:
        show_error(f"napari-unet: fine-tuning failed: {fp.one_line(exc)}")
        self.status_label.setText(f"error: {fp.one_line(exc)} (the selected model is unchanged)")

    def _on_aborted(self) -> None:
        """napari cancelled the run (its window is closing): nothing is saved."""
        self.status_label.setText("cancelled: nothing saved")

    def _on_finished(self) -> None:
        gen, self._gen = self._gen, None
        if gen is not None:
            gen.close()  # a cancelled run's generator is still suspended: end it now
        self._tick.stop()
        if self._watched_window is not None:  # watched for the run only; no reference kept after
            self._watched_window.removeEventFilter(self)
            self._watched_window = None
        self.loss_plot.redraw()
        if self._result is not None:
            self.progress_bar.setValue(1000)
        self.worker = None
        self._update_enabled()
        self.run_finished.emit()

    def segment_again(self) -> None:
        """Ask Segment (docking it if needed) to segment the image with the new model."""
        image_id = self._job.get("image_id")
        state = self.model_state
        try:
            listening = state.receivers(state.resegment_requested) > 0
        except (TypeError, AttributeError):  # pragma: no cover - bindings without receivers()
            listening = True
        if not listening:
            self.viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
        state.resegment_requested.emit(image_id)

    def _watch_window(self) -> None:
        """Learn when napari's window closes (its children get no close event of their own)."""
        win = self.window()
        if win is not self and win is not self._watched_window:
            win.installEventFilter(self)
            self._watched_window = win

    def eventFilter(self, obj: Any, event: QEvent) -> bool:
        if obj is self._watched_window and event.type() == QEvent.Type.Close and self.worker is not None:
            if event.spontaneous():  # the user's x: napari may still ask to confirm
                QTimer.singleShot(0, self._stop_if_window_gone)
            else:
                self.stop()
        return False

    def _stop_if_window_gone(self) -> None:
        if self._watched_window is not None and not self._watched_window.isVisible():
            self.stop()

    def event(self, event: QEvent) -> bool:
        """Closing the dock (its x) only takes the widget out of the window: end the run then."""
        if event.type() == QEvent.Type.ParentChange and self.parent() is None:
            self.stop()
        return super().event(event)

    def closeEvent(self, event: Any) -> None:
        self.stop()
        super().closeEvent(event)
