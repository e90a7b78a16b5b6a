"""Measure, in the Segment dock: what a run takes from the layers, the worker's job, and what
the dock shows of the table (napari's features, the plot). No Qt and no napari here.

The job gets copies taken on the GUI thread when Measure is clicked (the labels of an
in-memory layer are copied: the user may paint while the worker reads). A lazy labels layer
(dask or zarr, possibly larger than memory) is measured block by block
(:func:`napari_unet.scale.measure_blocks.iter_measure_blocks`), the rest in memory
(:func:`napari_unet.engine.measure.measure_labels`, which adds solidity in 2D).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_unet.common.axes import output_axes
from napari_unet.engine.config import Progress
from napari_unet.engine.measure import Table, check_axes, measure_labels
from napari_unet.scale.measure_blocks import iter_measure_blocks

from . import _lazy, _plan
from ._plan import one_line

PIXEL_UNITS = {"pixel", "px", ""}


class MeasureError(ValueError):
    """Why the layers cannot be measured (or the worker failed), as one line.

    A ValueError for the plan's refusals; raised for RuntimeError in the worker too, which
    superqt's worker would otherwise swallow (see ``_segment_run.SegmentJobError``).
    """


@dataclass(frozen=True)
class MeasureJob:
    """What one Measure run reads, captured on the GUI thread."""

    labels: Any  # a numpy copy, or the lazy (dask, zarr) array itself
    image: Any  # one channel, same shape as ``labels``; None: no intensities
    axes: str  # the labels' axes, among T, Z, Y, X
    scale: dict[str, float] | None
    unit: str | None
    labels_id: Any
    labels_name: str
    image_name: str | None
    lazy: bool

    @property
    def n_frames(self) -> int | None:
        """Frames of a time-lapse; None without a T axis."""
        return int(self.labels.shape[self.axes.index("T")]) if "T" in self.axes else None


@dataclass(frozen=True)
class MeasureResult:
    """The table of one run and the job it came from."""

    job: MeasureJob
    table: Table

    @property
    def n_objects(self) -> int:
        return len(self.table["label"])


@dataclass(frozen=True)
class Bars:
    """What the dock's plot shows: bar heights and the texts around them."""

    heights: np.ndarray
    left: str  # under the first bar
    right: str  # under the last bar
    caption: str


def labels_axes(image_axes: str | None, labels_shape: tuple[int, ...], axis_labels: Sequence[str]) -> str:
    """The labels' axes: the image's without its channel, else named by the layer, else guessed."""
    if image_axes is not None:
        return output_axes(image_axes)
    named = _plan.axes_from_labels(axis_labels, len(labels_shape))
    return named if named is not None else check_axes(None, labels_shape)


def physical(
    axes: str, scale: Sequence[float], units: Sequence[str]
) -> tuple[dict[str, float] | None, str | None]:
    """Pixel size per spatial axis and its unit's name from a layer's scale and units.

    napari's default (scale 1, unit "pixel") means unknown: no physical columns. A scale set
    without a unit still counts, in an unnamed "unit".
    """
    spatial = [i for i, a in enumerate(axes) if a in "ZYX"]
    if len(scale) != len(axes):
        return None, None
    names = {str(units[i]) for i in spatial} - PIXEL_UNITS if len(units) == len(axes) else set()
    if not names and all(float(scale[i]) == 1.0 for i in spatial):
        return None, None
    unit = names.pop() if len(names) == 1 else None
    return {axes[i]: float(scale[i]) for i in spatial}, unit


def plan_measure(
    labels: Any,
    *,
    axes: str,
    scale: dict[str, float] | None,
    unit: str | None,
    labels_id: Any,
    labels_name: str,
    image: Any = None,
    image_name: str | None = None,
) -> MeasureJob:
    """Check the layers and copy what the worker reads; raises MeasureError with one line."""
    shape = tuple(int(n) for n in np.shape(labels))
    if np.dtype(labels.dtype).kind not in "iub":
        raise MeasureError(f"'{labels_name}' holds {labels.dtype} values, not integer labels")
    try:
        axes = check_axes(axes, shape)
    except ValueError as exc:
        raise MeasureError(one_line(exc)) from None
    if image is not None and tuple(np.shape(image)) != shape:
        raise MeasureError(
            f"'{labels_name}' {shape} and '{image_name}' {tuple(np.shape(image))} differ in shape "
            "(pick the image the labels were made from, and its axes)"
        )
    lazy = _lazy.is_lazy(labels) or (image is not None and _lazy.is_lazy(image))
    if not lazy:
        labels = np.array(labels)  # a copy: the user may paint while the worker reads
        image = None if image is None else np.asarray(image)
    return MeasureJob(labels, image, axes, scale, unit, labels_id, labels_name, image_name, lazy)


def measure_job(job: MeasureJob) -> Generator[Progress, None, MeasureResult]:
    """Run in the worker: block by block for lazy layers (one yield per block), else in memory."""
    try:
        if job.lazy:
            table = yield from iter_measure_blocks(
                job.labels, job.image, axes=job.axes, scale=job.scale, unit=job.unit
            )
        else:
            yield Progress(0, 1, "measure")
            table = measure_labels(job.labels, job.image, axes=job.axes, scale=job.scale, unit=job.unit)
    except (RuntimeError, MemoryError) as exc:
        raise MeasureError(f"measuring failed: {one_line(exc)}") from exc
    except ValueError as exc:
        raise MeasureError(one_line(exc)) from exc
    return MeasureResult(job, table)


def frame_rows(result: MeasureResult, frame: int | None) -> np.ndarray:
    """The rows napari's features get: all of them, or those of the frame shown in a time-lapse.

    napari matches a feature row to a label by value (its ``index`` column); ids restart in
    every frame of a time-lapse, so only one frame's rows can be matched at a time.
    """
    n = result.n_objects
    if frame is None or "frame" not in result.table:
        return np.arange(n)
    return np.flatnonzero(result.table["frame"] == frame)


def features(result: MeasureResult, rows: np.ndarray) -> dict[str, np.ndarray]:
    """napari's features table: ``index`` (the label value it is matched by), then the columns."""
    table = result.table
    return {"index": table["label"][rows], **{k: v[rows] for k, v in table.items()}}


def size_column(table: Table) -> tuple[str, str]:
    """The column the size histogram shows and its unit: physical when known, else pixels."""
    for key in table:
        if key.startswith(("area_", "volume_")):
            unit = key.split("_", 1)[1]
            return key, unit[:-1] + ("²" if unit.endswith("2") else "³")
    return "area", "px" if "z_extent" not in table else "voxels"


def bars(result: MeasureResult) -> Bars:
    """Count per frame for a time-lapse, else a histogram of object sizes."""
    table, n_frames = result.table, result.job.n_frames
    if n_frames is not None:
        counts = np.bincount(table["frame"], minlength=n_frames)[:n_frames]
        return Bars(counts, "frame 0", f"{n_frames - 1}", "objects per frame")
    key, unit = size_column(table)
    sizes = np.asarray(table[key], float)
    if not sizes.size:
        return Bars(np.zeros(0), "", "", "no objects")
    bins = int(np.clip(math.ceil(math.sqrt(sizes.size)), 5, 30))
    heights, edges = np.histogram(sizes, bins=bins)
    return Bars(heights, f"{edges[0]:.3g}", f"{edges[-1]:.3g} {unit}", f"object size ({unit})")


def frame_at(world_point: Sequence[float], layer_world_to_data: Any, axes: str, n_frames: int) -> int:
    """The time-lapse frame shown at napari's current ``world_point``."""
    t = float(layer_world_to_data(world_point)[axes.index("T")])
    return int(np.clip(round(t), 0, n_frames - 1))
