"""Tile grid, mirror padding and stitching for images of any size (pure numpy, no torch).

This is the overlap-tile strategy of Ronneberger et al. 2015. An image is cut into tiles
of one size (so they can be batched), each tile is predicted, and only a part of each
output tile is kept, so every kept pixel was computed with enough context around it:

* 'valid' nets (output smaller than input by a margin ``g`` on each side): the image is
  mirror-padded by ``g`` and the output tiles simply sit side by side, as in the paper.
* 'same' nets (output as large as input): neighbouring tiles overlap by at least
  ``overlap`` pixels and each keeps its half of the overlap, so a seam is at least
  ``overlap // 2`` pixels from any tile edge. At the image border the net sees the
  border itself (no invented context), which is also how it was trained and validated.

Tile positions are multiples of ``multiple`` (``2**depth`` of the U-Net), so max-pooling
sees the same pixel grid in every tile as in a whole-image prediction: with enough
overlap, tiled and whole-image predictions agree to rounding.

The tile size is shrunk to the smallest that needs no more tiles than the largest allowed
one: a 2048-pixel side with ``tile=1024, overlap=64`` becomes two 1056-pixel tiles, not
three, and an image smaller than a tile is one tile just large enough to hold it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class TilingError(ValueError):
    """Tile parameters that cannot cover an image (e.g. overlap as large as the tile)."""


@dataclass(frozen=True)
class AxisPlan:
    """Tiles along one axis.

    ``starts``: each output window's start in image coordinates; ``size``: output window
    side; ``keep``: per tile the (begin, end) image range that tile writes; ``extent``: the
    padded length ``starts[-1] + size`` (>= the image length).
    """

    length: int
    size: int
    starts: tuple[int, ...]
    keep: tuple[tuple[int, int], ...]

    @property
    def extent(self) -> int:
        """The padded length ``starts[-1] + size`` (>= the image length)."""
        return self.starts[-1] + self.size

    def __len__(self) -> int:
        return len(self.starts)


def _count(length: int, size: int, step: int, min_overlap: int) -> int | None:
    """How many windows of ``size`` (positions multiples of ``step``) cover ``length``."""
    if length <= size:
        return 1
    max_step = (size - min_overlap) // step * step
    if max_step < step:
        return None
    last = math.ceil((length - size) / step) * step
    return 1 + math.ceil(last / max_step)


def plan_axis(length: int, sizes: Sequence[int], step: int = 1, min_overlap: int = 0) -> AxisPlan:
    """Lay windows along an axis of ``length`` pixels.

    ``sizes``: the window sides allowed (ascending); the largest is the tile limit. Picks the
    fewest windows, then the smallest allowed side with that count. Starts are multiples of
    ``step``; neighbours overlap by at least ``min_overlap`` and split the overlap in the middle.
    """
    if length < 1:
        raise TilingError(f"cannot tile an axis of length {length}")
    sizes = sorted(int(s) for s in sizes if s > 0)
    if not sizes:
        raise TilingError("no usable tile size")
    best = _count(length, sizes[-1], step, min_overlap)
    if best is None:
        raise TilingError(
            f"tile {sizes[-1]} is too small for an overlap of {min_overlap} (positions step {step})"
        )
    size = next(s for s in sizes if _count(length, s, step, min_overlap) == best)
    if best == 1:
        starts = [0]
    else:
        units = math.ceil((length - size) / step)
        q, r = divmod(units, best - 1)
        starts = [0]
        for i in range(best - 1):
            starts.append(starts[-1] + (q + (1 if i < r else 0)) * step)
    keep = []
    for i, s in enumerate(starts):
        lo = 0 if i == 0 else (s + starts[i - 1] + size) // 2
        hi = length if i == len(starts) - 1 else (starts[i + 1] + s + size) // 2
        keep.append((lo, min(hi, length)))
    return AxisPlan(length, size, tuple(starts), tuple(keep))


@dataclass(frozen=True)
class Tile:
    """One tile of a grid.

    ``source`` slices the padded image for the net's input; ``crop`` slices the net's output
    tile to the part kept; ``target`` is where that part goes in the image.
    """

    index: tuple[int, int]
    source: tuple[slice, slice]
    crop: tuple[slice, slice]
    target: tuple[slice, slice]


@dataclass(frozen=True)
class TileGrid:
    """Tiles over a 2-D image of ``shape``; the net maps ``input_shape`` to ``output_shape``."""

    shape: tuple[int, int]
    rows: AxisPlan
    cols: AxisPlan
    margin: tuple[int, int]

    @property
    def output_shape(self) -> tuple[int, int]:
        """(h, w) of the net's output for one tile."""
        return self.rows.size, self.cols.size

    @property
    def input_shape(self) -> tuple[int, int]:
        """(h, w) of the net's input for one tile (output plus the margin of 'valid' nets)."""
        return self.rows.size + 2 * self.margin[0], self.cols.size + 2 * self.margin[1]

    @property
    def pad_width(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """Mirror padding (before, after) per axis that every tile's input needs."""
        (gy, gx), (h, w) = self.margin, self.shape
        return (gy, gy + self.rows.extent - h), (gx, gx + self.cols.extent - w)

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    @property
    def tiles(self) -> list[Tile]:
        """Every tile, row by row."""
        out = []
        iy, ix = self.input_shape
        for r, (sy, (ky0, ky1)) in enumerate(zip(self.rows.starts, self.rows.keep, strict=True)):
            for c, (sx, (kx0, kx1)) in enumerate(zip(self.cols.starts, self.cols.keep, strict=True)):
                out.append(
                    Tile(
                        (r, c),
                        (slice(sy, sy + iy), slice(sx, sx + ix)),
                        (slice(ky0 - sy, ky1 - sy), slice(kx0 - sx, kx1 - sx)),
                        (slice(ky0, ky1), slice(kx0, kx1)),
                    )
                )
        return out

    def pad(self, image: np.ndarray) -> np.ndarray:
        """Mirror-pad the last two axes of ``image`` for the tiles' inputs (no copy if none needed)."""
        if image.shape[-2:] != self.shape:
            raise TilingError(f"image is {image.shape[-2:]}, grid was made for {self.shape}")
        pw = self.pad_width
        if not any(pw[0] + pw[1]):
            return image
        return np.pad(image, [(0, 0)] * (image.ndim - 2) + list(pw), mode="reflect")

    def split(self, image: np.ndarray) -> Iterator[np.ndarray]:
        """The input tile of every tile, in ``tiles`` order (views of one padded copy)."""
        padded = self.pad(image)
        for t in self.tiles:
            yield padded[(..., *t.source)]

    def stitch(
        self, outputs: Sequence[np.ndarray] | Iterator[np.ndarray], out: np.ndarray | None = None
    ) -> np.ndarray:
        """Assemble output tiles (..., *output_shape), in ``tiles`` order, into (..., *shape)."""
        for t, o in zip(self.tiles, outputs, strict=True):
            if o.shape[-2:] != self.output_shape:
                raise TilingError(f"output tile is {o.shape[-2:]}, expected {self.output_shape}")
            if out is None:
                out = np.empty(o.shape[:-2] + self.shape, o.dtype)
            out[(..., *t.target)] = o[(..., *t.crop)]
        if out is None:  # pragma: no cover - a grid always has at least one tile
            raise TilingError("no tiles")
        return out


def make_grid(
    shape: tuple[int, int],
    tile: int | tuple[int, int],
    overlap: int = 0,
    multiple: int = 1,
) -> TileGrid:
    """Grid for a 'same'-padding net whose input sides must be multiples of ``multiple``.

    ``tile``: the largest part of the image one tile contributes; the net sees up to
    ``tile + overlap`` (rounded down to ``multiple``).
    """
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    if min(shape) < 1:
        raise TilingError(f"cannot tile an image of shape {shape}")
    if overlap < 0 or multiple < 1:
        raise TilingError("overlap must be >= 0 and multiple >= 1")
    plans = []
    for length, t in zip(shape, (th, tw), strict=True):
        limit = max((t + overlap) // multiple, 1) * multiple
        sizes = range(multiple, limit + 1, multiple)
        plans.append(plan_axis(length, sizes, multiple, overlap))
    return TileGrid((int(shape[0]), int(shape[1])), plans[0], plans[1], (0, 0))


class NetGeometry(Protocol):
    """What tiling needs to know about a net (``napari_unet.models.unet.UNet`` has all of it)."""

    @property
    def multiple(self) -> int:
        """Tile positions and sizes must be multiples of this (the net's total pooling)."""
        ...

    def output_size(self, size: int) -> int:
        """Output side for an input side of ``size``."""
        ...

    def valid_input_size(self, min_output: int) -> int:
        """Smallest input side that gives at least ``min_output``."""
        ...


def _valid_sizes(net: NetGeometry, tile: int) -> tuple[list[int], int]:
    """Output sides a 'valid' net can produce up to ``tile`` (at least the smallest), and its margin."""
    sizes: list[int] = []
    margins = set()
    size = net.valid_input_size(1)
    while True:
        out = net.output_size(size)
        if out > 0:
            if sizes and out > tile:
                break
            sizes.append(out)
            margins.add(size - out)
        size += 1
    margin2 = margins.pop()
    if margins or margin2 % 2:
        raise TilingError("the net's margin is not constant and symmetric; cannot tile it")
    return sizes, margin2 // 2


def grid_for_net(
    shape: tuple[int, int], net: NetGeometry, tile: int, overlap: int, padding: str = "same"
) -> TileGrid:
    """Grid for a U-Net of either padding.

    ``padding`` 'same' uses :func:`make_grid`; 'valid' tiles the output side by side
    (``tile`` = largest output side; ``overlap`` is not needed and ignored).
    """
    if padding == "same":
        return make_grid(shape, tile, overlap, net.multiple)
    if padding != "valid":
        raise TilingError(f"unknown padding {padding!r}")
    if min(shape) < 1:
        raise TilingError(f"cannot tile an image of shape {shape}")
    sizes, margin = _valid_sizes(net, tile)
    # Windows must start on the pooling grid, so consecutive outputs overlap by (size mod multiple).
    plans = [plan_axis(length, sizes, net.multiple, 0) for length in shape]
    return TileGrid((int(shape[0]), int(shape[1])), plans[0], plans[1], (margin, margin))
