"""What a Fine-tune run trains on, copied out of the layers, or why there is nothing to train on.

No Qt here: the dock passes the chosen layers and the form's values, and shows a
:class:`Refusal` as a notification and in its status line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_unet.common.axes import AxesError, validate_axes

from . import _finetune_plan as fp
from . import _plan


class Refusal(Exception):
    """No run, and the one line that says why (``error``: a mistake rather than a missing step)."""

    def __init__(self, message: str, error: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.error = error


@dataclass(frozen=True)
class TrainingParams:
    """The form's values for one run."""

    time_budget: float
    steps: int | None
    lr: float
    ignore_label: int | None


def build_request(
    image: Any,
    labels: Any,
    typed_axes: str,
    channel: int,
    params: TrainingParams,
    regions_of: Callable[[Any], fp.Regions | None],
    regions_name: str,
    used_planes: Callable[[], list[fp.Plane]],
    written: Any,
    in_channels: Callable[[], int],
) -> fp.FinetuneRequest:
    """The run's request; raises :class:`Refusal` (or the model's load error from ``in_channels``)."""

    if image is None or labels is None:
        raise Refusal("choose an image and its corrected labels layer (Segment it first)")
    data = _plan.full_resolution(image)
    try:
        axes = validate_axes(typed_axes.strip().upper(), tuple(np.shape(data)))
        lead = fp.stack_axes(axes.replace("C", ""))
    except (AxesError, ValueError) as exc:
        raise Refusal(fp.one_line(exc), error=True) from exc
    lab_data = _plan.full_resolution(labels)
    want = _plan.labels_shape(np.shape(data), axes)
    if tuple(np.shape(lab_data)) != want:
        raise Refusal(
            f"labels '{labels.name}' have shape {tuple(np.shape(lab_data))}, image '{image.name}' "
            f"needs {want}",
            error=True,
        )
    regions = regions_of(labels)
    if regions is not None and not regions.mask.any():
        raise Refusal(f"'{regions_name}' has no rectangle, polygon or ellipse", error=True)
    slices: list[Any] | None = None
    if lead:
        planes = set(used_planes()) | set(regions.planes if regions is not None else ())
        if planes:
            slices = fp.planes_to_slices(sorted(planes), lead)
        elif written is not None:
            raise Refusal(
                "no edited plane: correct a slice with the brush, eraser or fill, "
                "or add the current plane as reviewed"
            )
    elif regions is None and fp.is_segment_output(lab_data, (), written):
        raise Refusal(
            "the labels are exactly what Segment wrote: correct some objects first "
            "(brush, eraser, fill) or draw reviewed regions"
        )
    one = in_channels() == 1
    reviewed = None if regions is None else regions.mask
    image_copy, labels_copy, slices, reviewed, frames = fp.used_frames(data, lab_data, axes, slices, reviewed)
    return fp.FinetuneRequest(
        image=image_copy,
        labels=labels_copy,
        axes=axes,
        channel=channel if "C" in axes and one else None,
        ignore_label=params.ignore_label,
        reviewed=reviewed,
        slices=slices,
        time_budget=params.time_budget,
        steps=params.steps,
        lr=params.lr,
        source=image.name,
        frames=frames,
    )
