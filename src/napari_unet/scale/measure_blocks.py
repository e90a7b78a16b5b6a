"""Per-object measurements of a labels store larger than memory, block by block.

Every column that is a sum, a minimum or a maximum over an object's pixels (size, centroid,
bounding box, mean and max intensity, and the second moments that give eccentricity) can be
gathered block by block and combined at the end (:mod:`napari_unet.engine.object_stats`, the
statistics the in-memory table is made of too), so memory holds one read of labels and image
plus a few numbers per object. Solidity needs an object's whole shape at once and is not given
here. The columns otherwise match :func:`napari_unet.engine.measure.measure_labels`.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from napari_unet.common.axes import output_axes
from napari_unet.common.generators import drain
from napari_unet.engine.config import Progress
from napari_unet.engine.measure import (
    Table,
    add_physical_units,
    check_axes,
    join_frames,
    one_channel,
    pixel_sizes,
    split_frames,
)
from napari_unet.engine.object_stats import combine_stats, object_stats, stats_table
from napari_unet.io.omezarr import read_ome_zarr

__all__ = ["BLOCK", "READ_PIXELS", "iter_measure_blocks", "measure_blocks", "measure_store"]

BLOCK = 1024  # px per side of a Y/X block (Z: 16 slices): ~70 MB of int64 work arrays at most
READ_PIXELS = 1 << 24  # px of labels (and of image) read at once: 64 MB of uint32 labels


def _steps(spatial: str, block: int) -> list[int]:
    """The block's size per spatial axis: ``block`` px in Y/X, at most 16 slices in Z."""
    return [max(1, min(16, block)) if a == "Z" else block for a in spatial]


def _outer_steps(steps: list[int]) -> list[int]:
    """Blocks are read k x k at a time in Y/X, up to :data:`READ_PIXELS` per read.

    A lazy image is often chunked one plane per chunk (a lazy TIFF): every read of a block
    would decode the whole plane again, 64 times for an 8192 px plane cut into 1024 px blocks.
    Reading 4096 px squares and measuring their 1024 px blocks in memory reads it 4 times.
    """
    k = max(1, math.isqrt(READ_PIXELS // max(1, math.prod(steps))))
    return [s * k if i >= len(steps) - 2 else s for i, s in enumerate(steps)]


def _grid(shape: Sequence[int], steps: Sequence[int]) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """Each block's first pixel and its index, in C order."""
    for origin in itertools.product(*(range(0, n, s) for n, s in zip(shape, steps, strict=True))):
        yield origin, tuple(slice(o, min(o + s, n)) for o, s, n in zip(origin, steps, shape, strict=True))


def _block_count(shape: Sequence[int], steps: Sequence[int]) -> int:
    return math.prod(-(-int(n) // s) for n, s in zip(shape, steps, strict=True))


def _iter_frame(labels: Any, image: Any, spatial: str, block: int) -> Generator[None, None, Table]:
    """One frame's rows; yields once per block measured."""
    shape = tuple(int(s) for s in labels.shape)
    steps = _steps(spatial, block)
    parts = []
    for outer, index in _grid(shape, _outer_steps(steps)):
        lab_o = np.asarray(labels[index])
        img_o = None if image is None else np.asarray(image[index])
        for inner, sub in _grid(lab_o.shape, steps):
            origin = [o + i for o, i in zip(outer, inner, strict=True)]
            parts.append(object_stats(lab_o[sub], None if img_o is None else img_o[sub], origin))
            yield
        del lab_o, img_o
    stats = combine_stats(parts)
    if not stats:  # no object: the same columns, with no rows
        one = (1,) * len(spatial)
        stats = object_stats(np.zeros(one, np.uint8), None if image is None else np.zeros(one))
    return stats_table(stats, spatial)


def iter_measure_blocks(
    labels: Any,
    image: Any = None,
    *,
    axes: str | None = None,
    scale: Mapping[str, float] | Sequence[float] | None = None,
    unit: str | None = None,
    block: int = BLOCK,
) -> Generator[Progress, None, Table]:
    """:func:`measure_blocks` as a generator: one ``Progress(done, total, "measure")`` per block.

    A napari worker drives it (each yield is where Stop takes effect); the table is its return value.
    """
    if np.dtype(labels.dtype).kind not in "iu":
        raise ValueError(f"labels must be integers, not {labels.dtype}")
    axes = check_axes(axes, tuple(labels.shape))
    if image is not None and tuple(image.shape) != tuple(labels.shape):
        raise ValueError(f"image shape {tuple(image.shape)} differs from the labels' {tuple(labels.shape)}")
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a whole number of px >= 1, got {block}")
    pixel_sizes(axes, scale)  # a bad scale is refused before any work
    spatial = axes.replace("T", "")
    frames = split_frames(labels, image, axes)
    plane = [int(n) for n, a in zip(labels.shape, axes, strict=True) if a != "T"]
    total = _block_count(plane, _steps(spatial, block)) * len(frames)
    done = 0
    parts = []
    for i, lab, img in frames:
        gen = _iter_frame(lab, img, spatial, block)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                part = stop.value
                break
            done += 1
            yield Progress(done, total, "measure")
        parts.append((i, part))
    return add_physical_units(join_frames(parts), axes, scale, unit)


def measure_blocks(
    labels: Any,
    image: Any = None,
    *,
    axes: str | None = None,
    scale: Mapping[str, float] | Sequence[float] | None = None,
    unit: str | None = None,
    block: int = BLOCK,
) -> Table:
    """One row per object (and frame) of a labels array read block by block (zarr, dask, numpy).

    As :func:`napari_unet.engine.measure.measure_labels`, without ``solidity``; ``block`` is
    the Y/X block size in px. Memory: one read (:data:`READ_PIXELS` of labels and of the
    image) and a few numbers per object.
    """
    return drain(iter_measure_blocks(labels, image, axes=axes, scale=scale, unit=unit, block=block))


def measure_store(
    store: str | os.PathLike,
    image: Any = None,
    *,
    image_axes: str | None = None,
    channel: int | None = None,
    scale: Mapping[str, float] | None = None,
    unit: str | None = None,
    block: int = BLOCK,
) -> Table:
    """The objects of an OME-Zarr labels store written by :mod:`napari_unet.scale.chunked`.

    ``image`` (numpy or dask, axes ``image_axes``) gives the intensities: its ``channel``
    (default 0) is taken and its axes put in the store's order (``TZYX``), lazily, so it is
    read block by block too. ``scale`` and ``unit``: the pixel size, as for
    :func:`measure_blocks` (the input file's, so the columns are those of an in-memory run).
    """
    labels, axes, _ = read_ome_zarr(store)
    if axes is None:
        axes = check_axes(None, tuple(labels.shape))
    if image is not None:
        if image_axes is None:
            raise ValueError("image_axes are needed to pair an image with the labels store")
        image = one_channel(image, image_axes, channel)
        kept = output_axes(image_axes)
        if sorted(kept) != sorted(axes):
            raise ValueError(f"image axes {image_axes} do not match the labels' {axes}")
        order = [kept.index(a) for a in axes]
        if order != sorted(order):
            image = image.transpose(order)
    return measure_blocks(labels, image, axes=axes, scale=scale, unit=unit, block=block)
