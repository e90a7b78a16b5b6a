"""Fine-tune's list of planes used: the slices / frames the user edited or added as reviewed.

Each brush, fill or eraser stroke on a labels layer is classified once Segment has recorded
what it wrote (Segment's own write also sends a paint event, and comes first): a plane that
differs from Segment's output is an edit. Only the ticked planes are trained on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from . import _finetune_plan as fp
from . import _plan


class PlanesPanel(QWidget):
    """The edited planes of each labels layer (ticked = used), shown for the chosen one."""

    def __init__(
        self,
        viewer: Any,
        written: dict[Any, Any],
        labels_id: Callable[[], Any],
        lead: Callable[[], str],
    ) -> None:
        super().__init__()
        self.viewer = viewer
        self._written = written  # Segment's record (ModelState.written)
        self._labels_id = labels_id  # the chosen labels layer's id
        self._lead = lead  # its stack axes (T / Z), '' without a stack
        self._planes: dict[Any, dict[fp.Plane, bool]] = {}  # labels id -> plane -> used
        self._pending: dict[Any, set[fp.Plane]] = {}  # labels id -> painted, not yet classified

        self.planes_label = QLabel("planes used (edited or added)")
        self.planes_list = QListWidget()
        self.planes_list.setMaximumHeight(110)
        self.planes_list.setToolTip("Only these slices / frames are trained on; untick or remove to skip one")
        self.add_plane_button = QPushButton("Add current plane")
        self.add_plane_button.setToolTip("Use the plane on screen as reviewed, even if you did not edit it")
        self.remove_plane_button = QPushButton("Remove")
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_plane_button)
        buttons.addWidget(self.remove_plane_button)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self.planes_label)
        box.addWidget(self.planes_list)
        box.addLayout(buttons)
        self._parts = (self.planes_label, self.planes_list, self.add_plane_button, self.remove_plane_button)

        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(0)
        self._flush_timer.timeout.connect(self._flush_pending)
        self.add_plane_button.clicked.connect(self.add_current_plane)
        self.remove_plane_button.clicked.connect(self.remove_selected_planes)
        self.planes_list.itemChanged.connect(self._on_plane_item_changed)

    def on_paint(self, event: Any) -> None:
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
            layer = _plan.layer_by_id(self.viewer.layers, uid)
            if layer is None:
                continue
            written = self._written.get(uid)
            data = layer.data
            used = self._planes.setdefault(uid, {})
            for p in planes:
                if p in used or fp.is_segment_output(data, p, written):
                    continue
                used[p] = True
                changed = True
        if changed:
            self.refresh()

    def used_planes(self) -> list[fp.Plane]:
        """The ticked planes of the chosen labels layer (after classifying pending strokes)."""
        self._flush_pending()
        uid = self._labels_id()
        return sorted(p for p, on in self._planes.get(uid, {}).items() if on)

    def refresh(self) -> None:
        """Show the chosen labels' planes (the panel hides without a stack)."""
        lead = self._lead()
        for w in self._parts:
            w.setVisible(bool(lead))
        self.planes_list.blockSignals(True)
        self.planes_list.clear()
        if lead:
            uid = self._labels_id()
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
        self._planes.setdefault(self._labels_id(), {})[plane] = item.checkState() == Qt.CheckState.Checked

    def current_plane(self) -> fp.Plane | None:
        """The plane of the chosen labels layer shown in the viewer (None without a stack)."""
        layer = _plan.layer_by_id(self.viewer.layers, self._labels_id())
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
        uid = self._labels_id()
        if plane is None or uid is None:
            return
        self._planes.setdefault(uid, {})[plane] = True
        self.refresh()

    def remove_selected_planes(self) -> None:
        uid = self._labels_id()
        for item in self.planes_list.selectedItems():
            self._planes.get(uid, {}).pop(tuple(item.data(Qt.ItemDataRole.UserRole)), None)
        self.refresh()
