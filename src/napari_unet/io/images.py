"""Images in: which reader a file goes to, and what every reader returns.

Reading returns the pixels, the axes the file itself declares (or ``None`` where it does not
say) and a small metadata dict, so the caller decides what an ambiguous array means: a
guessed axis order is worse than asking the user. The readers live in
:mod:`napari_unet.io.tiff` (TIFF, OME-TIFF, ImageJ), :mod:`napari_unet.io.plain` (PNG, JPEG) and
:mod:`napari_unet.io.omezarr` (OME-Zarr); every one raises
:class:`~napari_unet.io.errors.ImageReadError` with a one-line reason.

:func:`open_image` is :func:`read_image` for stacks of any size: a TIFF whose pixels exceed
:data:`~napari_unet.io.tiff.LAZY_THRESHOLD` (1 GiB, or ``NAPARI_UNET_LAZY_BYTES``) comes back as a
dask array that reads planes on demand; OME-Zarr folders are always lazy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.io.errors import ImageReadError, first_line
from napari_unet.io.omezarr import read_ome_zarr
from napari_unet.io.plain import PLAIN_SUFFIXES, read_plain
from napari_unet.io.tiff import LAZY_THRESHOLD, lazy_threshold, open_tiff, read_tiff

__all__ = [
    "LAZY_THRESHOLD",
    "PLAIN_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "TIFF_SUFFIXES",
    "ZARR_SUFFIXES",
    "ImageReadError",
    "image_stem",
    "open_image",
    "read_image",
]

TIFF_SUFFIXES = (".tif", ".tiff")
SUPPORTED_SUFFIXES = (".ome.tif", ".ome.tiff", *TIFF_SUFFIXES, *PLAIN_SUFFIXES)
ZARR_SUFFIXES = (".ome.zarr", ".zarr")


def image_stem(path: str | os.PathLike) -> str:
    """File name without its image suffix; ``a.ome.tif`` -> ``a`` (not ``a.ome``)."""
    name = Path(path).name
    lower = name.lower()
    for suffix in (*SUPPORTED_SUFFIXES, *ZARR_SUFFIXES):
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _suffix(path: Path) -> str:
    """The image suffix that decides the reader (``.ome.tif`` before ``.tif``), lower case."""
    lower = path.name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImageReadError("no such file")
    if path.is_dir():
        raise ImageReadError("is a folder, not an image file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageReadError(f"cannot read file ({exc.strerror or first_line(exc)})") from None
    if size == 0:
        raise ImageReadError("file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise ImageReadError("permission denied")


def read_image(
    path: str | os.PathLike, collapse_gray_rgb: bool = True
) -> tuple[np.ndarray, str | None, dict[str, Any]]:
    """Read a TIFF/OME-TIFF/PNG/JPEG into memory.

    Parameters
    ----------
    path : str or os.PathLike
        The file: ``.tif``, ``.tiff``, ``.ome.tif``, ``.ome.tiff``, ``.png``, ``.jpg`` or ``.jpeg``.
    collapse_gray_rgb : bool, default True
        Return an RGB(A) PNG/JPEG whose colour channels are identical (and whose alpha is opaque)
        as one grey ``"YX"`` plane; False keeps the raw ``"YXC"`` array.

    Returns
    -------
    pixels : numpy.ndarray
        The image in native byte order.
    axes : str or None
        The file's axes in the letters TZCYX; ``None`` where the file does not say.
    meta : dict
        May hold ``format``, ``file_axes`` (tifffile's letters), ``pixel_size``
        ({"X", "Y", "Z"}) with ``unit``, ``rgb`` and ``collapsed_rgb``.

    Raises
    ------
    ImageReadError
        With a one-line reason (no path in it) for anything that is not a complete, non-empty
        image of a supported type.

    Examples
    --------
    >>> pixels, axes, meta = read_image("nuclei.tif")  # doctest: +SKIP
    >>> axes, meta.get("pixel_size")  # doctest: +SKIP
    ('ZYX', {'X': 0.2, 'Y': 0.2, 'Z': 1.0})
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in SUPPORTED_SUFFIXES:
        shown = suffix or "(none)"
        raise ImageReadError(
            f"unsupported file type {shown} (supported: {', '.join(s for s in SUPPORTED_SUFFIXES)})"
        )
    _check_file(path)
    if suffix in PLAIN_SUFFIXES:
        return read_plain(path, suffix, collapse_gray_rgb)
    return read_tiff(path)


def open_image(
    path: str | os.PathLike,
    lazy: bool | None = None,
    lazy_threshold_bytes: int = LAZY_THRESHOLD,
) -> tuple[Any, str | None, dict[str, Any]]:
    """Open an image of any size: :func:`read_image`, lazily (dask) for big stacks and OME-Zarr.

    Parameters
    ----------
    path : str or os.PathLike
        A file :func:`read_image` reads, or an OME-Zarr folder (``.zarr``, ``.ome.zarr`` or any
        folder).
    lazy : bool or None, default None
        TIFF/OME-TIFF only: True always returns a dask array (one chunk per plane, pages read on
        demand), False always reads into memory, None reads lazily when the uncompressed pixels
        exceed ``lazy_threshold_bytes``. OME-Zarr is always lazy, PNG/JPEG never.
    lazy_threshold_bytes : int, default ``LAZY_THRESHOLD`` (1 GiB)
        The size above which ``lazy=None`` opens a TIFF lazily. The default can be changed with
        the ``NAPARI_UNET_LAZY_BYTES`` environment variable; a value the caller gives wins.

    Returns
    -------
    data : numpy.ndarray or dask.array.Array
        The pixels; for OME-Zarr the highest resolution level.
    axes : str or None
        The file's axes in the letters TZCYX; ``None`` where the file does not say.
    meta : dict
        :func:`read_image`'s keys plus ``lazy``, ``nbytes``, ``channel_names``,
        ``pixel_size["T"]`` (with ``time_unit``) where known, and ``note`` when axes were not
        given.

    Raises
    ------
    ImageReadError
        With a one-line reason for a missing, empty, truncated, corrupt or unsupported file or
        store, or a ``NAPARI_UNET_LAZY_BYTES`` that is not a number.

    Examples
    --------
    >>> data, axes, meta = open_image("stack.ome.zarr")  # doctest: +SKIP
    >>> meta["lazy"], axes  # doctest: +SKIP
    (True, 'TZCYX')
    """
    path = Path(path)
    lower = path.name.lower().rstrip("/")
    if lower.endswith(ZARR_SUFFIXES) or path.is_dir():
        data, axes, meta = read_ome_zarr(path)
        meta["lazy"] = True
        meta["nbytes"] = int(data.nbytes)
        return data, axes, meta
    suffix = _suffix(path)
    if suffix in TIFF_SUFFIXES or suffix in (".ome.tif", ".ome.tiff"):
        _check_file(path)
        return open_tiff(path, lazy, lazy_threshold(lazy_threshold_bytes))
    data, axes, meta = read_image(path)
    meta.update(lazy=False, nbytes=int(data.nbytes))
    return data, axes, meta
