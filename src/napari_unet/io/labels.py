"""Label images out: integer labels to a compressed TIFF, atomically, calibrated for Fiji.

Labels are written atomically (temporary file in the same folder, then ``os.replace``): an
interrupted run never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import tifffile

from napari_unet.common.atomic import atomic_write

__all__ = ["write_labels"]

_IMAGEJ_ORDER = "TZCYX"


def _label_dtype(kind: str, lo: int, hi: int) -> np.dtype:
    """The smallest of uint16/uint32 that holds labels in ``[lo, hi]`` (ImageJ reads uint16)."""
    if kind not in "iu":
        raise ValueError(f"labels must be integers, not {kind!r} pixels")
    if lo < 0:
        raise ValueError("labels must not be negative")
    if hi < 2**16:
        return np.dtype(np.uint16)
    if hi < 2**32:
        return np.dtype(np.uint32)
    raise ValueError(f"label {hi} does not fit in 32 bits")


def _label_array(labels: np.ndarray) -> np.ndarray:
    """Integer labels in the smallest of uint16/uint32 that holds them (ImageJ reads uint16)."""
    labels = np.asarray(labels)
    if labels.dtype.kind == "b":
        return labels.astype(np.uint16)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, not {labels.dtype}")
    if labels.size == 0:
        raise ValueError(f"labels are empty (shape {labels.shape})")
    dtype = _label_dtype(labels.dtype.kind, int(labels.min()), int(labels.max()))
    return labels.astype(dtype, copy=False)


def _lazy_labels(labels: Any) -> tuple[Iterator[np.ndarray], tuple[int, ...], np.dtype]:
    """Dask/zarr labels -> (one plane at a time, shape, dtype): memory bounded by a plane."""
    data = labels if isinstance(labels, da.Array) else da.from_array(labels, chunks=labels.chunks)
    shape = tuple(int(n) for n in data.shape)
    if data.size == 0 or data.ndim < 2:
        raise ValueError(f"labels are empty or not an image (shape {shape})")
    kind = np.dtype(data.dtype).kind
    if kind == "b":
        dtype = np.dtype(np.uint16)
    else:
        if kind not in "iu":
            raise ValueError(f"labels must be integers, not {data.dtype}")
        lo, hi = dask.compute(data.min(), data.max(), scheduler="threads")
        dtype = _label_dtype(kind, int(lo), int(hi))

    def planes() -> Iterator[np.ndarray]:
        for index in np.ndindex(*shape[:-2]):
            yield np.asarray(data[index].compute(scheduler="threads")).astype(dtype, copy=False)

    return planes(), shape, dtype


def _is_imagej_order(axes: str) -> bool:
    positions = [_IMAGEJ_ORDER.find(a) for a in axes]
    return -1 not in positions and positions == sorted(positions) and axes.endswith("YX")


def write_labels(
    path: str | os.PathLike,
    labels: Any,
    axes: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write integer labels to a zlib-compressed TIFF, atomically.

    ImageJ hyperstack metadata (axes, pixel size) is written where ImageJ can represent the file
    (uint16 labels, axes in TZCYX order), so the labels open calibrated in Fiji; otherwise a plain
    TIFF with tifffile's axes metadata. An interrupted write leaves any previous file as it was.

    Parameters
    ----------
    path : str or os.PathLike
        The TIFF to write; replaced if it exists.
    labels : array-like
        Integer (or bool) labels, 0 = background: numpy, or dask / zarr, which are written a
        plane at a time (BigTIFF beyond 4 GB) and never held in memory whole. Stored as the
        smaller of uint16 / uint32 that holds them.
    axes : str or None, default None
        The labels' axes in the letters TZCYX, one per dimension; None writes no axes.
    meta : dict or None, default None
        ``meta["pixel_size"]`` ({"X", "Y", "Z"}) and ``meta["unit"]`` calibrate the file, as
        :func:`~napari_unet.io.images.open_image` returns them.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        Labels that are not integers, negative, empty, beyond 32 bits, or ``axes`` that do not
        match their dimensions.

    Examples
    --------
    >>> write_labels("nuclei_labels.tif", labels, axes="ZYX", meta=meta)  # doctest: +SKIP
    PosixPath('nuclei_labels.tif')
    """
    path = Path(path)
    if isinstance(labels, np.ndarray) or not hasattr(labels, "chunks"):
        data = _label_array(labels)
        pixels: Any = data
        shape, dtype = data.shape, data.dtype
    else:  # dask or zarr: two passes (max label, then plane by plane), never all in memory
        pixels, shape, dtype = _lazy_labels(labels)
    if axes is not None:
        axes = axes.upper()
        if len(axes) != len(shape):
            raise ValueError(f"axes {axes!r} do not match labels of shape {tuple(shape)}")
    meta = meta or {}
    sizes = meta.get("pixel_size") or {}
    # minisblack: else tifffile may store a length-3 or -4 axis as RGB samples
    kwargs: dict[str, Any] = {"compression": "zlib", "photometric": "minisblack"}
    big = int(np.prod(shape)) * dtype.itemsize > 2**32 - 2**25  # classic TIFF and ImageJ stop at 4 GB
    if axes is not None and dtype == np.uint16 and _is_imagej_order(axes) and not big:
        ij_meta: dict[str, Any] = {"axes": axes}
        if "Z" in sizes and "Z" in axes:
            ij_meta["spacing"] = float(sizes["Z"])
        if "X" in sizes and "Y" in sizes:
            kwargs["resolution"] = (1.0 / float(sizes["X"]), 1.0 / float(sizes["Y"]))
            unit = meta.get("unit")
            if unit:
                ij_meta["unit"] = "micron" if unit in ("µm", "um", "micron") else str(unit)
        kwargs.update(imagej=True, metadata=ij_meta)
    else:
        kwargs["metadata"] = {"axes": axes} if axes is not None else {}
        kwargs["bigtiff"] = big
    if not isinstance(pixels, np.ndarray):
        kwargs.update(shape=shape, dtype=dtype)
    with atomic_write(path) as tmp:
        tifffile.imwrite(tmp, pixels, **kwargs)
    return path
