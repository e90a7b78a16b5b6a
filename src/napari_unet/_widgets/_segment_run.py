"""A Segment run: what it captures on the GUI thread, and the jobs its worker drives.

The jobs never touch a layer; they get copies taken when the run starts (:class:`SegmentJob`)
and return a :class:`JobResult` with the counting and fingerprinting already done, so the
GUI thread only writes the result.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_unet.engine import predict
from napari_unet.engine.metrics import count_objects
from napari_unet.engine.object_scale import anisotropy_from_pixel_size

from . import _lazy, _plan
from ._plan import one_line

if TYPE_CHECKING:
    from napari.utils import progress

    from napari_unet.engine.config import PredictConfig, Progress


class SegmentJobError(Exception):
    """A failure inside the worker, as one line.

    superqt's worker swallows ``RuntimeError`` (it assumes a deleted Qt object) and emits
    neither ``returned`` nor ``errored``; torch reports out-of-memory and friends as
    ``RuntimeError``, so the job re-raises those as this type to reach ``errored``.
    """


@dataclass(frozen=True)
class JobResult:
    """The labels and what the main thread would otherwise compute from them."""

    labels: np.ndarray
    n_objects: int
    fingerprint: dict[tuple[int, ...], bytes] | None


@dataclass(frozen=True)
class SegmentJob:
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

    def layer_geometry(self) -> dict[str, Any]:
        """Where a new labels layer sits: the image's scale, translate, axis labels and units."""
        geometry: dict[str, Any] = {"scale": self.scale, "translate": self.translate}
        geometry["axis_labels"] = self.axis_labels
        if self.units is not None and len(self.units) == len(self.scale):
            geometry["units"] = self.units
        return geometry


@dataclass
class RunState:
    """The running worker's GUI-side state (one per run; None between runs)."""

    job: SegmentJob
    pbar: progress | None
    stop_requested: bool = False
    size: Any = None  # the object-size estimate (engine's SizeEstimate), when one was made


def segment_job(
    image: np.ndarray, axes: str, fingerprint: bool, **kwargs: Any
) -> Generator[Progress, None, JobResult]:
    """Run in the worker thread: :func:`iter_segment`, every error made reportable, and the
    counting and fingerprinting done here rather than on the GUI thread."""

    try:
        labels = yield from predict.iter_segment(image, axes=axes, **kwargs)
    except RuntimeError as exc:
        raise SegmentJobError(one_line(exc)) from exc
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
        raise SegmentJobError(one_line(exc)) from exc
    return JobResult(_lazy.to_layer_order(labels, labels_axes, layer_axes), n, None)


def with_anisotropy(config: PredictConfig, scale: tuple[float, ...], axes: str) -> PredictConfig:
    """A z-stack's z/xy pixel-size ratio from the layer's scale (napari's default 1s: unknown)."""

    kept = [a for a in axes if a != "C"]
    if config.anisotropy is not None or "Z" not in kept or len(scale) != len(kept):
        return config
    zyx = [scale[kept.index(a)] for a in "ZYX"]
    return replace(config, anisotropy=anisotropy_from_pixel_size(zyx))
