"""Fine-tune's choice of what to learn from: the corrected labels and optional reviewed regions.

The labels default to the layer Segment wrote for the chosen image, so the usual flow
(Segment, correct, Fine-tune) needs no choosing at all.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from napari.layers import Labels, Shapes
from qtpy.QtWidgets import QComboBox, QWidget

from . import _plan
from ._choosers import fill_layer_combo
from ._regions import Regions, affine_between, regions_mask

NO_REGIONS = "(whole planes)"


def default_labels_id(layers: Sequence[Any], image: Any) -> Any:
    """The '<image> labels' layer Segment writes (or the newest '<image> labels [k]')."""
    if image is None:
        return None
    base = f"{image.name} labels"
    named = [
        lyr
        for lyr in layers
        if isinstance(lyr, Labels) and (lyr.name == base or lyr.name.startswith(base + " ["))
    ]
    return named[-1].unique_id if named else None


class AnnotationPicker:
    """The labels and reviewed-regions choosers (rows of the image picker's form)."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.labels_combo = QComboBox()
        self.labels_combo.setToolTip("The corrected labels: 0 = background, one id per object")
        self.regions_combo = QComboBox()
        self.regions_combo.setToolTip(
            "Optional Shapes layer: only pixels inside its rectangles, polygons and ellipses "
            "count (reviewed regions); pixels outside are ignored, never learned as background"
        )

    def rows(self) -> list[tuple[str, QWidget]]:
        return [("labels", self.labels_combo), ("reviewed regions", self.regions_combo)]

    def fill(self, layers: Sequence[Any], image: Any, hidden: Collection[Any]) -> bool:
        """List labels (not the ``hidden`` previews) and shapes; True when the labels changed."""
        old = self.labels_combo.currentData()
        labels = [lyr for lyr in layers if isinstance(lyr, Labels) and lyr.unique_id not in hidden]
        fill_layer_combo(self.labels_combo, labels, prefer=default_labels_id(layers, image))
        shapes = [lyr for lyr in layers if isinstance(lyr, Shapes)]
        fill_layer_combo(self.regions_combo, shapes, none=NO_REGIONS)
        return self.labels_combo.currentData() != old

    def choose_labels(self, uid: Any) -> bool:
        """Select a labels layer by id, when it is listed."""
        index = self.labels_combo.findData(uid)
        if uid is None or index < 0:
            return False
        self.labels_combo.setCurrentIndex(index)
        return True

    def labels_id(self) -> Any:
        return self.labels_combo.currentData()

    def selected_labels(self) -> Labels | None:
        return _plan.layer_by_id(self.viewer.layers, self.labels_combo.currentData())

    def selected_regions(self) -> Shapes | None:
        uid = self.regions_combo.currentData()
        return None if uid is None else _plan.layer_by_id(self.viewer.layers, uid)

    def regions_name(self) -> str:
        return self.regions_combo.currentText()

    def regions(self, labels: Labels) -> Regions | None:
        """The reviewed regions in the labels' pixels; None when no Shapes layer is chosen."""
        shapes = self.selected_regions()
        if shapes is None:
            return None
        to_labels = affine_between(shapes.scale, shapes.translate, labels.scale, labels.translate)
        return regions_mask(
            list(shapes.data), list(shapes.shape_type), to_labels, labels.data.shape, shapes.ndim
        )

    def set_editable(self, editable: bool) -> None:
        self.labels_combo.setEnabled(editable)
        self.regions_combo.setEnabled(editable)
