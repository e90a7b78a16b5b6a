"""What the Segment widget decides, without Qt: which part of the image to segment, where
the result goes in the labels array, and whether writing there would destroy user edits.

Kept apart from the widget so that every rule here is tested with plain numpy arrays.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_unet.common.axes import AxesError, guess_axes, validate_axes

SCOPE_SLICE = "current slice"
SCOPE_VIEW = "current view"  # the part of the current slice visible in the canvas
SCOPE_STACK = "whole stack"
SCOPES = (SCOPE_SLICE, SCOPE_VIEW, SCOPE_STACK)
SPATIAL = "YX"
AXIS_LETTERS = "TZCYX"

# Above this many changed pixels a re-run replaces ``layer.data`` instead of recording an
# undo step: napari's history stores indices and old values (~20 bytes per pixel).
MAX_UNDO_PIXELS = 16_000_000

Index = tuple[int | slice, ...]


def axes_from_labels(axis_labels: Sequence[str] | None, ndim: int) -> str | None:
    """Axes letters from napari axis labels such as ('t', 'z', 'y', 'x'), if they name axes."""
    if not axis_labels or len(axis_labels) != ndim:
        return None
    aliases = {"time": "T", "channel": "C", "channels": "C", "c": "C"}
    letters = []
    for label in axis_labels:
        text = str(label).strip().lower()
        letter = aliases.get(text, text.upper())
        if len(letter) != 1 or letter not in AXIS_LETTERS:
            return None
        letters.append(letter)
    out = "".join(letters)
    return out if len(set(out)) == len(out) else None


def one_line(exc: BaseException) -> str:
    """An error as the one line shown in a notification and a status line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def full_resolution(layer: Any) -> Any:
    """A layer's data at full resolution (level 0 of a multiscale layer), never loaded."""
    return layer.data[0] if layer.multiscale else layer.data


def layer_by_id(layers: Any, uid: Any) -> Any:
    """The layer with this ``unique_id`` (the widgets' choosers hold ids), or None."""
    return next((layer for layer in layers if layer.unique_id == uid), None)


def first_axes_guess(layer: Any) -> str:
    """:func:`layer_axes` of an image layer; raises ValueError when its shape allows no guess."""
    shape = np.shape(full_resolution(layer))
    return layer_axes(shape, layer.rgb, layer.axis_labels, layer.metadata.get("axes"))


def layer_axes(shape: Sequence[int], rgb: bool, axis_labels: Sequence[str] | None, hint: str | None) -> str:
    """The best first guess of a layer's axes, which the user may then correct.

    ``hint`` (e.g. ``layer.metadata['axes']`` written by a reader or our samples) wins, then
    axis labels that name axes, then :func:`napari_unet.common.axes.guess_axes` on the shape.
    """

    ndim = len(shape)
    if hint and len(hint) == ndim and set(hint.upper()) <= set(AXIS_LETTERS):
        return hint.upper()
    named = axes_from_labels(axis_labels, ndim - 1 if rgb else ndim)
    if named is not None:
        return named + ("C" if rgb else "")
    return guess_axes(tuple(shape), rgb=rgb)


def labels_shape(shape: Sequence[int], axes: str) -> tuple[int, ...]:
    """The labels layer's shape: the image's without the channel axis."""
    return tuple(int(n) for n, a in zip(shape, axes, strict=True) if a != "C")


def drop_channel(values: Sequence[float], axes: str) -> tuple[float, ...]:
    """Per-axis values (scale, translate) of an image -> those of its labels."""
    return tuple(float(v) for v, a in zip(values, axes, strict=True) if a != "C")


def channel_axis(typed: str, shape: Sequence[int], strict: bool) -> int | None:
    """The axis the channel chooser picks from, or None to hide the chooser.

    Segment (``strict=False``) offers it once the typed axes have a C and one letter per
    dimension; Fine-tune (``strict=True``) only once they pass ``validate_axes``.
    """

    axes = typed.strip().upper().replace("S", "C")
    if strict:
        try:
            axes = validate_axes(typed.strip().upper(), tuple(shape))
        except AxesError:
            return None
    elif len(axes) != len(shape):
        return None
    return axes.index("C") if "C" in axes else None


def has_stack_axes(axes: str) -> bool:
    """Whether "current slice" differs from "whole stack" (any T or Z axis)."""
    return any(a not in SPATIAL + "C" for a in axes)


@dataclass(frozen=True)
class Plan:
    """``image[source]`` is segmented with ``axes``; its labels go to ``labels[target]``."""

    source: Index
    axes: str
    target: Index
    labels_shape: tuple[int, ...]

    @property
    def is_slice(self) -> bool:
        """Whether the result covers only part of the labels (a plane, or a view of one)."""
        return any(isinstance(i, int) or i != slice(None) for i in self.target)

    @property
    def is_crop(self) -> bool:
        """Whether the result covers only part of its plane(s) ("current view")."""
        return any(isinstance(i, slice) and i != slice(None) for i in self.target)


def plan_segmentation(
    shape: Sequence[int],
    axes: str,
    scope: str,
    position: Sequence[float] | None,
    view: tuple[tuple[float, float], tuple[float, float]] | None = None,
) -> Plan:
    """Choose the part of the image to segment.

    ``position`` is the viewer's current point in the image's data coordinates (one value
    per axis that napari shows, i.e. without an RGB channel). With "current slice" every T/Z
    axis is fixed at that position (rounded, clipped), so a 2D plane is segmented. "current
    view" is that plane cut to ``view``, the visible ((y0, y1), (x0, x1)) in data pixels
    (clipped; None or an empty box = the whole plane).
    """
    if len(axes) != len(shape):
        raise ValueError(f"axes {axes!r} do not match the image's {len(shape)} dimensions")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, not {scope!r}")
    full = labels_shape(shape, axes)
    crop = _view_slices(shape, axes, view) if scope == SCOPE_VIEW else {}
    if scope == SCOPE_STACK or (not has_stack_axes(axes) and not crop):
        everything = (slice(None),) * len(full)
        return Plan((slice(None),) * len(shape), axes, everything, full)
    pos = [] if position is None else [float(v) for v in position]
    source: list[int | slice] = []
    kept = ""
    for i, (n, a) in enumerate(zip(shape, axes, strict=True)):
        if a in SPATIAL + "C":
            source.append(crop.get(a, slice(None)))
            kept += a
        else:
            p = pos[i] if i < len(pos) else 0.0
            source.append(int(np.clip(np.round(p), 0, n - 1)))
    target = tuple(s for s, a in zip(source, axes, strict=True) if a != "C")
    return Plan(tuple(source), kept, target, full)


def _view_slices(
    shape: Sequence[int], axes: str, view: tuple[tuple[float, float], tuple[float, float]] | None
) -> dict[str, slice]:
    """{"Y": slice, "X": slice} of the visible box, clipped to the image; {} when it is all of it."""
    if view is None:
        return {}
    out = {}
    for a, (lo, hi) in zip(SPATIAL, view, strict=True):
        n = int(shape[axes.index(a)])
        start, stop = int(np.clip(np.floor(lo), 0, n)), int(np.clip(np.ceil(hi), 0, n))
        if stop <= start:
            return {}
        if (start, stop) != (0, n):
            out[a] = slice(start, stop)
    return out


def next_free_name(base: str, taken: Iterable[str]) -> str:
    """``base`` if no layer has that name, else ``base [2]``, ``base [3]``, ..."""
    names = set(taken)
    if base not in names:
        return base
    pattern = re.compile(re.escape(base) + r" \[(\d+)\]$")
    used = [int(m.group(1)) for n in names if (m := pattern.match(n))]
    k = max([1, *used]) + 1
    while f"{base} [{k}]" in names:
        k += 1
    return f"{base} [{k}]"


def plane_indices(shape: Sequence[int], target: Index | None = None) -> list[tuple[int, ...]]:
    """The YX planes of a labels array of ``shape`` that ``target`` covers (all if None)."""
    lead = tuple(shape[:-2])
    if target is None:
        return list(np.ndindex(lead))
    ranges = [
        [t] if isinstance(t, int) else range(n)[t] for n, t in zip(lead, target[: len(lead)], strict=True)
    ]
    return [tuple(int(v) for v in idx) for idx in itertools.product(*ranges)]


def plane_hash(plane: np.ndarray) -> bytes:
    """A fingerprint of one plane: detects any edit (paint, fill, console) at ~1 GB/s."""
    arr = np.ascontiguousarray(plane)
    h = hashlib.blake2b(digest_size=16)
    h.update(str((arr.dtype.str, arr.shape)).encode())
    h.update(memoryview(arr).cast("B"))
    return h.digest()


def fingerprint(
    labels: np.ndarray, planes: Iterable[tuple[int, ...]] | None = None
) -> dict[tuple[int, ...], bytes]:
    """Per-plane fingerprints, so that an edit in one slice does not block writing another."""
    labels = np.asarray(labels)
    idx = plane_indices(labels.shape) if planes is None else planes
    return {p: plane_hash(labels[p]) for p in idx}


Written = dict[tuple[int, ...], frozenset[bytes]]


def remember(written: Written | None, fingerprints: dict[tuple[int, ...], bytes]) -> Written:
    """Add fingerprints to the record of what we ever wrote into a layer, plane by plane.

    Every version is kept (16 bytes each), so a result the user brought back with Ctrl+Z
    still counts as ours and is not mistaken for an edit."""
    out = dict(written or {})
    for p, h in fingerprints.items():
        out[p] = out.get(p, frozenset()) | {h}
    return out


def untouched_since_written(labels: np.ndarray, written: Written, target: Index) -> bool:
    """True when overwriting ``labels[target]`` destroys nothing the user did.

    Every plane the write covers must hold exactly something we wrote there, or be empty
    (an empty plane holds no work to lose).
    """
    labels = np.asarray(labels)
    for p in plane_indices(labels.shape, target):
        if p not in written:
            return False
        plane = labels[p]
        if plane_hash(plane) not in written[p] and plane.any():
            return False
    return True


def _fit_dtype(dtype: np.dtype, max_value: int) -> np.dtype:
    for candidate in (dtype, np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.uint64)):
        if candidate.kind in "ui" and np.iinfo(candidate).max >= max_value:
            return candidate
    return np.dtype(np.uint64)


def slice_values(current: np.ndarray | None, result: np.ndarray, plan: Plan) -> np.ndarray:
    """What ``labels[plan.target]`` becomes: the slice's ids shifted above every id in the
    other planes (so a slice segmented later never reuses the id of an object elsewhere,
    which would join them in 3D), in a dtype that holds them. Reads ``current``, never
    copies it: a big stack is scanned plane by plane."""
    result = np.asarray(result)
    expected = tuple(
        len(range(n)[t])
        for n, t in zip(plan.labels_shape, plan.target, strict=True)
        if not isinstance(t, int)
    )
    if result.shape != expected:
        raise ValueError(f"slice result shape {result.shape} != expected {expected}")
    offset, dtype = 0, result.dtype
    if current is not None:
        current = np.asarray(current)
        if current.shape != plan.labels_shape:
            raise ValueError(f"labels shape {current.shape} != expected {plan.labels_shape}")
        touched = set() if plan.is_crop else set(plane_indices(current.shape, plan.target))
        others = [p for p in plane_indices(current.shape) if p not in touched]  # a view keeps the rest
        offset = max((int(current[p].max(initial=0)) for p in others), default=0)
        dtype = current.dtype
    dtype = _fit_dtype(np.dtype(dtype), offset + int(result.max(initial=0)))
    shifted = result.astype(dtype) + dtype.type(offset)
    return np.where(result > 0, shifted, dtype.type(0))


def merge_result(current: np.ndarray | None, result: np.ndarray, plan: Plan) -> np.ndarray:
    """The full labels array after writing ``result`` at ``plan.target`` (a new array)."""
    result = np.asarray(result)
    if not plan.is_slice:
        if result.shape != plan.labels_shape:
            raise ValueError(f"result shape {result.shape} != expected {plan.labels_shape}")
        return result
    values = slice_values(current, result, plan)
    if current is None:
        out = np.zeros(plan.labels_shape, values.dtype)
    else:
        out = np.asarray(current).astype(values.dtype, copy=True)
    out[plan.target] = values
    return out


def full_indices(target: Index, local: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Indices inside ``labels[target]`` -> indices into ``labels`` (napari's data_setitem)."""
    n = local[0].size if local else 0
    rest = iter(local)
    return tuple(np.full(n, t, np.intp) if isinstance(t, int) else next(rest) for t in target)


def changed_indices(old: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, ...]:
    """Indices where ``new`` differs from ``old``: the one undo step of a re-run."""
    return np.nonzero(np.asarray(old) != np.asarray(new))
