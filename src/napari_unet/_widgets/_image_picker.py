"""The image, its axes and the channel the model sees: the top rows of both docks.

Segment and Fine-tune ask the same three things about their input; this part asks them once.
Axes are guessed when an image is chosen and may then be corrected by the user; the channel
row only shows when the axes have a channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from napari.layers import Image
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QFormLayout, QLineEdit, QSpinBox, QWidget

from napari_unet.common.axes import AxesError, validate_axes

from . import _plan
from ._choosers import fill_layer_combo

AXES_HELP = "Axes of the image, letters T Z C Y X (e.g. ZYX, TYX, CYX, YXC)"


def set_row_visible(form: QFormLayout, field: QWidget, visible: bool) -> None:
    """Show or hide a form row (QFormLayout.setRowVisible needs Qt >= 6.4)."""
    label = form.labelForField(field)
    if label is not None:
        label.setVisible(visible)
    field.setVisible(visible)


class ImagePicker(QWidget):
    """Image layer chooser, axes editor and channel spin box, in a form other rows may join."""

    #: an image was chosen, before its axes are guessed (Fine-tune follows with its labels)
    image_chosen = Signal()
    #: the axes text changed (the channel row is already updated)
    axes_changed = Signal()
    #: something to tell the user in the dock's status line
    problem = Signal(str)

    def __init__(self, viewer: Any, strict_channel: bool, axes_help: str = AXES_HELP) -> None:
        super().__init__()
        self.viewer = viewer
        self._strict = strict_channel  # see _plan.channel_axis
        self.image_combo = QComboBox()
        self.axes_edit = QLineEdit()
        self.axes_edit.setToolTip(axes_help)
        self.channel_spin = QSpinBox()
        self.channel_spin.setToolTip("Which channel the model sees")
        self.form = QFormLayout(self)
        self.form.setContentsMargins(0, 0, 0, 0)
        self.form.addRow("image", self.image_combo)
        self.form.addRow("axes", self.axes_edit)
        self.form.addRow("channel", self.channel_spin)
        self.image_combo.currentIndexChanged.connect(self.on_image_changed)
        self.axes_edit.textChanged.connect(self.on_axes_changed)

    def insert_rows(self, rows: Sequence[tuple[str, QWidget]]) -> None:
        """Put more choosers right under the image row (Fine-tune's labels and regions)."""
        for i, (label, widget) in enumerate(rows):
            self.form.insertRow(1 + i, label, widget)

    # ------------------------------------------------------------------ layers
    def selected_image(self) -> Image | None:
        """The image layer chosen (None if there is none)."""
        return _plan.layer_by_id(self.viewer.layers, self.image_combo.currentData())

    def has_images(self) -> bool:
        return self.image_combo.count() > 0

    def fill(self, layers: Sequence[Any]) -> bool:
        """List the viewer's image layers (no signal); True when the chosen image changed."""
        current = self.image_combo.currentData()
        fill_layer_combo(self.image_combo, [lyr for lyr in layers if isinstance(lyr, Image)])
        return self.image_combo.currentData() != current

    def choose(self, image_id: Any) -> None:
        """Select an image layer by id, when it is listed."""
        index = self.image_combo.findData(image_id)
        if index >= 0:
            self.image_combo.setCurrentIndex(index)

    # -------------------------------------------------------------------- axes
    def shape(self) -> tuple[int, ...]:
        """The chosen image's full-resolution shape; () without an image."""
        layer = self.selected_image()
        return tuple(np.shape(_plan.full_resolution(layer))) if layer is not None else ()

    def typed_axes(self) -> str:
        """The axes as typed, upper case, S written as C (not checked against the image)."""
        return self.axes_edit.text().strip().upper().replace("S", "C")

    def validated(self, shape: tuple[int, ...]) -> str:
        """The typed axes checked against ``shape``; raises ``AxesError``."""

        return validate_axes(self.axes_edit.text().strip().upper(), shape)

    def axes(self) -> str | None:
        """The typed axes if they fit the chosen image; None otherwise."""

        if self.selected_image() is None:
            return None
        try:
            return self.validated(self.shape())
        except AxesError:
            return None

    def channel(self) -> int:
        return int(self.channel_spin.value())

    def set_editable(self, editable: bool) -> None:
        """Lock the image and its axes while a run uses them."""
        self.image_combo.setEnabled(editable)
        self.axes_edit.setEnabled(editable)

    def on_image_changed(self, *_: Any) -> None:
        """Guess the new image's axes (the user may correct them)."""
        self.image_chosen.emit()
        layer = self.selected_image()
        if layer is None:
            self.axes_edit.setText("")
        else:
            try:
                axes = _plan.first_axes_guess(layer)
            except ValueError as exc:
                axes = ""
                self.problem.emit(_plan.one_line(exc))
            self.axes_edit.setText(axes)
        self.on_axes_changed()

    def on_axes_changed(self, *_: Any) -> None:
        shape = self.shape()
        axis = _plan.channel_axis(self.axes_edit.text(), shape, self._strict)
        if axis is not None:
            self.channel_spin.setRange(0, int(shape[axis]) - 1)
        set_row_visible(self.form, self.channel_spin, axis is not None)
        self.axes_changed.emit()
