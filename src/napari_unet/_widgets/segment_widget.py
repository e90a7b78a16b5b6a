"""The Segment dock widget: pick an image and a model, run the U-Net off the GUI thread.

Thin glue only. Decisions that are not Qt (which part of the image, where the result goes,
whether that would destroy user edits) live in :mod:`._plan`; the work itself is
:func:`napari_unet.engine.predict.iter_segment`, a generator that a napari worker drives, one
yield per tile, so the GUI keeps repainting and Stop takes effect at the next tile.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_unet.engine.metrics import count_objects

from . import _gc, _lazy, _plan
from ._choosers import fill_layer_combo
from ._model_state import model_state

if TYPE_CHECKING:
    import napari

    from napari_unet.engine.postprocess import PostprocessParams
    from napari_unet.engine.predict import PredictConfig, Progress
    from napari_unet.models.model_file import Model

LOAD_FROM_FILE = "Load from file..."
MODEL_FILE_FILTER = "napari-unet model (*.pt);;All files (*)"


class SegmentJobError(Exception):
    """A failure inside the worker, as one line.

    superqt's worker swallows ``RuntimeError`` (it assumes a deleted Qt object) and emits
    neither ``returned`` nor ``errored``; torch reports out-of-memory and friends as
    ``RuntimeError``, so the job re-raises those as this type to reach ``errored``.
    """


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True)
class JobResult:
    """The labels and what the main thread would otherwise compute from them."""

    labels: np.ndarray
    n_objects: int
    fingerprint: dict[tuple[int, ...], bytes] | None


def segment_job(
    image: np.ndarray, axes: str, fingerprint: bool, **kwargs: Any
) -> Generator[Progress, None, JobResult]:
    """Run in the worker thread: :func:`iter_segment`, every error made reportable, and the
    counting and fingerprinting done here rather than on the GUI thread."""
    from napari_unet.engine.predict import iter_segment

    try:
        labels = yield from iter_segment(image, axes=axes, **kwargs)
    except RuntimeError as exc:
        raise SegmentJobError(_one_line(exc)) from exc
    out_axes = axes.replace("C", "")
    n = count_objects(labels, out_axes)
    return JobResult(labels, n, _plan.fingerprint(labels) if fingerprint else None)


def segment_lazy_job(
    image: Any, axes: str, path: Path, layer_axes: str, **kwargs: Any
) -> Generator[Progress, None, JobResult]:
    """Run in the worker thread for a whole lazy stack: the chunked engine writes the labels
    into a zarr store at ``path``; the result holds that store's array, not a copy."""
    try:
        labels, labels_axes, n = yield from _lazy.segment_lazy(image, axes, path, **kwargs)
    except RuntimeError as exc:
        raise SegmentJobError(_one_line(exc)) from exc
    return JobResult(_lazy.to_layer_order(labels, labels_axes, layer_axes), n, None)


def _with_anisotropy(config: PredictConfig, scale: tuple[float, ...], axes: str) -> PredictConfig:
    """A z-stack's z/xy pixel-size ratio from the layer's scale (napari's default 1s: unknown)."""
    from dataclasses import replace

    from napari_unet.engine.predict import anisotropy_from_pixel_size

    kept = [a for a in axes if a != "C"]
    if config.anisotropy is not None or "Z" not in kept or len(scale) != len(kept):
        return config
    zyx = [scale[kept.index(a)] for a in "ZYX"]
    return replace(config, anisotropy=anisotropy_from_pixel_size(zyx))


def _set_row_visible(form: QFormLayout, field: QWidget, visible: bool) -> None:
    """Show or hide a form row (QFormLayout.setRowVisible needs Qt >= 6.4)."""
    label = form.labelForField(field)
    if label is not None:
        label.setVisible(visible)
    field.setVisible(visible)


@dataclass(frozen=True)
class _Job:
    """What a run needs after it finishes, captured on the main thread when it starts."""

    image_id: Any
    image_name: str
    plan: _plan.Plan
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    axis_labels: tuple[str, ...]
    started: float
    units: tuple[Any, ...] | None = None  # the image's physical units (napari warns on a mix)
    store: Path | None = None  # a lazy run's labels store in the cache


def _layer_geometry(job: _Job) -> dict[str, Any]:
    """Where a new labels layer sits: the image's scale, translate, axis labels and units."""
    geometry: dict[str, Any] = {"scale": job.scale, "translate": job.translate}
    geometry["axis_labels"] = job.axis_labels
    if job.units is not None and len(job.units) == len(job.scale):
        geometry["units"] = job.units
    return geometry


class _ModelCombo(QComboBox):
    """A combo box that refreshes its items just before it opens (new saved models appear)."""

    about_to_show = Signal()

    def showPopup(self) -> None:
        self.about_to_show.emit()
        super().showPopup()


class SegmentWidget(QWidget):
    """Segment the chosen image layer with a U-Net into a Labels layer."""

    #: emitted on the main thread after a run ended (done, stopped or failed)
    run_finished = Signal()

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker = None
        self._job: _Job | None = None
        self._pbar: progress | None = None
        self._stop_requested = False
        self._latest: Progress | None = None
        self._showing = False
        self.model_state = model_state(napari_viewer)
        self._extra_models: list[tuple[str, str]] = []  # (label, path) loaded from files
        self._model_index = 0
        # labels layer id -> what we wrote there; shared so Fine-tune can tell edits from our writes
        self._written: dict[Any, _plan.Written] = self.model_state.written
        self._target_for: dict[Any, Any] = {}  # image id -> labels id
        self._stores: dict[Any, Path] = {}  # lazy labels layer id -> its store in the cache

        self.image_combo = QComboBox()
        self.axes_edit = QLineEdit()
        self.axes_edit.setToolTip("Axes of the image, letters T Z C Y X (e.g. ZYX, TYX, CYX, YXC)")
        self.channel_spin = QSpinBox()
        self.channel_spin.setToolTip("Which channel the model sees")
        self.model_combo = _ModelCombo()
        self.models_button = QToolButton()
        self.models_button.setText("\u22ef")
        self.models_button.setToolTip("Manage models: import, export, delete a saved version, roll back")
        self.models_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.models_button.setStyleSheet("QToolButton::menu-indicator { image: none; }")  # "⋯" says it
        menu = QMenu(self.models_button)
        self.import_action = menu.addAction("Import model file...")
        self.export_action = menu.addAction("Export selected model...")
        self.delete_action = menu.addAction("Delete selected version...")
        self.rollback_action = menu.addAction("Roll back to the bundled model")
        self.models_button.setMenu(menu)
        menu.aboutToShow.connect(self._update_model_actions)
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.01, 0.99)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setDecimals(2)
        self.threshold_spin.setToolTip("Foreground probability above which a pixel belongs to a nucleus")
        self.min_size_spin = QSpinBox()
        self.min_size_spin.setRange(0, 10_000_000)
        self.min_size_spin.setToolTip("Objects smaller than this (pixels, voxels in 3D) are dropped")
        self.diameter_spin = QDoubleSpinBox()
        self.diameter_spin.setRange(0.0, 500.0)
        self.diameter_spin.setDecimals(1)
        self.diameter_spin.setSingleStep(1.0)
        self.diameter_spin.setSpecialValueText("as trained")
        self.diameter_spin.setToolTip(
            "Typical nucleus diameter in this image (pixels). The image is rescaled so nuclei "
            "match the size the model was trained on (about 20 px for the bundled model); "
            "labels keep the image's size. 0 = as trained, no rescaling"
        )
        self.scope_combo = QComboBox()
        self.scope_combo.addItems(_plan.SCOPES)
        self.scope_combo.setToolTip(
            "Segment the plane shown in the viewer, the part of it visible in the canvas, or every "
            "plane of the stack (a lazy dask/zarr stack goes block by block into a zarr store on disk)"
        )
        self.segment_button = QPushButton("Segment")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("axes", self.axes_edit)
        form.addRow("channel", self.channel_spin)
        model_row = QHBoxLayout()
        model_row.setContentsMargins(0, 0, 0, 0)
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.models_button)
        form.addRow("model", model_row)
        form.addRow("threshold", self.threshold_spin)
        form.addRow("min size", self.min_size_spin)
        form.addRow("nucleus diameter (px)", self.diameter_spin)
        form.addRow("scope", self.scope_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.segment_button)
        buttons.addWidget(self.stop_button)
        outer = QVBoxLayout(self)
        outer.addLayout(form)
        outer.addLayout(buttons)
        outer.addWidget(self.status_label)
        outer.addStretch(1)
        self._form = form

        self.segment_button.clicked.connect(self.segment)
        self.stop_button.clicked.connect(self.stop)
        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        self.axes_edit.textChanged.connect(self._on_axes_changed)
        self.model_combo.activated.connect(self._on_model_activated)
        self.model_combo.about_to_show.connect(self._refresh_models)
        self.model_state.registry_changed.connect(self._refresh_models)
        self.import_action.triggered.connect(lambda: self.import_model_file())
        self.export_action.triggered.connect(lambda: self.export_selected())
        self.delete_action.triggered.connect(lambda: self.delete_selected())
        self.rollback_action.triggered.connect(self.use_bundled)
        self.model_state.selected.connect(self._on_model_selected_elsewhere)
        self.model_state.resegment_requested.connect(self._on_resegment_requested)

        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_layer_inserted)
        layers.events.removed.connect(self._refresh_images)
        layers.events.removed.connect(self._forget_store)
        layers.events.moved.connect(self._refresh_images)
        for layer in layers:
            layer.events.name.connect(self._refresh_images)

        self._refresh_models()
        start = self.model_combo.findData(self.model_state.path) if self.model_state.path else -1
        self._select_model_at(max(start, 0))
        self._refresh_images()
        # napari imports pandas & co. the first time any Labels layer is built (~0.3 s on the
        # GUI thread): pay it when the widget opens, not as a freeze when the first result lands
        Labels(np.zeros((1, 1), np.uint8))

    # ----------------------------------------------------------------- layers
    def _image_layers(self) -> list[Image]:
        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _layer_by_id(self, uid: Any) -> Any:
        return _plan.layer_by_id(self.viewer.layers, uid)

    def selected_image(self) -> Image | None:
        """The image layer chosen in the widget (None if there is none)."""
        return self._layer_by_id(self.image_combo.currentData())

    def _forget_store(self, event: Any) -> None:
        """A lazy labels layer was deleted: its store in the cache goes too (disk is not
        unlimited, and nothing else points at it; File > Save writes a copy elsewhere)."""
        path = self._stores.pop(getattr(event.value, "unique_id", None), None)
        if path is not None:
            _lazy.remove_store(path)

    def _on_layer_inserted(self, event: Any) -> None:
        event.value.events.name.connect(self._refresh_images)
        self._refresh_images()

    def _refresh_images(self, event: Any = None) -> None:
        """Mirror the viewer's image layers, keeping the current choice when it still exists."""
        current = self.image_combo.currentData()
        fill_layer_combo(self.image_combo, self._image_layers())
        if self.image_combo.currentData() != current:
            self._on_image_changed()
        self._update_enabled()

    def _on_image_changed(self, *_: Any) -> None:
        layer = self.selected_image()
        if layer is None:
            self.axes_edit.setText("")
            return
        try:
            axes = _plan.first_axes_guess(layer)
        except ValueError as exc:
            axes = ""
            self.status_label.setText(_one_line(exc))
        self.axes_edit.setText(axes)
        self._on_axes_changed()

    def _on_axes_changed(self, *_: Any) -> None:
        axes = self.axes_edit.text().strip().upper().replace("S", "C")
        layer = self.selected_image()
        shape = np.shape(_plan.full_resolution(layer)) if layer is not None else ()
        has_c = "C" in axes and len(axes) == len(shape)
        if has_c:
            self.channel_spin.setRange(0, int(shape[axes.index("C")]) - 1)
        _set_row_visible(self._form, self.channel_spin, has_c)
        stack = _plan.has_stack_axes(axes) if len(axes) == len(shape) else False
        _set_row_visible(self._form, self.scope_combo, stack)

    # ----------------------------------------------------------------- models
    def _refresh_models(self) -> None:
        from napari_unet.models.registry import list_models

        current = self.model_combo.currentData()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for info in list_models():
            label = f"{info.name} (bundled)" if info.bundled else info.name
            self.model_combo.addItem(label, str(info.path))
        for label, path in self._extra_models:
            self.model_combo.addItem(label, path)
        self.model_combo.addItem(LOAD_FROM_FILE, None)
        index = self.model_combo.findData(current) if current is not None else -1
        self.model_combo.setCurrentIndex(max(index, 0))
        self._model_index = self.model_combo.currentIndex()
        self.model_combo.blockSignals(False)
        if current is not None and index < 0:  # the selected model was deleted elsewhere
            self._select_model_at(0)

    def _on_model_activated(self, index: int) -> None:
        if self.model_combo.itemData(index) is None:
            self.model_combo.setCurrentIndex(self._model_index)
            path = self._ask_model_file()
            if path:
                self.load_model_file(path)
            return
        self._select_model_at(index)

    def _update_model_actions(self) -> None:
        self.delete_action.setEnabled(self._selected_version() is not None)
        self.rollback_action.setEnabled(self._model_index != 0)

    def _selected_version(self) -> str | None:
        """Name of the selected model if it is a saved version (the only kind one may delete)."""
        from napari_unet.models.registry import list_models

        path = self.model_combo.itemData(self._model_index)
        return next((i.name for i in list_models() if not i.bundled and str(i.path) == path), None)

    def import_model_file(self, path: str | Path | None = None) -> bool:
        """Copy a model file into the saved models (checked first) and select it."""
        from napari_unet.models.model_file import ModelFileError
        from napari_unet.models.registry import import_model

        path = path or self._ask_model_file()
        if not path:
            return False
        try:
            info = import_model(path)
        except (ModelFileError, OSError, ValueError) as exc:
            show_error(f"napari-unet: cannot import {Path(path).name}: {_one_line(exc)}")
            return False
        self.model_state.changed()
        self._select_model_at(self.model_combo.findData(str(info.path)))
        show_info(f"napari-unet: imported {Path(path).name} as {info.name}")
        return True

    def export_selected(self, path: str | Path | None = None) -> Path | None:
        """Write the selected model to a file the user picks (to share or archive it)."""
        from napari_unet.models.model_file import ModelFileError
        from napari_unet.models.registry import export_model

        src = self.model_combo.itemData(self._model_index)
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self, "Export napari-unet model", Path(src).name, MODEL_FILE_FILTER
            )
        if not path:
            return None
        try:
            dest = export_model(src, path)
        except (ModelFileError, OSError, ValueError) as exc:
            show_error(f"napari-unet: cannot export: {_one_line(exc)}")
            return None
        show_info(f"napari-unet: model written to {dest}")
        return dest

    def delete_selected(self, confirm: bool = True) -> bool:
        """Delete the selected saved version and go back to the bundled model."""
        from napari_unet.models.registry import delete_model

        name = self._selected_version()
        if name is None:
            show_warning("napari-unet: only saved versions can be deleted (not the bundled model or a file)")
            return False
        if confirm:
            answer = QMessageBox.question(self, "Delete model", f"Delete the saved model {name!r}?")
            if answer != QMessageBox.StandardButton.Yes:
                return False
        path = self.model_combo.itemData(self._model_index)
        try:
            delete_model(name)
        except (OSError, ValueError) as exc:
            show_error(f"napari-unet: cannot delete {name}: {_one_line(exc)}")
            return False
        self.model_state.forget(path)
        self.model_state.changed()
        self.use_bundled()
        show_info(f"napari-unet: deleted {name}; using the bundled model")
        return True

    def use_bundled(self) -> None:
        """Roll back: segment with the bundled model again (saved versions are kept)."""
        self._refresh_models()
        self._select_model_at(0)

    def _ask_model_file(self) -> str | None:
        """The file dialog, apart so tests can replace it."""
        path, _ = QFileDialog.getOpenFileName(self, "Load a napari-unet model", "", MODEL_FILE_FILTER)
        return path or None

    def _load(self, path: str) -> Model:
        """Load (and cache, shared with Fine-tune) a model; a changed file is read again."""
        return self.model_state.load(path)

    def _on_model_selected_elsewhere(self, path: str) -> None:
        """Fine-tune saved a version (or another widget chose a model): use it from now on."""
        if path == self.model_combo.itemData(self._model_index):
            return
        self._refresh_models()
        index = self.model_combo.findData(path)
        if index < 0:  # a file outside the model folder: list it like "Load from file..."
            self.load_model_file(path)
        else:
            self._select_model_at(index)

    def load_model_file(self, path: str | Path) -> bool:
        """Add a model file to the chooser and select it; a bad file is reported, not raised."""
        from napari_unet.models.model_file import ModelFileError

        try:
            model = self._load(str(path))
        except (ModelFileError, OSError) as exc:
            show_error(f"napari-unet: {_one_line(exc)}")
            self.status_label.setText("model not loaded")
            return False
        entry = (f"{model.name} ({Path(path).name})", str(Path(path)))
        if entry not in self._extra_models:
            self._extra_models.append(entry)
        self._refresh_models()
        self._select_model_at(self.model_combo.findData(entry[1]))
        return True

    def _select_model_at(self, index: int) -> None:
        """Make ``index`` current and take threshold / min size from its model card."""
        from napari_unet.engine.postprocess import PostprocessParams
        from napari_unet.models.model_file import ModelFileError

        if index < 0 or self.model_combo.itemData(index) is None:
            return
        self.model_combo.setCurrentIndex(index)
        self._model_index = index
        self.model_state.select(self.model_combo.itemData(index))
        defaults = PostprocessParams()
        try:
            card = self._load(self.model_combo.itemData(index)).card
        except (ModelFileError, OSError) as exc:
            card = {}
            self.status_label.setText(_one_line(exc))
        post = card.get("postprocess") or {}
        self.threshold_spin.setValue(float(post.get("threshold", defaults.threshold)))
        self.min_size_spin.setValue(int(post.get("min_size", defaults.min_size)))

    def selected_model(self) -> Model:
        """The chosen model, loaded; raises ModelFileError when its file is unusable."""
        return self._load(self.model_combo.itemData(self._model_index))

    def postprocess_params(self, model: Model) -> PostprocessParams:
        """The widget's threshold and min size; the seed settings come from the model card."""
        from napari_unet.engine.postprocess import PostprocessParams

        d = PostprocessParams()
        post = model.card.get("postprocess") or {}
        return PostprocessParams(
            threshold=float(self.threshold_spin.value()),
            seed_threshold=float(post.get("seed_threshold", d.seed_threshold)),
            min_size=int(self.min_size_spin.value()),
            min_seed_size=int(post.get("min_seed_size", d.min_seed_size)),
        )

    def predict_config(self) -> PredictConfig:
        """The engine's defaults (its tiles are small enough for a progress step and a Stop
        point every fraction of a second) plus the nucleus diameter (0 = as trained)."""
        from napari_unet.engine.predict import PredictConfig

        diameter = float(self.diameter_spin.value())
        return PredictConfig(diameter=diameter if diameter > 0 else None)

    # -------------------------------------------------------------------- run
    def _update_enabled(self) -> None:
        running = self.worker is not None
        self.segment_button.setEnabled(not running and self.image_combo.count() > 0)
        self.stop_button.setEnabled(running and not self._stop_requested)

    def segment(self) -> None:
        """Start a run: copy what it needs from the layers here, compute in a worker."""
        from napari_unet.common.axes import AxesError, validate_axes
        from napari_unet.models.model_file import ModelFileError

        if self.worker is not None:
            return
        layer = self.selected_image()
        if layer is None:
            show_warning("napari-unet: no image layer to segment")
            return
        data = _plan.full_resolution(layer)
        try:
            axes = validate_axes(self.axes_edit.text().strip().upper(), tuple(np.shape(data)))
            model = self.selected_model()
        except (AxesError, ModelFileError, OSError) as exc:
            show_error(f"napari-unet: {_one_line(exc)}")
            self.status_label.setText(f"error: {_one_line(exc)}")
            return
        position = layer.world_to_data(self.viewer.dims.point)
        scope = self.scope_combo.currentText()
        view = self._visible_box(layer, axes) if scope == _plan.SCOPE_VIEW else None
        plan = _plan.plan_segmentation(np.shape(data), axes, scope, position, view)
        lazy = not plan.is_slice and _lazy.is_lazy(data)  # never loaded whole: chunked, to disk
        # materialise (dask, zarr) and detach from the layer on this thread: the worker must
        # never read a layer. A plane is copied; a whole stack is not duplicated in memory.
        image = data if lazy else np.array(data[plan.source]) if plan.is_slice else np.asarray(data)
        kept_axes = axes if not layer.rgb else axes[:-1]  # napari's scale has no RGB entry
        self._job = _Job(
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
        # a one-channel model sees the chosen channel; a multi-channel model takes them all
        one = model.config.in_channels == 1
        channel = int(self.channel_spin.value()) if "C" in plan.axes and one else None
        job_args = (
            (segment_lazy_job, image, plan.axes, self._job.store, axes)
            if lazy
            else (segment_job, image, plan.axes, not plan.is_slice)
        )
        worker = create_worker(
            *job_args,
            model=model,
            channel=channel,
            params=self.postprocess_params(model),
            config=_with_anisotropy(self.predict_config(), self._job.scale, plan.axes),
            _start_thread=False,
            _ignore_errors=True,
        )
        worker.finished.connect(_gc.defer_full_collections())  # see _gc: no 250 ms full GC mid-run
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._stop_requested = False
        self._pbar = progress(total=0, desc=f"Segmenting {layer.name}")
        self.status_label.setText(f"segmenting {layer.name}...")
        self._update_enabled()
        worker.start()

    def stop(self) -> None:
        """Ask the worker to stop at its next tile; nothing is written."""
        if self.worker is None:
            return
        self._stop_requested = True
        self.worker.quit()
        self.status_label.setText("stopping after the current tile...")
        self._update_enabled()

    def _on_progress(self, p: Progress) -> None:
        """Show a tile's progress. napari's progress bar calls processEvents() on every
        update, so this handler can be re-entered (and the run can even finish) inside
        itself: nested calls only record the newest value, the outer call shows it."""
        self._latest = p
        if self._showing:
            return
        self._showing = True
        try:
            while self._latest is not None and self._pbar is not None and not self._stop_requested:
                p, self._latest = self._latest, None
                self._show_progress(self._pbar, p)
        finally:
            self._showing = False

    def _show_progress(self, pbar: progress, p: Progress) -> None:
        text = "post-processing..." if p.stage == "postprocess" else f"predicting: tile {p.done}/{p.total}"
        self.status_label.setText(text)
        if pbar.total != p.total:
            pbar.total = p.total
        if self._pbar is pbar:
            pbar.n = p.done
            pbar.update(0)
        if self._pbar is pbar and pbar.desc.rstrip(": ") != text.split(":")[0]:
            pbar.set_description(text.split(":")[0])

    def _on_returned(self, result: JobResult) -> None:
        job = self._job
        if self._stop_requested or job is None:
            return
        name = self._write(job, result)
        seconds = time.perf_counter() - job.started
        self.status_label.setText(f"{result.n_objects} objects in '{name}' ({seconds:.1f} s)")

    def _on_errored(self, exc: BaseException) -> None:
        show_error(f"napari-unet: segmentation failed: {_one_line(exc)}")
        self.status_label.setText(f"error: {_one_line(exc)}")

    def _on_finished(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        if self._stop_requested:
            self.status_label.setText("stopped: nothing written")
        self.worker = None  # drops the generator, which closes iter_segment
        self._job = None
        self._stop_requested = False
        self._update_enabled()
        self.run_finished.emit()

    # ----------------------------------------------------------------- result
    def _target_layer(self, job: _Job) -> Any:
        """The labels layer a re-run should update: the one we last wrote for this image, or
        (first run) a layer already named '<image> labels'."""
        uid = self._target_for.get(job.image_id)
        layer = self._layer_by_id(uid) if uid is not None else None
        if layer is None:
            name = f"{job.image_name} labels"
            layer = next((lyr for lyr in self.viewer.layers if lyr.name == name), None)
        return layer if isinstance(layer, Labels) else None

    def _write(self, job: _Job, result: JobResult) -> str:
        """Put the result into the target labels layer, never over edits; returns its name."""
        if not isinstance(result.labels, np.ndarray):  # a lazy stack's labels: a store on disk
            return self._add_lazy_labels(job, result)
        plan = job.plan
        labels = np.asarray(result.labels)
        target = self._target_layer(job)
        current = None
        if target is not None:
            current = np.asarray(target.data)
            written = self._written.get(target.unique_id)
            if (
                current.shape != plan.labels_shape
                or written is None
                or not _plan.untouched_since_written(current, written, plan.target)
            ):
                kept = target.name
                target, current = None, None
            else:
                kept = None
        else:
            kept = None
        same_as_result = False  # does the layer now hold exactly ``result.labels``?
        if target is None:
            full = _plan.merge_result(None, labels, plan)
            same_as_result = full is labels
            name = _plan.next_free_name(f"{job.image_name} labels", [lyr.name for lyr in self.viewer.layers])
            target = self.viewer.add_labels(full, name=name, **_layer_geometry(job))
            if kept is not None:
                show_info(
                    f"napari-unet: '{kept}' was edited or not written by napari-unet; "
                    f"kept it and wrote the result to '{name}'"
                )
        elif plan.is_slice:
            values = _plan.slice_values(current, labels, plan)
            if values.dtype == current.dtype:
                local = np.nonzero(current[plan.target] != values)
                # one undo step (Ctrl+Z) restores the slice
                target.data_setitem(_plan.full_indices(plan.target, local), values[local])
            else:
                full = current.astype(values.dtype)
                full[plan.target] = values
                target.data = full
        else:
            full = _plan.merge_result(current, labels, plan)
            same_as_result = full.dtype == current.dtype
            idx = _plan.changed_indices(current, full) if same_as_result else ()
            if same_as_result and idx[0].size <= _plan.MAX_UNDO_PIXELS:
                target.data_setitem(idx, full[idx])  # one undo step (Ctrl+Z) restores the old labels
            else:
                target.data = full
        self._written[target.unique_id] = self._record(target, plan, result, same_as_result)
        self._target_for[job.image_id] = target.unique_id
        return target.name

    def _add_lazy_labels(self, job: _Job, result: JobResult) -> str:
        """A new Labels layer backed by the zarr store (never merged into an existing layer:
        comparing it with one would read the whole stack)."""
        name = _plan.next_free_name(f"{job.image_name} labels", [lyr.name for lyr in self.viewer.layers])
        layer = self.viewer.add_labels(result.labels, name=name, **_layer_geometry(job))
        self._target_for[job.image_id] = layer.unique_id
        if job.store is not None:
            self._stores[layer.unique_id] = job.store
        return layer.name

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

    def _record(self, layer: Any, plan: _plan.Plan, result: JobResult, same_as_result: bool) -> _plan.Written:
        """Add what the layer holds now to the record used to recognise user edits.

        Whole-stack results were fingerprinted in the worker; when the layer holds exactly
        that array, only the (cheap) slice case hashes anything on the GUI thread."""
        data = np.asarray(layer.data)
        before = self._written.get(layer.unique_id)
        if not plan.is_slice:
            same = same_as_result and result.fingerprint is not None and data.dtype == result.labels.dtype
            return _plan.remember(before, result.fingerprint if same else _plan.fingerprint(data))
        if before is None or len(before) < len(_plan.plane_indices(data.shape)):
            return _plan.remember(before, _plan.fingerprint(data))  # a new layer: every plane
        return _plan.remember(before, _plan.fingerprint(data, _plan.plane_indices(data.shape, plan.target)))

    def _on_resegment_requested(self, image_id: Any) -> None:
        """Fine-tune saved a model: segment its image again (edited labels are never overwritten)."""
        index = self.image_combo.findData(image_id)
        if index >= 0:
            self.image_combo.setCurrentIndex(index)
        self.segment()

    def closeEvent(self, event: Any) -> None:
        self.stop()
        super().closeEvent(event)
