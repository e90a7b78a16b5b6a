"""Training samples from what the user has in napari: an image and its corrected labels.

The rule for "what counts as annotation" is explicit, because a pixel wrongly
taken as background teaches the model to miss objects:

* ``reviewed`` is a bool mask (the labels' shape, or one (Y, X) plane for every slice) of
  the pixels the user has checked; only those count. ``reviewed=True`` means "all of it".
* ``ignore_label`` is a label value meaning "not annotated": those pixels never count and
  are never learned as background.
* On a stack (Z or T axis), ``slices`` lists the slices / frames the user edited or
  reviewed; only those become samples. An explicitly listed slice counts as reviewed.
* Without any of these, a labelled image (or slice) counts only if it holds at least one
  object. An image that is all background is legitimate negative annotation ("there is
  nothing here") only when the user says so (``reviewed`` or ``slices``); otherwise it is
  much more likely an unannotated layer and is refused.

Intensities are normalised exactly as prediction does (:mod:`napari_unet.engine.predict`): the
model's percentiles per time point over the whole z-stack and per channel, so a model
trained on these samples sees at training time what it will see when segmenting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_unet.common.axes import guess_axes, output_axes, to_canonical, validate_axes

# prediction's own normalisation helpers: training must normalise exactly as predict does
from napari_unet.engine.normalize import apply_bounds, channel_bounds, check_finite, select_channels
from napari_unet.models.model_file import Model
from napari_unet.training.sample import NoAnnotationError, Sample, annotation_summary

__all__ = ["AnnotationError", "NoAnnotationError", "annotation_summary", "samples_from_arrays"]


class AnnotationError(ValueError):
    """Labels that cannot be trained on as given (shape, type, selection); one line."""


def _check_labels(labels: np.ndarray, ignore_label: int | None) -> np.ndarray:
    if labels.dtype.kind == "b":
        return labels  # a painted mask: objects are its connected components (per plane, below)
    if labels.dtype.kind == "f":
        raise AnnotationError(f"labels are floating point ({labels.dtype}); give integer instance labels")
    if labels.dtype.kind not in "iu":
        raise AnnotationError(f"labels must be integers, not {labels.dtype}")
    if labels.size and labels.dtype.kind == "i":
        neg = labels < 0
        if ignore_label is not None:
            neg &= labels != ignore_label
        if neg.any():
            raise AnnotationError("labels have negative values (use --ignore-label for 'not annotated')")
    return labels


def _reviewed_planes(reviewed: Any, lab_shape: tuple[int, ...], lab_axes: str) -> np.ndarray | None:
    """``reviewed`` -> bool (T, Z, Y, X) or None (= not given)."""
    if reviewed is None or reviewed is False:
        return None
    n_t, n_z, h, w = lab_shape
    if reviewed is True:
        return np.ones((n_t, n_z, h, w), bool)
    mask = np.asarray(reviewed)
    if mask.dtype != bool:
        if mask.dtype.kind not in "iu":
            raise AnnotationError(f"reviewed mask must be boolean, not {mask.dtype}")
        mask = mask != 0
    if mask.shape == (h, w):
        return np.broadcast_to(mask, (n_t, n_z, h, w))
    expected = tuple({"T": n_t, "Z": n_z, "Y": h, "X": w}[a] for a in lab_axes)  # the labels' own axis order
    if mask.shape != expected:
        raise AnnotationError(
            f"reviewed mask has shape {mask.shape}; expected the labels' shape {expected} or ({h}, {w})"
        )
    can = to_canonical(mask, lab_axes)
    return np.asarray(can[:, :, 0])


def _selected_planes(
    slices: Sequence[Any] | None, n_t: int, n_z: int, axes: str
) -> list[tuple[int, int]] | None:
    """``slices`` -> (t, z) pairs; None when not given (then: every plane that holds labels)."""
    if slices is None:
        return None
    stack = [a for a in "TZ" if a in axes]
    if not stack:
        raise AnnotationError("slices were given but the image is a single 2D plane")
    out: list[tuple[int, int]] = []
    for s in slices:
        if len(stack) == 2:
            if not (isinstance(s, (tuple, list)) and len(s) == 2):
                raise AnnotationError(f"image has T and Z axes: give slices as (t, z) pairs, not {s!r}")
            t, z = (int(v) for v in s)
        elif stack == ["T"]:
            t, z = int(s), 0
        else:
            t, z = 0, int(s)
        if not (0 <= t < n_t and 0 <= z < n_z):
            sizes = ", ".join(f"{a}={n_t if a == 'T' else n_z}" for a in stack)
            raise AnnotationError(f"slice {s!r} is outside the stack ({sizes})")
        if (t, z) not in out:
            out.append((t, z))
    if not out:
        raise AnnotationError("no slices selected: mark at least one edited or reviewed slice")
    return out


def samples_from_arrays(
    image: Any,
    labels: Any,
    model: Model,
    *,
    axes: str | None = None,
    channel: int | None = None,
    ignore_label: int | None = None,
    reviewed: bool | np.ndarray | None = None,
    slices: Sequence[Any] | None = None,
    source: str = "image",
) -> list[Sample]:
    """One :class:`Sample` per annotated 2D plane of ``image`` (see the module docstring).

    ``labels`` has the image's shape without its C axis, in the image's axis order (what
    ``iter_segment`` returns). ``axes`` / ``channel`` mean what they mean for
    :func:`napari_unet.engine.predict.iter_segment`. Raises :class:`AnnotationError`,
    :class:`NoAnnotationError`, :class:`~napari_unet.common.axes.AxesError` or
    :class:`~napari_unet.engine.normalize.BadImageError`, each with a one-line message.
    """
    img = np.asarray(image)
    lab = np.asarray(labels)
    if img.ndim == 0 or img.size == 0:
        raise AnnotationError(f"image is empty (shape {img.shape})")
    check_finite(img)
    axes = validate_axes(axes, img.shape) if axes is not None else guess_axes(img.shape)
    lab_axes = output_axes(axes)
    want = tuple(n for n, a in zip(img.shape, axes, strict=True) if a != "C")
    if lab.shape != want:
        raise AnnotationError(
            f"labels have shape {lab.shape} but the image {img.shape} (axes {axes}) needs {want}"
        )
    lab = _check_labels(lab, ignore_label)
    can = to_canonical(img, axes)
    n_t, n_z, n_c, h, w = (int(s) for s in can.shape)
    chans = select_channels(n_c, model.config.in_channels, channel, "C" in axes)
    lab_can = np.asarray(to_canonical(lab, lab_axes)[:, :, 0])  # (T, Z, Y, X)
    mask_can = _reviewed_planes(reviewed, (n_t, n_z, h, w), lab_axes)
    chosen = _selected_planes(slices, n_t, n_z, axes)
    explicit = chosen is not None or mask_can is not None
    planes = chosen if chosen is not None else [(t, z) for t in range(n_t) for z in range(n_z)]
    low, high = model.normalization

    samples: list[Sample] = []
    bounds_of: dict[int, list] = {}
    for t, z in planes:
        plab = lab_can[t, z]
        if plab.dtype.kind == "b":
            plab = ndi.label(plab)[0]
        counted = np.ones((h, w), bool) if mask_can is None else np.array(mask_can[t, z], bool)
        if ignore_label is not None:
            counted &= plab != ignore_label
        big = plab.dtype.kind == "u" and plab.dtype.itemsize >= 4 and int(plab.max(initial=0)) >= 2**31
        plab = np.where(counted, plab, 0).astype(np.int64 if big else np.int32)
        if not counted.any():
            continue
        if not explicit and not plab.any():
            continue  # an untouched, all-background plane: not annotation (see module docstring)
        if mask_can is None and ignore_label is None and plab.min() == plab.max() != 0:
            raise AnnotationError(
                f"{_plane_name(t, z, axes) or 'the image'} is one object covering everything: "
                "label the objects, not the whole image"
            )
        if t not in bounds_of:  # per time point over the whole z-stack, as prediction does
            frame = np.asarray(can[t, :, chans])
            if frame.dtype == bool:
                frame = frame.view(np.uint8)
            bounds_of[t] = [channel_bounds(frame[:, c], low, high) for c in range(frame.shape[1])]
        plane = np.asarray(can[t, z, chans])
        if plane.dtype == bool:
            plane = plane.view(np.uint8)
        norm = apply_bounds(plane, bounds_of[t])
        samples.append(
            Sample(
                norm,
                plab,
                None if counted.all() else counted,
                source=source,
                plane=_plane_name(t, z, axes),
            )
        )
    if not samples:
        if chosen is None and (n_t > 1 or n_z > 1):
            raise NoAnnotationError(
                "no slice of the stack holds labels: edit or mark at least one slice as reviewed"
            )
        if ignore_label is not None and (lab == ignore_label).all():
            raise NoAnnotationError("every pixel has the ignore label: nothing is annotated")
        raise NoAnnotationError(
            "no annotation: the labels are all background or not annotated; paint objects, "
            "or mark the image reviewed if it really holds none"
        )
    return samples


def _plane_name(t: int, z: int, axes: str) -> str:
    parts = [f"t={t}"] if "T" in axes else []
    parts += [f"z={z}"] if "Z" in axes else []
    return ", ".join(parts)
