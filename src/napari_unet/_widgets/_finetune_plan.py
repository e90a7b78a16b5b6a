"""What the Fine-tune widget decides and runs, without Qt.

* which planes of a stack the user edited (from napari's paint history atoms), told apart
  from Segment's own writes by the plane fingerprints Segment records;
* a Shapes layer's rectangles / polygons / ellipses -> a "reviewed" mask in the labels' pixels
  (in :mod:`._regions`, re-exported here);
* the preview window (the plane on screen, around the view's centre, bounded in size);
* the job a napari worker drives: samples, :func:`~napari_unet.training.finetune.iter_finetune` with a
  preview hook, saving the result, with torch left one core short so the GUI stays smooth.

Everything here is plain numpy / torch so the rules are tested without a display.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from napari_unet.common.axes import to_canonical
from napari_unet.common.generators import drain
from napari_unet.engine.config import PredictConfig
from napari_unet.engine.inference import iter_probabilities
from napari_unet.engine.normalize import apply_bounds, channel_bounds, select_channels
from napari_unet.engine.object_scale import net_shape, unzoom, zoom_factor, zoomed_plane
from napari_unet.engine.predict import instances
from napari_unet.engine.setup import default_params
from napari_unet.models.registry import ModelSaveError, save_version
from napari_unet.training import finetune as training_finetune
from napari_unet.training.annotations import samples_from_arrays
from napari_unet.training.card import fitted_thresholds
from napari_unet.training.finetune import FINETUNE_DEFAULTS
from napari_unet.training.sample import annotation_summary

from ._plan import one_line, plane_hash
from ._regions import Regions as Regions
from ._regions import affine_between as affine_between
from ._regions import regions_mask as regions_mask

Plane = tuple[int, ...]  # index over the labels' leading (T / Z) axes; () for a 2D image

PREVIEW_MAX = 512  # px per side of the previewed window: ~0.2-0.5 s of CPU every few seconds
PREVIEW_EVERY = 3.0  # s between the end of one preview and the start of the next


class FinetuneJobError(Exception):
    """A failure inside the worker, as one line (superqt swallows ``RuntimeError``; see
    ``_segment_run.SegmentJobError``)."""


# --------------------------------------------------------------------------- planes


def stack_axes(label_axes: str) -> str:
    """The labels' leading axes (T / Z) that index planes; '' for a 2D image.

    Raises ``ValueError`` when the labels do not end in Y, X (planes would not be images)."""
    if len(label_axes) < 2 or label_axes[-2:] != "YX":
        raise ValueError(f"labels axes {label_axes!r} must end in YX to be trained on plane by plane")
    lead = label_axes[:-2]
    if set(lead) - set("TZ"):
        raise ValueError(f"labels axes {label_axes!r}: only T and Z may come before YX")
    return lead


def plane_name(plane: Plane, lead: str) -> str:
    """'z=3', 't=2, z=5' (the core's naming); 'image' for a 2D one."""
    return ", ".join(f"{a.lower()}={i}" for a, i in zip(lead, plane, strict=True)) or "image"


def planes_to_slices(planes: Iterable[Plane], lead: str) -> list[Any]:
    """Planes -> the ``slices`` argument of :func:`napari_unet.training.annotations.samples_from_arrays`:
    ints for one stack axis, (t, z) pairs for two."""
    out: list[Any] = []
    for p in planes:
        if len(lead) == 1:
            out.append(int(p[0]))
        else:
            d = dict(zip(lead, p, strict=True))
            out.append((int(d["T"]), int(d["Z"])))
    return out


def _range(index: Any, n: int) -> Iterable[int]:
    if isinstance(index, slice):
        return range(n)[index]
    if isinstance(index, (int, np.integer)):
        return [int(index)]
    arr = np.asarray(index)
    if arr.dtype == bool:
        return np.flatnonzero(arr).tolist()
    return np.unique(arr).astype(int).tolist()


def atom_planes(atom: Any, shape: Sequence[int]) -> set[Plane]:
    """The planes one napari Labels history atom touched.

    An atom is a masked paint (``slice_key`` with one slice per axis: brush, fill, polygon)
    or a ``(indices, old, new)`` tuple from ``data_setitem``; both index all axes."""
    n_lead = len(shape) - 2
    if n_lead <= 0:
        return {()}
    key = getattr(atom, "slice_key", None)
    if key is not None:
        ranges = [list(_range(k, n)) for k, n in zip(key[:n_lead], shape[:n_lead], strict=True)]

        return {tuple(int(v) for v in p) for p in itertools.product(*ranges)}
    try:
        indices = atom[0]
    except (TypeError, IndexError):
        return set()
    if not isinstance(indices, tuple) or len(indices) < n_lead:
        return set()
    arrays = [np.asarray(i) if not isinstance(i, slice) else None for i in indices[:n_lead]]
    if all(a is not None and a.ndim == 1 for a in arrays):
        lead = np.stack([np.broadcast_to(a, arrays[0].shape) for a in arrays], axis=1)  # type: ignore[union-attr]
        return {tuple(int(v) for v in row) for row in np.unique(lead, axis=0)}

    ranges = [list(_range(i, n)) for i, n in zip(indices[:n_lead], shape[:n_lead], strict=True)]
    return {tuple(int(v) for v in p) for p in itertools.product(*ranges)}


def painted_planes(history_item: Iterable[Any], shape: Sequence[int]) -> set[Plane]:
    """Planes touched by one undo step (the ``value`` of a Labels ``paint`` event)."""
    out: set[Plane] = set()
    for atom in history_item or ():
        out |= atom_planes(atom, shape)
    return out


def is_segment_output(labels: np.ndarray, plane: Plane, written: dict[Plane, Any] | None) -> bool:
    """True when ``labels[plane]`` holds exactly something Segment wrote there (not an edit)."""
    if not written or plane not in written:
        return False
    return plane_hash(np.asarray(labels[plane])) in written[plane]


# --------------------------------------------------------------------------- preview


def preview_window(plane_shape: Sequence[int], center: Sequence[float], size: int = PREVIEW_MAX) -> tuple:
    """(y0, y1, x0, x1): at most ``size`` px per side around ``center``, inside the plane."""
    out = []
    for n, c in zip(plane_shape, center, strict=True):
        n = int(n)
        m = min(n, size)
        start = int(np.clip(np.round(float(c) - m / 2), 0, n - m))
        out += [start, start + m]
    return tuple(out)


def preview_dtype(labels_dtype: np.dtype) -> np.dtype:
    """The preview layer's dtype: the labels layer's (napari then reuses its texture format
    and shader: a first int32 layer next to uint16 labels cost ~0.3 s more), integers only."""
    dt = np.dtype(labels_dtype)
    return dt if dt.kind in "iu" else np.dtype(np.uint16)


class PreviewTarget:
    """What to preview, set by the GUI thread and read by the worker (one attribute
    assignment, atomic under the GIL): (plane, (y0, y1, x0, x1))."""

    def __init__(self, plane: Plane, window: tuple[int, int, int, int]) -> None:
        self.value = (plane, window)


@dataclass(frozen=True)
class PreviewResult:
    plane: Plane
    window: tuple[int, int, int, int]
    labels: np.ndarray  # (y1 - y0, x1 - x0) instance ids
    seconds: float


class PlanePreview:
    """Run in the worker: segment the previewed window with the weights being trained.

    Normalised exactly as prediction and training do (percentiles per time point over the
    whole z-stack, computed once per time point and kept)."""

    def __init__(self, image: np.ndarray, axes: str, channel: int | None, target: PreviewTarget) -> None:
        self.image, self.axes, self.channel, self.target = image, axes, channel, target
        self._bounds: dict[int, list] = {}

    def __call__(self, model: Any) -> PreviewResult | None:

        t0 = time.perf_counter()
        plane, (y0, y1, x0, x1) = self.target.value
        can = to_canonical(self.image, self.axes)
        n_c = int(can.shape[2])
        chans = select_channels(n_c, model.config.in_channels, self.channel, "C" in self.axes)
        lead = list(self.axes.replace("C", "")[:-2])
        pos = dict(zip(lead, plane, strict=True))
        t, z = int(pos.get("T", 0)), int(pos.get("Z", 0))
        if t not in self._bounds:
            low, high = model.normalization
            frame = np.asarray(can[t, :, chans])
            if frame.dtype == bool:
                frame = frame.view(np.uint8)
            self._bounds[t] = [channel_bounds(frame[:, c], low, high) for c in range(frame.shape[1])]
        if all(b is None for b in self._bounds[t]):
            return PreviewResult(plane, (y0, y1, x0, x1), np.zeros((y1 - y0, x1 - x0), np.int32), 0.0)
        window = np.asarray(can[t, z, chans, y0:y1, x0:x1])
        if window.dtype == bool:
            window = window.view(np.uint8)
        x = apply_bounds(window, self._bounds[t])
        device = next(model.net.parameters()).device.type
        zoom = zoom_factor(model, None)  # a model trained at a working scale sees it here too
        if zoom is not None:
            x = zoomed_plane(lambda _: x, net_shape(x.shape[-2:], zoom), 0)
        probs = drain(iter_probabilities(model, x, PredictConfig(device=device)))
        if zoom is not None:
            probs = unzoom(probs[:, None], (y1 - y0, x1 - x0))[:, 0]
        labels = instances(probs, default_params(model).for_zoom(zoom))
        return PreviewResult(plane, (y0, y1, x0, x1), labels, time.perf_counter() - t0)


# --------------------------------------------------------------------------- the job


def used_frames(
    image: Any, labels: Any, axes: str, slices: list[Any] | None, reviewed: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, list[Any] | None, np.ndarray | None, list[int] | None]:
    """Copies of only the T frames that hold used planes (slices renumbered to match), and the
    frames' numbers in the full stack (None when nothing was cut).

    Training needs the used planes and, for normalisation, the whole z-stack of their time
    point (prediction scales each time point by its own stack): so a time-lapse is cut to its
    used frames, which keeps a lazy (dask/zarr) movie from being read whole on the GUI thread.
    Without a T axis (or without slices) everything is copied.
    """
    if "T" not in axes or not slices:
        return np.array(image), np.array(labels), slices, reviewed, None
    lab_axes = axes.replace("C", "")
    frames = sorted({int(s[0]) if isinstance(s, (tuple, list)) else int(s) for s in slices})
    new_t = {t: i for i, t in enumerate(frames)}

    def take(arr: Any, t_axis: int) -> np.ndarray:
        index: list[Any] = [slice(None)] * len(np.shape(arr))
        index[t_axis] = frames
        return np.asarray(arr[tuple(index)])

    sub_image = take(image, axes.index("T"))
    sub_labels = take(labels, lab_axes.index("T"))
    renumbered = [
        (new_t[int(s[0])], int(s[1])) if isinstance(s, (tuple, list)) else new_t[int(s)] for s in slices
    ]
    if reviewed is not None and reviewed.shape == np.shape(labels):
        reviewed = take(reviewed, lab_axes.index("T"))
    return sub_image, sub_labels, renumbered, reviewed, frames


@dataclass(frozen=True)
class FinetuneRequest:
    """Everything a run needs, copied out of the layers on the GUI thread."""

    image: np.ndarray
    labels: np.ndarray
    axes: str
    channel: int | None
    ignore_label: int | None
    reviewed: np.ndarray | None
    slices: list[Any] | None
    time_budget: float | None
    steps: int | None
    lr: float
    source: str
    frames: list[int] | None = None  # the copied T frames' numbers in the layer (None: all)


@dataclass(frozen=True)
class Prepared:
    """Yielded once the samples are built, before the first step (the held-out score of
    the starting model is computed next, which takes a moment)."""

    planes: int
    annotated_pixels: int
    annotated_objects: int


@dataclass(frozen=True)
class FinetuneOutcome:
    model: Any  # the fine-tuned Model (the best weights)
    saved: Any  # registry.ModelInfo, or None when saving failed
    save_error: str | None


def gui_threads(cpu_count: int | None = None) -> int:
    """Torch threads for training from the GUI: every core but one, which stays with Qt."""
    return max(1, (cpu_count if cpu_count is not None else os.cpu_count() or 1) - 1)


def finetune_job(
    base: Any,
    request: FinetuneRequest,
    stop: threading.Event,
    preview: Callable[[Any], Any] | None = None,
    done: threading.Event | None = None,
    threads: int | None = None,
    save: bool = True,
) -> Generator[Prepared | Any, None, FinetuneOutcome]:
    """The worker's generator: samples, training steps (with previews), then the saved model.

    Stop is ``stop.set()``: training ends at the next step and the best weights are still
    returned and saved (``worker.quit()`` would drop them). Saving happens here, off the GUI
    thread; a :class:`~napari_unet.models.registry.ModelSaveError` is returned, not raised, so the
    trained model is never lost. ``done`` is set when the generator ends, however it ends.
    """

    old = torch.get_num_threads()
    torch.set_num_threads(threads or gui_threads())
    try:
        samples = samples_from_arrays(
            request.image,
            request.labels,
            base,
            axes=request.axes,
            channel=request.channel,
            ignore_label=request.ignore_label,
            reviewed=request.reviewed,
            slices=request.slices,
            source=request.source,
        )
        if request.frames is not None:  # name planes by their frame in the layer, not in the copy
            samples = [replace(x, plane=_real_frame(x.plane, request.frames)) for x in samples]
        info = annotation_summary(samples)
        yield Prepared(info["planes"], info["annotated_pixels"], info["annotated_objects"])
        cfg = replace(FINETUNE_DEFAULTS, time_budget=request.time_budget, steps=request.steps, lr=request.lr)
        model = yield from training_finetune.iter_finetune(
            base, samples, cfg, stop=stop.is_set, preview=preview, preview_every=PREVIEW_EVERY
        )
        saved, error = None, None
        if save:
            try:
                saved = save_version(model)
            except (ModelSaveError, OSError, ValueError) as exc:
                error = one_line(exc)
        return FinetuneOutcome(model, saved, error)
    except RuntimeError as exc:
        raise FinetuneJobError(one_line(exc)) from exc
    finally:
        torch.set_num_threads(old)
        if done is not None:
            done.set()


def _real_frame(plane: str, frames: list[int]) -> str:
    """'t=1, z=3' in the copied frames -> 't=<frames[1]>, z=3'."""
    return re.sub(r"\bt=(\d+)", lambda m: f"t={frames[int(m.group(1))]}", plane)


def drive(gen: Generator[Any, None, Any]) -> Generator[Any, None, Any]:
    """Run ``gen`` in a napari worker while the widget keeps a handle on it.

    napari cancels running workers when its window closes (``worker.quit()``), and a quit
    worker leaves its generator suspended; the widget then closes ``gen`` itself, so its
    clean-up (torch threads, ``done``) runs at once rather than whenever it is collected."""
    return (yield from gen)


# --------------------------------------------------------------------------- texts


def progress_fraction(step: int, elapsed: float, steps: int | None, budget: float | None) -> float:
    """How far a run is: the larger of steps done / steps and time spent / budget."""
    fracs = [step / steps] if steps else []
    fracs += [elapsed / budget] if budget else []
    return float(min(1.0, max(fracs, default=0.0)))


HELDOUT_HELP = (
    "Held-out F1: a part of your labels is held back from training and scored (objects matched "
    "at IoU 0.5) before and after. Where you corrected only a few objects of a segmented image, "
    "that part is mostly the model's own output you accepted: 'before' is then near 1, and the "
    "score tells whether the model still agrees with it."
)


def result_summary(card: dict[str, Any]) -> str:
    """'held-out F1 0.62 -> 0.81 (14 objects)' or why there is no score (short: a status line).

    The part is scored against the user's labels as they are: on an image where only a few
    objects were corrected, it is mostly the parent model's own accepted output, so the
    "before" is near 1 and the score says whether the model still agrees with it (the status
    line's tooltip, :data:`HELDOUT_HELP`, says so)."""
    m = card.get("metrics") or {}
    ft = card.get("finetune") or {}
    if "heldout_f1_before" in m:
        text = (
            f"held-out F1 {m['heldout_f1_before']:.2f} \u2192 {m['heldout_f1_after']:.2f} "
            f"({m.get('heldout_objects', 0)} objects)"
        )
        post = fitted_thresholds(card)
        if post is not None:
            text += f", {post['heldout_f1_best_thresholds']:.2f} with thresholds fitted on it"
        if ft.get("start"):
            text += f"; trained from {ft['start']}"
        return text
    return str(ft.get("holdout") or "no held-out score")
