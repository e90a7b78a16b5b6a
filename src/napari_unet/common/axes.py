"""Axes letters of an image: which dimension is time, depth, channel, rows and columns.

Letters: ``T`` time, ``Z`` depth, ``C`` channel (``S``, "sample", is accepted for RGB and
means the same), ``Y`` rows, ``X`` columns. Segmentation treats them differently: ``T``
frames are segmented independently (ids per frame), a ``Z`` stack is segmented as one
volume (one id per nucleus through z), ``C`` is selected or fed to the net.

Guessing is deliberately conservative: a wrong guess silently gives wrong labels (a movie
segmented as a volume links unrelated frames), so ambiguous shapes raise and ask.
"""

from __future__ import annotations

from typing import Any

import numpy as np

AXES_LETTERS = "TZCYX"
CANONICAL = "TZCYX"


class AxesError(ValueError):
    """Axes that do not fit an image, or an image whose axes cannot be guessed."""


def guess_axes(shape: tuple[int, ...], rgb: bool | None = None) -> str:
    """Axes for an image when the user gave none.

    * 2-D: ``YX``.
    * 3-D whose last side is 3 or 4 (RGB/RGBA-like): ``YXC`` if ``rgb`` is true, ``ZYX`` if
      ``rgb`` is false; with ``rgb=None`` it is ambiguous (an RGB image or a 3- or 4-plane
      stack) and raises.
    * Other 3-D: ``ZYX`` (``rgb=True`` raises: the last side is no colour axis).
    * 4-D: only RGB(A) with ``rgb=True`` is guessed, as ``TYXC``: a sequence of colour frames,
      segmented frame by frame (napari shows such data with a slider on the first axis).
      Other 4-D data (TZYX, ZCYX, TCYX, ...) raises: give the axes.
    * 1-D, 0-D or more than 4-D: raises.
    """
    shape = tuple(int(s) for s in shape)
    nd = len(shape)
    rgb_like = nd >= 3 and shape[-1] in (3, 4)
    if nd < 2:
        raise AxesError(f"image of shape {shape} has {nd} dimension(s); need at least 2 (YX)")
    if nd == 2:
        return "YX"
    if rgb and not rgb_like:
        raise AxesError(f"image of shape {shape} is not RGB (last side is not 3 or 4); give axes")
    if nd == 3:
        if rgb_like and rgb is None:
            raise AxesError(
                f"image of shape {shape} looks like RGB; give axes, e.g. YXC (or ZYX for a stack)"
            )
        return "YXC" if rgb else "ZYX"
    if nd == 4 and rgb:
        return "TYXC"
    raise AxesError(f"cannot guess the axes of a {nd}-D image of shape {shape}; give axes, e.g. TZYX or ZCYX")


def validate_axes(axes: str, shape: tuple[int, ...]) -> str:
    """Check axes letters against a shape; return them upper-case with ``S`` written as ``C``."""
    if not isinstance(axes, str):
        raise AxesError(f"axes must be a string such as 'ZYX', not {type(axes).__name__}")
    norm = axes.strip().upper().replace("S", "C")
    shape = tuple(shape)
    bad = sorted(set(norm) - set(AXES_LETTERS))
    if bad:
        raise AxesError(f"axes {axes!r}: unknown letter(s) {''.join(bad)}; use T, Z, C (or S), Y, X")
    if len(norm) != len(shape):
        raise AxesError(
            f"axes {axes!r} have {len(norm)} letters but the image has {len(shape)} dimensions {shape}"
        )
    if len(set(norm)) != len(norm):
        raise AxesError(f"axes {axes!r} repeat a letter (S and C both mean channel)")
    if "Y" not in norm or "X" not in norm:
        raise AxesError(f"axes {axes!r} must contain Y and X")
    return norm


def to_canonical(image: np.ndarray, axes: str) -> np.ndarray:
    """View of ``image`` with axes ``TZCYX`` (missing ones inserted with length 1).

    Works on numpy and dask arrays without loading data (transpose and indexing only).
    """
    axes = validate_axes(axes, image.shape)
    order = [axes.index(a) for a in CANONICAL if a in axes]
    arr = image.transpose(order) if order != list(range(len(order))) else image
    index = tuple(slice(None) if a in axes else None for a in CANONICAL)
    return arr[index]


def labels_from_canonical(labels: np.ndarray, axes: str) -> np.ndarray:
    """Labels in ``TZYX`` -> the image's own axis order, without its ``C`` axis."""
    axes = axes.upper().replace("S", "C")
    if labels.ndim != 4:
        raise AxesError(f"expected TZYX labels, got {labels.ndim} dimensions")
    present = [a for a in "TZYX" if a in axes]
    squeezed = labels[tuple(slice(None) if a in axes else 0 for a in "TZYX")]
    wanted = [a for a in axes if a != "C"]
    return np.transpose(squeezed, [present.index(a) for a in wanted])


def output_axes(axes: str) -> str:
    """The axes of the labels that segmenting an image with ``axes`` gives (``C`` dropped)."""
    return axes.upper().replace("S", "C").replace("C", "")


def decide_axes(data: Any, file_axes: str | None, user_axes: str | None) -> str:
    """--axes, else what the file declares, else a guess that refuses to guess RGB or >4-D."""
    if user_axes is not None:
        return validate_axes(user_axes, data.shape)
    if file_axes is not None:
        return validate_axes(file_axes, data.shape)
    try:
        return guess_axes(data.shape)
    except AxesError as exc:  # its advice "give axes" means, here, the --axes option
        raise AxesError(str(exc).replace("give axes", "pass --axes")) from None
