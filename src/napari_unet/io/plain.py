"""PNG and JPEG in: grey images as they are, colour images as ``YXC`` or collapsed when grey.

A colour image is ``"YXC"`` with ``meta["rgb"] = True``; the caller picks a channel. An
RGB(A) file whose colour channels are identical (and whose alpha, if any, is fully opaque) is a
grayscale image saved as RGB, which many acquisition and export tools do; it is collapsed to
``"YX"`` (``meta["collapsed_rgb"] = True``) because nothing is lost and the user should not
need a flag for it. Pass ``collapse_gray_rgb=False`` to get the raw array, e.g. when the user
describes the file's axes explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np

from napari_unet.io.errors import ImageReadError, check_pixels, first_line

__all__ = ["PLAIN_SUFFIXES", "read_plain"]

PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg")
_MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff"}


def read_plain(path: Path, suffix: str, collapse_gray_rgb: bool) -> tuple[np.ndarray, str | None, dict]:
    """A PNG or JPEG file -> ``(pixels, "YX" or "YXC", meta)``; see the module docstring for RGB."""
    kind = "png" if suffix == ".png" else "jpeg"
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head.startswith(_MAGIC[kind]):  # decoders give baffling messages for non-images
        raise ImageReadError(f"not a {kind.upper()} image (unrecognised content)")
    try:
        data = np.asarray(iio.imread(path))
    except MemoryError:
        raise ImageReadError("image is too large to load into memory") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError...
        msg = first_line(exc)
        if "truncated" in msg.lower():
            raise ImageReadError(f"truncated {kind.upper()} file") from None
        if "could not find a backend" in msg.lower():
            raise ImageReadError(f"not a {kind.upper()} image (unrecognised content)") from None
        raise ImageReadError(f"not a readable {kind.upper()} image ({msg})") from None
    data = check_pixels(data)
    meta: dict[str, Any] = {"format": kind}
    if data.ndim == 2:
        return data, "YX", meta
    if data.ndim != 3 or data.shape[-1] not in (2, 3, 4):
        raise ImageReadError(f"unexpected {kind.upper()} layout (shape {tuple(data.shape)})")
    nchan = data.shape[-1]
    has_alpha = nchan in (2, 4)
    color = data[..., : nchan - 1] if has_alpha else data
    gray = all(np.array_equal(color[..., 0], color[..., i]) for i in range(1, color.shape[-1]))
    opaque = not has_alpha or bool((data[..., -1] == data[..., -1].max()).all())
    if collapse_gray_rgb and gray and opaque:
        meta["collapsed_rgb"] = True
        return np.ascontiguousarray(color[..., 0]), "YX", meta
    meta["rgb"] = nchan >= 3
    return data, "YXC", meta
