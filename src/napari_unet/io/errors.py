"""The one error every reader raises, and the checks that every reader's pixels pass.

A reader reports what is wrong with a file in one line without its path (the caller knows
the path and decides how to show it), so the CLI, the batch report and napari can all say
"which file: why" without a traceback.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_NDIM", "ImageReadError", "check_pixels", "first_line", "native_order"]

MAX_NDIM = 5  # TZCYX: more dimensions than these are refused, never squeezed or guessed


class ImageReadError(ValueError):
    """A file that cannot be read as an image; the message is one line, without the path."""


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (its type's name if empty), cut at ``limit``.

    Libraries raise multi-line messages; a one-line reason is what the user is shown.
    """
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:limit]


def native_order(data: np.ndarray) -> np.ndarray:
    """Native byte order: torch and most of numpy's fast paths refuse big-endian arrays."""
    return data if data.dtype.isnative else data.astype(data.dtype.newbyteorder("="))


def check_pixels(data: np.ndarray) -> np.ndarray:
    """Refuse pixels that are no image (none, or not numbers); return them in native byte order."""
    if data.size == 0:
        raise ImageReadError(f"image has no pixels (shape {tuple(data.shape)})")
    if data.dtype.kind not in "biuf":
        raise ImageReadError(f"unsupported pixel type {data.dtype}")
    return native_order(np.asarray(data))
