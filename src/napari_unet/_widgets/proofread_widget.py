"""Proofread: correct a labels layer in clicks with the U-Net's own probabilities.

With *Proofread* on, the chosen labels layer is put in pan/zoom mode and listens to clicks:

- click on background: add the object the model supports there;
- click on an object, then on another: merge them (click the first again to let go);
- Ctrl-click (Cmd on macOS) on an object: delete it (through z in a z-stack);
- Shift-click two or more points inside one object, then Enter: split it (Esc forgets them).

Each edit is one ``data_setitem`` call: one napari undo step (Ctrl+Z) and the paint event that
makes Fine-tune count the plane as edited. The work is :class:`napari_unet.proofread.Session`;
the probabilities of the plane shown are computed once in a worker (the first click on a plane
that has none starts it) and kept, so a click costs a few milliseconds. They are computed with
the settings Segment last used on that image (diameter, thresholds, channel), so a click sees
what Segment saw.
"""

from __future__ import annotations

import time
from typing import Any

import napari
import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from qtpy.QtWidgets import QComboBox, QFormLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_unet._widgets import _notify, _plan
from napari_unet._widgets._choosers import fill_layer_combo
from napari_unet._widgets._model_state import model_state
from napari_unet.common.axes import AxesError
from napari_unet.engine.config import PredictConfig
from napari_unet.models.model_file import ModelFileError
from napari_unet.proofread import Edit, ProofreadError, Session

SHORTCUTS = (
    "click background: add  ·  click two objects: merge\n"
    "Ctrl-click: delete  ·  Shift-click points + Enter: split (Esc: clear)\n"
    "Ctrl+Z: undo the last edit"
)
DRAG_PX = 4  # a press that moves further than this (screen px) is a pan, not a click


class ProofreadWidget(QWidget):
    """Click tools on a labels layer, guided by the probabilities of the image it was made from."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.model_state = model_state(napari_viewer)
        self.session: Session | None = None
        self._layer: Labels | None = None
        self._key: tuple[Any, Any, str] | None = None  # (labels id, image id, axes) of the session
        self._split_points: list[tuple[float, ...]] = []
        self._merge_first: tuple[float, ...] | None = None
        self._worker: Any = None
        self._computing: tuple[int, ...] | None = None
        self.last_edit_ms: float | None = None  # the last click's cost, for the benchmark
        self._t0 = 0.0

        self.labels_combo = QComboBox()
        self.image_combo = QComboBox()
        self.toggle_button = QPushButton("Proofread")
        self.toggle_button.setCheckable(True)
        self.toggle_button.setToolTip("Turn the click tools on the chosen labels layer on or off")
        self.help_label = QLabel(SHORTCUTS)
        self.help_label.setWordWrap(True)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        form = QFormLayout()
        form.addRow("labels", self.labels_combo)
        form.addRow("image", self.image_combo)
        box = QVBoxLayout(self)
        box.addLayout(form)
        box.addWidget(self.toggle_button)
        box.addWidget(self.help_label)
        box.addWidget(self.status_label)
        box.addStretch(1)

        self.toggle_button.toggled.connect(self._on_toggled)
        self.labels_combo.currentIndexChanged.connect(self._on_choice_changed)
        self.image_combo.currentIndexChanged.connect(self._on_choice_changed)
        layers = self.viewer.layers
        layers.events.inserted.connect(self._refresh_layers)
        layers.events.removed.connect(self._refresh_layers)
        self.viewer.dims.events.current_step.connect(self._on_plane_changed)
        self.model_state.selected.connect(self._on_model_changed)
        self._refresh_layers()

    # ------------------------------------------------------------------ layers
    def _refresh_layers(self, event: Any = None) -> None:
        layers = list(self.viewer.layers)
        fill_layer_combo(self.labels_combo, [ly for ly in layers if isinstance(ly, Labels)])
        fill_layer_combo(self.image_combo, [ly for ly in layers if isinstance(ly, Image)])
        if self._layer is not None and self._layer not in self.viewer.layers:
            self.toggle_button.setChecked(False)
        self.toggle_button.setEnabled(self.labels_combo.count() > 0 and self.image_combo.count() > 0)

    def _chosen(self, combo: QComboBox) -> Any:
        return _plan.layer_by_id(self.viewer.layers, combo.currentData())

    def _on_model_changed(self, path: str = "") -> None:
        """Another model chosen in Segment (or a fine-tune saved): its probabilities from now on."""
        self.session, self._key = None, None
        if self.toggle_button.isChecked() and self._worker is None:
            self.toggle_button.setChecked(False)
            self.toggle_button.setChecked(True)

    def _on_choice_changed(self) -> None:
        if self.toggle_button.isChecked():  # start over on the new pair
            self.toggle_button.setChecked(False)

    # ---------------------------------------------------------------- on / off
    def _on_toggled(self, on: bool) -> None:
        if on:
            if not self._start():
                self.toggle_button.blockSignals(True)
                self.toggle_button.setChecked(False)
                self.toggle_button.blockSignals(False)
        else:
            self._stop()

    def _session_for(self, labels: Labels, image: Image) -> Session:
        data = _plan.full_resolution(image)
        axes = _plan.first_axes_guess(image)
        # the settings Segment last ran this image with: the probabilities it saw
        params, config, channel = self.model_state.segmented_with.get(
            image.unique_id, (None, PredictConfig(), None)
        )
        key = (labels.unique_id, image.unique_id, axes, id(config))
        if self.session is not None and self._key == key and self.session.labels is labels.data:
            return self.session
        if not isinstance(labels.data, np.ndarray):
            raise ProofreadError("proofreading needs labels held in memory (this layer is read lazily)")
        model = self.model_state.load()
        session = Session(
            data,
            labels.data,
            model=model,
            axes=axes,
            channel=channel,
            params=params,
            config=config,
            copy=False,
        )
        self.session, self._key = session, key
        return session

    def _start(self) -> bool:
        labels, image = self._chosen(self.labels_combo), self._chosen(self.image_combo)
        if labels is None or image is None:
            _notify.warning("choose a labels layer and the image it was made from")
            return False
        try:
            self._session_for(labels, image)
        except (ProofreadError, AxesError, ModelFileError, OSError, ValueError) as exc:
            _notify.error(_plan.one_line(exc))
            self.status_label.setText(f"error: {_plan.one_line(exc)}")
            return False
        self._layer = labels
        labels.mode = "pan_zoom"
        labels.mouse_drag_callbacks.append(self._on_mouse)
        labels.bind_key("Enter", self._on_enter, overwrite=True)
        labels.bind_key("Escape", self._on_escape, overwrite=True)
        labels.events.paint.connect(self._on_paint)
        self.viewer.layers.selection.active = labels
        self.status_label.setText(f"proofreading '{labels.name}'")
        self._prepare_plane()
        return True

    def _stop(self) -> None:
        layer, self._layer = self._layer, None
        self._split_points, self._merge_first = [], None
        if layer is None:
            return
        if self._on_mouse in layer.mouse_drag_callbacks:
            layer.mouse_drag_callbacks.remove(self._on_mouse)
        for key in ("Enter", "Escape"):
            layer.bind_key(key, None, overwrite=True)
        layer.events.paint.disconnect(self._on_paint)
        self.status_label.setText("proofreading off")

    def closeEvent(self, event: Any) -> None:
        self.toggle_button.setChecked(False)
        super().closeEvent(event)

    # ------------------------------------------------------------ probabilities
    def _current_lead(self) -> tuple[int, ...]:
        assert self._layer is not None and self.session is not None
        point = self._layer.world_to_data(self.viewer.dims.point)
        return tuple(round(float(c)) for c in point[: len(self.session.lead_axes)])

    def _on_plane_changed(self, event: Any = None) -> None:
        if self._layer is not None:
            self._split_points, self._merge_first = [], None
            self._prepare_plane()

    def _prepare_plane(self) -> None:
        """Compute the shown plane's probabilities in a worker unless they are at hand."""
        if self.session is None or self._layer is None or self._worker is not None:
            return
        lead = self._current_lead()
        if self.session.has_probabilities(lead):
            return
        self._computing = lead
        self.status_label.setText("computing this plane's probabilities...")
        worker = create_worker(
            self.session.iter_probabilities, lead, _start_thread=False, _ignore_errors=True
        )
        worker.errored.connect(self._on_worker_error)
        worker.finished.connect(self._on_worker_finished)
        self._worker = worker
        worker.start()

    def _on_worker_error(self, exc: BaseException) -> None:
        _notify.error(f"proofreading cannot compute probabilities: {_plan.one_line(exc)}")
        self.status_label.setText(f"error: {_plan.one_line(exc)}")

    def _on_worker_finished(self) -> None:
        self._worker, done = None, self._computing
        self._computing = None
        if self._layer is None or self.session is None:
            return
        if done is not None and self.session.has_probabilities(done):
            self.status_label.setText(f"proofreading '{self._layer.name}': ready")
        self._prepare_plane()  # the user may have moved to another plane meanwhile

    @property
    def busy(self) -> bool:
        """Whether probabilities are being computed."""
        return self._worker is not None

    # ------------------------------------------------------------------ clicks
    def _on_mouse(self, layer: Labels, event: Any) -> Any:
        """A press without a drag is a click; a drag pans as usual."""
        start = np.asarray(event.pos, float)
        yield
        while event.type == "mouse_move":
            if np.abs(np.asarray(event.pos, float) - start).max() > DRAG_PX:
                return
            yield
        point = tuple(float(c) for c in layer.world_to_data(event.position))
        self.click(point, set(event.modifiers))

    def click(self, point: tuple[float, ...], modifiers: set[str] | frozenset[str] = frozenset()) -> None:
        """Act on a click at ``point`` (labels data coordinates) with keyboard ``modifiers``."""
        if self.session is None or self._layer is None:
            return
        self._t0 = time.perf_counter()
        mods = {str(m).lower() for m in modifiers}
        try:
            if "shift" in mods:
                self._split_points.append(point)
                n = len(self._split_points)
                self.status_label.setText(f"split: {n} point{'s' * (n > 1)} (Enter splits, Esc clears)")
                return
            if "control" in mods or "meta" in mods:
                self._apply(self.session.plan_delete(point))
                return
            oid = self.session.object_at(point)
            if oid == 0:
                self._merge_first = None
                if not self._ready(point):
                    return
                self._apply(self.session.plan_add(point))
            elif self._merge_first is None or self.session.object_at(self._merge_first) in (0, oid):
                self._merge_first = None if self._merge_first is not None else point
                self._layer.selected_label = oid
                state = (
                    f"object {oid} chosen: click another to merge" if self._merge_first else "merge: let go"
                )
                self.status_label.setText(state)
            else:
                first, self._merge_first = self._merge_first, None
                self._apply(self.session.plan_merge([first, point]))
        except ProofreadError as exc:
            self._refuse(exc)

    def _ready(self, point: tuple[float, ...]) -> bool:
        """Whether the point's plane has probabilities; if not, start computing them and say so."""
        assert self.session is not None
        lead, _ = self.session.split_point(point)
        if self.session.has_probabilities(lead):
            return True
        self._prepare_plane()
        msg = "computing this plane's probabilities: click again in a moment"
        _notify.info(msg)
        self.status_label.setText(msg)
        return False

    def _on_enter(self, layer: Labels) -> None:
        points, self._split_points = self._split_points, []
        self._t0 = time.perf_counter()
        if self.session is None:
            return
        try:
            if len(points) < 2:
                raise ProofreadError("split needs two or more points: Shift-click inside the object first")
            if not self._ready(points[0]):
                self._split_points = points
                return
            self._apply(self.session.plan_split(points))
        except ProofreadError as exc:
            self._refuse(exc)

    def _refuse(self, exc: ProofreadError) -> None:
        """A tool could not act: say why, in the notification and the status line."""
        _notify.warning(str(exc))
        self.status_label.setText(str(exc))

    def _on_escape(self, layer: Labels) -> None:
        self._split_points, self._merge_first = [], None
        self.status_label.setText("points cleared")

    def _apply(self, edit: Edit) -> None:
        """One undoable napari edit (and a paint event: Fine-tune counts the plane as edited)."""
        assert self._layer is not None and self.session is not None
        self._layer.data_setitem(edit.indices(), edit.values())  # its paint event: _on_paint
        self.session.record(edit)
        self.last_edit_ms = (time.perf_counter() - self._t0) * 1000  # click to edit shown
        self.status_label.setText(edit.message)

    def _on_paint(self, event: Any = None) -> None:
        if self.session is not None:
            self.session.note_external_edit()
