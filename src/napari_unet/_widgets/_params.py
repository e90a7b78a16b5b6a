"""The docks' typed parameter forms, built with magicgui and embedded through ``.native``.

A form of numbers with ranges, steps and tooltips is what magicgui's widgets are for; the
docks keep the Qt spin boxes (``widget.native``) as attributes, so scripts and tests that
call ``setValue`` on them still work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, SpinBox
from qtpy.QtWidgets import QFormLayout, QLabel

from napari_unet.engine.config import PredictConfig
from napari_unet.engine.postprocess import PostprocessParams
from napari_unet.engine.setup import default_params

from ._finetune_request import TrainingParams

if TYPE_CHECKING:
    from napari_unet.engine.config import PredictConfig
    from napari_unet.engine.postprocess import PostprocessParams
    from napari_unet.models.model_file import Model


def float_box(
    label: str,
    lo: float,
    hi: float,
    decimals: int,
    tooltip: str,
    step: float | None = None,
    value: float | None = None,
    special: str = "",
    suffix: str = "",
) -> FloatSpinBox:
    """A magicgui float spin box whose Qt decimals are set before its range (Qt rounds the
    range to the decimals, so 1e-5 would become 0 with magicgui's default of 2)."""
    box = FloatSpinBox(label=label, tooltip=tooltip)
    native = box.native
    native.setDecimals(decimals)
    native.setRange(lo, hi)
    if step is not None:
        native.setSingleStep(step)
    if value is not None:
        native.setValue(value)
    native.setSpecialValueText(special)
    native.setSuffix(suffix)
    return box


def form(widgets: Sequence[Any]) -> Container:
    """A labelled magicgui form without margins (it sits inside a dock's layout)."""
    container = Container(widgets=list(widgets), labels=True)
    container.margins = (0, 0, 0, 0)
    return container


def align_labels(form: QFormLayout, params: Container) -> None:
    """One label column for a dock: its Qt form's labels and its magicgui form's labels all
    get the widest one's width (each form would otherwise size its own column)."""
    labels = [
        item.widget()
        for row in range(form.rowCount())
        if (item := form.itemAt(row, QFormLayout.ItemRole.LabelRole)) is not None
        and isinstance(item.widget(), QLabel)
    ]
    labels += params.native.findChildren(QLabel)
    widest = max((label.sizeHint().width() for label in labels), default=0)
    for label in labels:
        label.setMinimumWidth(widest)


class SegmentParams:
    """Segment's threshold, min size, nucleus diameter and scope."""

    def __init__(self, scopes: Sequence[str]) -> None:
        self.threshold = float_box(
            "threshold",
            0.01,
            0.99,
            2,
            "Foreground probability above which a pixel belongs to a nucleus",
            0.05,
        )
        self.min_size = SpinBox(
            label="min size",
            min=0,
            max=10_000_000,
            tooltip="Objects smaller than this (pixels, voxels in 3D) are dropped. Counted at the "
            "model's scale: when the image is rescaled for the nucleus size, so is this",
        )
        self.diameter = float_box(
            "nucleus diameter (px)",
            0.0,
            500.0,
            1,
            "Typical nucleus diameter in this image (pixels). The image is rescaled so nuclei "
            "match the size the model was trained on (about 20 px for the bundled model); "
            "labels keep the image's size. 0 = auto: estimated from the image with the model "
            "(shown in the status line when Segment runs)",
            step=1.0,
            special="auto",
        )
        self.scope = ComboBox(
            label="scope",
            choices=list(scopes),
            tooltip="Segment the plane shown in the viewer, the part of it visible in the canvas, or every "
            "plane of the stack (a lazy dask/zarr stack goes block by block into a zarr store on disk)",
        )
        self.accurate = CheckBox(
            text="accurate (4x slower)",
            value=False,
            tooltip="Test-time augmentation: the network also looks at the mirror images of the image "
            "and the answers are averaged, at about 4x the time. On the bundled model's held-out "
            "nuclei it changed F1 by less than 0.01; worth a try where objects come out split or merged",
        )
        self.form = form([self.threshold, self.min_size, self.diameter, self.scope, self.accurate])

    def apply_card(self, card: dict[str, Any]) -> None:
        """Take threshold and min size from a model card (the engine's defaults otherwise)."""

        defaults = PostprocessParams()
        post = card.get("postprocess") or {}
        self.threshold.native.setValue(float(post.get("threshold", defaults.threshold)))
        self.min_size.native.setValue(int(post.get("min_size", defaults.min_size)))

    def postprocess_params(self, model: Model) -> PostprocessParams:
        """The form's threshold and min size; the rest (seeds, waist cutting) from the model card."""

        return replace(
            default_params(model),
            threshold=float(self.threshold.native.value()),
            min_size=int(self.min_size.native.value()),
        )

    def predict_config(self) -> PredictConfig:
        """The engine's defaults (its tiles are small enough for a progress step and a Stop
        point every fraction of a second) plus the nucleus diameter (0 = estimated)."""

        diameter = float(self.diameter.native.value())
        return PredictConfig(diameter=diameter if diameter > 0 else None, accurate=bool(self.accurate.value))


class FinetuneParams:
    """Fine-tune's time budget, max steps, learning rate and ignore label."""

    def __init__(self) -> None:
        self.budget = float_box(
            "time budget",
            1.0,
            24 * 3600.0,
            0,
            "Training time; Stop ends earlier and keeps the best weights",
            value=60.0,
            suffix=" s",
        )
        # a float box shown without decimals: magicgui's int box (superqt) has no "no limit" text
        self.steps = float_box(
            "max steps",
            0,
            1_000_000,
            0,
            "Optional number of steps; training ends at whichever limit comes first",
            step=1.0,
            special="no limit",
        )
        self.lr = float_box(
            "learning rate",
            1e-5,
            1e-1,
            5,
            "Peak learning rate (the default, 3e-3, suits a few minutes of fine-tuning)",
            step=1e-4,
            value=3e-3,  # FINETUNE_DEFAULTS.lr (tests/widgets/test_finetune_widget.py checks)
        )
        help_ignore = (
            "Pixels painted with this label value are 'not annotated': they are never learned "
            "as background. Paint it over parts you have not checked."
        )
        self.ignore_check = CheckBox(text="ignore label", tooltip=help_ignore)
        self.ignore_value = SpinBox(min=-(2**31), max=2**31 - 1, value=65535, enabled=False)
        self.ignore_check.changed.connect(self._on_ignore_toggled)
        ignore_row = Container(
            widgets=[self.ignore_check, self.ignore_value], layout="horizontal", labels=False, label=""
        )
        ignore_row.margins = (0, 0, 0, 0)
        self.form = form([self.budget, self.steps, self.lr, ignore_row])

    def _on_ignore_toggled(self, on: bool) -> None:
        self.ignore_value.enabled = bool(on)

    def values(self) -> TrainingParams:
        """The form's values for a run (max steps 0 = no limit)."""
        return TrainingParams(
            time_budget=float(self.budget.native.value()),
            steps=int(self.steps.native.value()) or None,
            lr=float(self.lr.native.value()),
            ignore_label=int(self.ignore_value.native.value())
            if self.ignore_check.native.isChecked()
            else None,
        )
