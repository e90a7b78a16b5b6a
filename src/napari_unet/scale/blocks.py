"""Blocks of a frame and array access by block, for the chunked engine.

A frame larger than memory is visited in (Z, Y, X) blocks: each block writes its *core* and
reads its *ext* (core plus a halo of context). :func:`plan_blocks` lays them out in raster
order, :func:`default_halo` and :func:`default_block` size them from the object scale and a
voxel budget, and :class:`LabelsOut` reads and writes boxes of one frame of a labels array
whatever its axis order.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

from napari_unet.engine.config import PredictConfig
from napari_unet.engine.object_scale import effective_anisotropy, object_diameter
from napari_unet.models.model_file import Model

__all__ = [
    "BLOCK_VOXELS",
    "MAX_WHOLE_Z",
    "PLANE_CHUNK",
    "Z_BLOCK",
    "Block",
    "Box",
    "LabelsOut",
    "as_triple",
    "default_block",
    "default_halo",
    "lazy_array",
    "load",
    "plan_blocks",
]

BLOCK_VOXELS = 2_500_000  # voxels of a post-processing block with its halo (~40 B each)
MAX_WHOLE_Z = 64  # stacks up to this many slices are not split along Z
Z_BLOCK = 32
PLANE_CHUNK = 1024

Box = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Block:
    """One block of a (Z, Y, X) frame.

    ``core``: the part of the frame this block writes; ``ext``: what it reads (core plus
    halo, clipped to the frame); ``index``: its (z, y, x) position in the block grid.
    """

    index: tuple[int, int, int]
    core: Box
    ext: Box

    @property
    def inner(self) -> Box:
        """The core in the coordinates of the extended block."""
        return tuple(
            slice(c.start - e.start, c.stop - e.start) for c, e in zip(self.core, self.ext, strict=True)
        )

    @property
    def ext_shape(self) -> tuple[int, int, int]:
        """(Z, Y, X) size of the extended block."""
        return tuple(e.stop - e.start for e in self.ext)


def _axis_cores(n: int, size: int, even: bool = True) -> list[tuple[int, int]]:
    """Cores <= ``size`` covering ``[0, n)``.

    Of about equal length (no sliver at the end), or with ``even=False`` of exactly ``size``
    but the last (tile grids stay aligned).
    """
    size = max(size, 1)
    if not even:
        return [(a, min(a + size, n)) for a in range(0, n, size)]
    k = max(1, math.ceil(n / size))
    bounds = [round(i * n / k) for i in range(k + 1)]
    return list(itertools.pairwise(bounds))


def plan_blocks(
    shape: tuple[int, int, int], block: tuple[int, int, int], halo: tuple[int, int, int], even: bool = True
) -> list[Block]:
    """Blocks over a (Z, Y, X) frame in raster order.

    The halo is dropped along an axis that is not split (nothing to share there).
    """
    axes = []
    for n, size, h in zip(shape, block, halo, strict=True):
        cores = _axis_cores(int(n), int(size), even)
        h = int(h) if len(cores) > 1 else 0
        axes.append([(slice(a, b), slice(max(0, a - h), min(int(n), b + h))) for a, b in cores])
    out = []
    for idx in itertools.product(*(range(len(a)) for a in axes)):
        core = tuple(axes[d][i][0] for d, i in enumerate(idx))
        ext = tuple(axes[d][i][1] for d, i in enumerate(idx))
        out.append(Block(idx, core, ext))  # type: ignore[arg-type]
    return out


def default_halo(model: Model, config: PredictConfig = PredictConfig()) -> tuple[int, int, int]:
    """(Z, Y, X) halo of the post-processing blocks.

    Two object diameters in Y/X (rounded up to 8 px; more than the seed erosion and than any
    object that crosses the core's border) and one diameter in slices (plus one) in Z. The
    net's own context is separate: prediction blocks are read with ``config.overlap`` px
    around them.
    """
    diameter = object_diameter(model, config)
    yx = int(math.ceil(2.0 * diameter / 8.0) * 8)
    z = math.ceil(diameter / effective_anisotropy(config)) + 1
    return z, yx, yx


def default_block(
    shape: tuple[int, int, int], halo: tuple[int, int, int], config: PredictConfig = PredictConfig()
) -> tuple[int, int, int]:
    """Core (Z, Y, X) of the post-processing blocks.

    About ``BLOCK_VOXELS`` voxels with the halo, whatever the frame's size and depth, so
    memory does not grow with the stack. Z is split only beyond ``MAX_WHOLE_Z`` slices.
    """
    n_z = int(shape[0])
    zb = n_z if n_z <= MAX_WHOLE_Z else Z_BLOCK
    z_ext = n_z if zb >= n_z else zb + 2 * halo[0]
    side = int(math.sqrt(BLOCK_VOXELS / max(z_ext, 1)))
    core = max(side - 2 * halo[1], 2 * halo[1], 32)
    return zb, min(core, int(shape[1])), min(core, int(shape[2]))


def as_triple(value: int | tuple[int, ...] | None, name: str) -> tuple[int, int, int] | None:
    """A ``block`` or ``halo`` argument as (z, y, x); a (y, x) pair gets z 1 (block) or 0 (halo)."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return int(value), int(value), int(value)
    vals = tuple(int(v) for v in value)
    if len(vals) == 2:
        vals = (1, *vals) if name == "block" else (0, *vals)
    if len(vals) != 3:
        raise ValueError(f"{name} must be an int or (z, y, x), got {value!r}")
    return vals  # type: ignore[return-value]


def lazy_array(image: Any, axes: str) -> Any:
    """Numpy and dask arrays as they are; zarr and other array-likes as dask arrays over them.

    Indexing then reads only the chunks a block touches (array-likes without chunks: one
    plane of up to ``PLANE_CHUNK`` x ``PLANE_CHUNK`` per chunk; dask reads a chunk whole).
    """
    if isinstance(image, (np.ndarray, da.Array)):
        return image
    if not (hasattr(image, "shape") and hasattr(image, "dtype") and hasattr(image, "__getitem__")):
        return np.asarray(image)
    chunks = getattr(image, "chunks", None)
    if not (isinstance(chunks, tuple) and len(chunks) == len(image.shape)):
        chunks = tuple(
            min(int(n), PLANE_CHUNK) if a in "YX" else 1 for n, a in zip(image.shape, axes, strict=True)
        )
    return da.from_array(image, chunks=chunks, lock=False, asarray=False)


def load(part: Any) -> np.ndarray:
    """A small part of a numpy or dask array as numpy (dask: in this thread, no pool)."""
    if isinstance(part, np.ndarray):
        return part
    return np.asarray(part.compute(scheduler="synchronous"))


class LabelsOut:
    """(Z, Y, X) boxes of frame ``t`` of the labels array, which has the axis order ``axes``."""

    def __init__(self, out: Any, axes: str) -> None:
        self.out, self.axes = out, axes
        self.data_axes = [a for a in axes if a != "T"]
        self.has_z = "Z" in axes

    def _index(self, t: int, box: Box) -> tuple:
        where = {"T": t, "Z": box[0], "Y": box[1], "X": box[2]}
        return tuple(where[a] for a in self.axes)

    def read(self, t: int, box: Box) -> np.ndarray:
        """The labels of ``box`` in frame ``t``, as (Z, Y, X)."""
        data = np.asarray(self.out[self._index(t, box)])
        data = np.transpose(data, [self.data_axes.index(a) for a in "ZYX" if a in self.data_axes])
        return data if self.has_z else data[None]

    def write(self, t: int, box: Box, values: np.ndarray) -> None:
        """Write (Z, Y, X) ``values`` into ``box`` of frame ``t``."""
        zyx = [a for a in "ZYX" if a in self.data_axes]
        data = values if self.has_z else values[0]
        self.out[self._index(t, box)] = np.transpose(data, [zyx.index(a) for a in self.data_axes])
