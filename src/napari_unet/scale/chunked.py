"""Segmenting stacks larger than memory: blocks with a halo, stitched into one id per object.

:func:`iter_segment_chunked` gives the same labels as :func:`napari_unet.engine.predict.iter_segment`
(same objects; a few boundary pixels may differ) while holding only a block in memory. Per T
frame, in three steps:

* **Normalisation** bounds are computed once per frame, from exactly the voxels the in-memory
  path samples (every ``step``-th voxel of the frame in C order, at most ~4 M per channel, see
  :func:`napari_unet.engine.normalize.percentile_bounds`), gathered in one streamed pass over the
  frame. Both paths map intensities identically; the price is one extra read of the frame
  (about 1% of the time for zarr input) and 8 bytes per sampled voxel.
* **Prediction**, one plane at a time (the net is 2D), in Y/X blocks of ``PREDICT_BLOCK`` px
  read with ``config.overlap`` px of context, tiled by the existing engine: no tile is
  predicted twice across Z, and a plane up to 2048 px wide is tiled exactly as in memory. The
  interior and foreground probabilities go, as float16, into a per-frame store: memory for
  small frames, else a temporary zarr store on disk (2 x 2 bytes per voxel; float16 moves a
  probability by < 0.0005, which flips a rare voxel at a threshold).
* **Post-processing** in (Z, Y, X) blocks of about ``BLOCK_VOXELS`` voxels with a halo of two
  object diameters (and one diameter of slices when Z is split): each block is labelled as a
  volume like an in-memory frame, and only its core is kept. Blocks go in raster order; a
  block's halo overlaps the cores already written to ``out``, where its labels are compared
  with the written ids: a label whose overlap has IoU > 0.5 with a written object takes its
  id, and written objects lying mostly inside one label (two arms of one object that meet only
  in this block) are joined in a union-find. Other labels get new ids. A block-wise second
  pass rewrites the frame through a lookup table only when objects were joined.

Memory is set by the blocks (about 0.3 GB besides Python, torch and the model), not by the
stack; the union-find holds only joined ids. Time-lapses are segmented frame by frame (ids
restart per frame, as in memory); with ``track=True`` each frame's objects take the id of the
previous frame's object they overlap with IoU > 0.5, else a new id, so ids stay unique and
consistent over time.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import math
import os
import shutil
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.common.axes import output_axes, to_canonical, validate_axes
from napari_unet.common.generators import drain
from napari_unet.engine.normalize import BadImageError, check_finite
from napari_unet.engine.postprocess import PostprocessParams, instances_from_probabilities
from napari_unet.engine.predict import (
    ASSUMED_ANISOTROPY,
    PredictConfig,
    Progress,
    _as_model,
    _batch,
    _channels,
    _grid,
    _make_runner,
    _normalise_plane,
    _predict_planes,
    _unzoom,
    _volume_options,
    _zoom,
    _zoomed_plane,
    anisotropy_from_pixel_size,
    default_params,
    image_axes,
    trained_diameter,
)
from napari_unet.io.omezarr import ome_zarr_writer
from napari_unet.models.model_file import Model

__all__ = [
    "BLOCK_VOXELS",
    "Block",
    "default_block",
    "default_halo",
    "iter_segment_chunked",
    "iter_segment_to_zarr",
    "plan_blocks",
    "segment_chunked",
    "segment_to_zarr",
]

BLOCK_VOXELS = 2_500_000  # voxels of a post-processing block with its halo (~40 B each)
MAX_WHOLE_Z = 64  # stacks up to this many slices are not split along Z
Z_BLOCK = 32
PREDICT_BLOCK = 2048  # Y/X core of a prediction block (one plane: ~0.2 GB with tiles and net)
PROBS_IN_MEMORY = 64 * 2**20  # bytes of float16 probabilities per frame kept in memory, not on disk
SCRATCH_ENV = "NAPARI_UNET_SCRATCH"
SAMPLE_VOXELS = 4_000_000  # as napari_unet.engine.normalize.percentile_bounds
PLANE_CHUNK = 1024

Box = tuple[slice, slice, slice]


# --------------------------------------------------------------------------- block geometry


@dataclass(frozen=True)
class Block:
    """``core``: the (Z, Y, X) part of the frame this block writes; ``ext``: what it reads (core
    plus halo, clipped to the frame); ``index``: its (z, y, x) position in the block grid.
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
        return tuple(e.stop - e.start for e in self.ext)


def _axis_cores(n: int, size: int, even: bool = True) -> list[tuple[int, int]]:
    """Cores <= ``size`` covering ``[0, n)``: of about equal length (no sliver at the end), or
    with ``even=False`` of exactly ``size`` but the last (tile grids stay aligned).
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
    """Blocks over a (Z, Y, X) frame in raster order; the halo is dropped along an axis that is
    not split (nothing to share there).
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


def _diameter(model: Model, config: PredictConfig) -> float:
    """Object diameter (image px) the engine assumes: as trained, or as given (clipped by zoom)."""
    zoom = _zoom(model, config.diameter)
    return trained_diameter(model) / (zoom or 1.0)


def default_halo(model: Model, config: PredictConfig = PredictConfig()) -> tuple[int, int, int]:
    """(Z, Y, X) halo of the post-processing blocks: two object diameters in Y/X (rounded up to
    8 px; more than the seed erosion and than any object that crosses the core's border) and
    one diameter in slices (plus one) in Z. The net's own context is separate: prediction
    blocks are read with ``config.overlap`` px around them.
    """
    diameter = _diameter(model, config)
    yx = int(math.ceil(2.0 * diameter / 8.0) * 8)
    anisotropy = config.anisotropy if config.anisotropy is not None else ASSUMED_ANISOTROPY
    z = math.ceil(diameter / anisotropy) + 1
    return z, yx, yx


def default_block(
    shape: tuple[int, int, int], halo: tuple[int, int, int], config: PredictConfig = PredictConfig()
) -> tuple[int, int, int]:
    """Core (Z, Y, X) of the post-processing blocks: about ``BLOCK_VOXELS`` voxels with the
    halo, whatever the frame's size and depth, so memory does not grow with the stack. Z is
    split only beyond ``MAX_WHOLE_Z`` slices.
    """
    n_z = int(shape[0])
    zb = n_z if n_z <= MAX_WHOLE_Z else Z_BLOCK
    z_ext = n_z if zb >= n_z else zb + 2 * halo[0]
    side = int(math.sqrt(BLOCK_VOXELS / max(z_ext, 1)))
    core = max(side - 2 * halo[1], 2 * halo[1], 32)
    return zb, min(core, int(shape[1])), min(core, int(shape[2]))


# --------------------------------------------------------------------------- array access


def _lazy(image: Any, axes: str) -> Any:
    """Numpy and dask arrays as they are; zarr and other array-likes as dask arrays over them,
    so indexing reads only the chunks a block touches (array-likes without chunks: one plane
    of up to ``PLANE_CHUNK`` x ``PLANE_CHUNK`` per chunk; dask reads a chunk whole).
    """
    if isinstance(image, np.ndarray):
        return image
    import dask.array as da

    if isinstance(image, da.Array):
        return image
    if not (hasattr(image, "shape") and hasattr(image, "dtype") and hasattr(image, "__getitem__")):
        return np.asarray(image)
    chunks = getattr(image, "chunks", None)
    if not (isinstance(chunks, tuple) and len(chunks) == len(image.shape)):
        chunks = tuple(
            min(int(n), PLANE_CHUNK) if a in "YX" else 1 for n, a in zip(image.shape, axes, strict=True)
        )
    return da.from_array(image, chunks=chunks, lock=False, asarray=False)


def _load(part: Any) -> np.ndarray:
    """A small part of a numpy or dask array as numpy (dask: in this thread, no pool)."""
    if isinstance(part, np.ndarray):
        return part
    return np.asarray(part.compute(scheduler="synchronous"))


class _Out:
    """(Z, Y, X) boxes of frame ``t`` of the labels array, which has the image's axis order."""

    def __init__(self, out: Any, axes: str) -> None:
        self.out, self.axes = out, axes
        self.data_axes = [a for a in axes if a != "T"]
        self.has_z = "Z" in axes

    def _index(self, t: int, box: Box) -> tuple:
        where = {"T": t, "Z": box[0], "Y": box[1], "X": box[2]}
        return tuple(where[a] for a in self.axes)

    def read(self, t: int, box: Box) -> np.ndarray:
        data = np.asarray(self.out[self._index(t, box)])
        data = np.transpose(data, [self.data_axes.index(a) for a in "ZYX" if a in self.data_axes])
        return data if self.has_z else data[None]

    def write(self, t: int, box: Box, values: np.ndarray) -> None:
        zyx = [a for a in "ZYX" if a in self.data_axes]
        data = values if self.has_z else values[0]
        self.out[self._index(t, box)] = np.transpose(data, [zyx.index(a) for a in self.data_axes])


class _Joins:
    """Union-find over provisional ids; only ids that were joined take memory."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, i: int) -> int:
        root = i
        while root in self.parent:
            root = self.parent[root]
        while i != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, ids: list[int]) -> int:
        roots = sorted({self.find(i) for i in ids})
        for r in roots[1:]:
            self.parent[r] = roots[0]
        return roots[0]

    def roots(self, ids: np.ndarray) -> np.ndarray:
        if not self.parent:
            return ids
        uniq, inv = np.unique(ids, return_inverse=True)
        return np.array([self.find(int(i)) for i in uniq], ids.dtype)[inv].reshape(ids.shape)


# --------------------------------------------------------------------------- normalisation


def _frame_bounds(
    read: Callable[[Box], np.ndarray],
    shape: tuple[int, int, int],
    blocks: list[Block],
    n_c: int,
    low: float,
    high: float,
) -> Generator[None, None, list[tuple[float, float] | None]]:
    """Per-channel bounds of a frame, equal to :func:`napari_unet.engine.predict._bounds` on the whole
    frame: the same strided sample (every ``step``-th voxel in C order), streamed block by block.
    Yields after each block (a Stop point: reading a big frame takes a while).
    """
    n_z, h, w = shape
    step = max(1, (n_z * h * w) // SAMPLE_VOXELS)
    parts: list[list[np.ndarray]] = [[] for _ in range(n_c)]
    lo = [math.inf] * n_c
    hi = [-math.inf] * n_c
    for b in blocks:
        raw = read(b.core)  # (z, C, y, x)
        (z0, _), (y0, y1), (x0, x1) = ((s.start, s.stop) for s in b.core)
        if step > 1:
            offsets = np.arange(y1 - y0, dtype=np.int64)[:, None] * w + np.arange(x1 - x0, dtype=np.int64)
        for c in range(n_c):
            chan = raw[:, c]
            lo[c], hi[c] = min(lo[c], float(chan.min())), max(hi[c], float(chan.max()))
            if step == 1:
                parts[c].append(chan.ravel())
                continue
            for zi in range(chan.shape[0]):
                base = (z0 + zi) * h * w + y0 * w + x0
                parts[c].append(chan[zi][(offsets + base) % step == 0])
        del raw
        yield
    bounds: list[tuple[float, float] | None] = []
    for c in range(n_c):
        sample = np.concatenate(parts[c])
        parts[c] = []
        p_lo, p_hi = (float(v) for v in np.percentile(sample, [low, high]))
        if p_hi > p_lo:
            bounds.append((p_lo, p_hi))
        else:
            bounds.append((lo[c], hi[c]) if hi[c] > lo[c] else None)
    return bounds


# --------------------------------------------------------------------------- stitching


def _processed_mask(
    blocks: list[Block], grid: tuple[list[int], list[int], list[int]], b: Block, k: int
) -> np.ndarray:
    """Where the extended block ``b`` (the ``k``-th) overlaps cores already written."""
    mask = np.zeros(b.ext_shape, bool)
    ranges = []
    for d in range(3):
        starts = grid[d]
        lo = max(bisect.bisect_right(starts, b.ext[d].start) - 1, 0)
        hi = bisect.bisect_left(starts, b.ext[d].stop)
        ranges.append(range(lo, hi))
    dims = tuple(len(g) for g in grid)
    for idx in itertools.product(*ranges):
        j = (idx[0] * dims[1] + idx[1]) * dims[2] + idx[2]
        if j >= k:
            continue
        other = blocks[j].core
        box = tuple(
            slice(max(o.start, e.start) - e.start, min(o.stop, e.stop) - e.start)
            for o, e in zip(other, b.ext, strict=True)
        )
        mask[box] = True
    return mask


def _link(lab: np.ndarray, prev: np.ndarray, in_core: np.ndarray, joins: _Joins) -> dict[int, int]:
    """Local label -> written id, for the labels of ``lab`` that continue an object in ``prev``.

    ``lab`` and ``prev`` are the block's labels and the written ids (roots) in the overlap,
    flattened. IoU > 0.5 links one pair; written objects mostly inside one label (> half of
    their overlap part, and > 1/5 of the label's) are all joined to it.
    """
    n_l = int(lab.max(initial=0)) + 1
    size_l = np.bincount(lab, minlength=n_l)
    g_ids, g_inv = np.unique(prev, return_inverse=True)
    size_g = np.bincount(g_inv.ravel(), minlength=g_ids.size)
    both = (lab > 0) & (prev > 0)
    keys, ov = np.unique(lab[both].astype(np.int64) * g_ids.size + g_inv.ravel()[both], return_counts=True)
    links: dict[int, int] = {}
    for l_id, group in itertools.groupby(
        zip(keys // g_ids.size, keys % g_ids.size, ov, strict=True), lambda p: p[0]
    ):
        if not in_core[l_id]:
            continue
        primary, partners, covered = None, [], 0
        for _, gi, o in group:
            sl, sg = int(size_l[l_id]), int(size_g[gi])
            if o / (sl + sg - o) > 0.5:
                primary = int(g_ids[gi])
            if o > 0.5 * sg and o > 0.2 * sl:
                partners.append(int(g_ids[gi]))
                covered += int(o)
        if primary is None and covered <= 0.5 * size_l[l_id]:
            continue
        linked = partners + ([primary] if primary is not None else [])
        links[int(l_id)] = joins.union(linked)
    return links


# --------------------------------------------------------------------------- the engine


def _resolve_axes(arr: Any, axes: str | None) -> str:
    if not hasattr(arr, "shape") or not hasattr(arr, "dtype"):
        raise BadImageError(f"cannot segment a {type(arr).__name__}: give a numpy, dask or zarr array")
    return image_axes(arr, axes)


def _as_triple(value: int | tuple[int, ...] | None, name: str) -> tuple[int, int, int] | None:
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


def _write_maps(maps: Any, where: tuple, probs: np.ndarray) -> None:
    """(K, h, w) softmax probabilities -> interior and foreground (as post-processing reads them,
    see :func:`napari_unet.engine.predict._instances`), float16, into ``maps[:, *where]``; the sum is
    formed in place (``probs`` is spent).
    """
    if probs.shape[0] not in (2, 3):
        raise ValueError(f"cannot turn {probs.shape[0]} output channels into instances (need 2 or 3)")
    maps[(0, *where)] = probs[1].astype(np.float16)
    if probs.shape[0] == 3:
        np.add(probs[1], probs[2], out=probs[2])
    maps[(1, *where)] = probs[-1 if probs.shape[0] == 3 else 1].astype(np.float16)


@contextlib.contextmanager
def _probability_store(shape: tuple[int, int, int, int], scratch: str | os.PathLike | None) -> Iterator[Any]:
    """Where a frame's (2, Z, Y, X) float16 probabilities wait for post-processing: memory when
    they are small (``PROBS_IN_MEMORY`` bytes), else a temporary zarr store on disk in
    ``scratch`` ($NAPARI_UNET_SCRATCH, else the user cache folder: not /tmp, which may be RAM),
    deleted on exit, also on error or Stop.
    """
    if 2 * math.prod(shape) <= PROBS_IN_MEMORY:
        yield np.zeros(shape, np.float16)
        return
    import tempfile

    import zarr
    from zarr.codecs import BloscCodec

    folder = scratch or os.environ.get(SCRATCH_ENV)
    if not folder:
        import platformdirs

        folder = platformdirs.user_cache_path("napari-unet") / "scratch"
    Path(folder).mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".napari-unet-probs-", dir=folder)
    try:
        chunks = (2, 1, min(shape[2], 512), min(shape[3], 512))
        yield zarr.create_array(
            tmp,
            shape=shape,
            dtype=np.float16,
            chunks=chunks,
            fill_value=0,
            compressors=BloscCodec(cname="lz4", clevel=1, shuffle="shuffle"),
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def iter_segment_chunked(
    image: Any,
    out: Any,
    model: Model | str | None = None,
    axes: str | None = None,
    channel: int | None = None,
    params: PostprocessParams | None = None,
    config: PredictConfig = PredictConfig(),
    block: int | tuple[int, ...] | None = None,
    halo: int | tuple[int, ...] | None = None,
    track: bool = False,
    out_axes: str | None = None,
    scratch: str | os.PathLike | None = None,
) -> Generator[Progress, None, Any]:
    """Instance labels of ``image`` written block by block into ``out``; yields progress,
    returns ``out``.

    ``image``: numpy, dask or zarr array (any size; only blocks are read). ``out``: a
    writable array (zarr, numpy) of the labels' shape (the image's without C, same axis
    order), best uint32; every voxel is written. ``block``/``halo``: (z, y, x) core and
    context of the post-processing blocks in voxels (None: :func:`default_block`,
    :func:`default_halo`). ``track``: ids consistent over T (see the module docstring).
    ``out_axes``: the axis order of ``out`` when it is not the image's (e.g. ``TZYX`` for
    OME-Zarr). ``scratch``: folder for the temporary probabilities of frames too large to keep
    them in memory. Closing the generator stops at the next tile batch and leaves ``out``
    partly written.
    """
    model = _as_model(model)
    axes = _resolve_axes(image, axes)
    arr = _lazy(image, axes)
    if isinstance(arr, np.ndarray):
        check_finite(arr)
    sizes = dict(zip(axes, (int(n) for n in arr.shape), strict=True))
    out_axes = output_axes(axes) if out_axes is None else validate_axes(out_axes, getattr(out, "shape", ()))
    if sorted(out_axes) != sorted(output_axes(axes)):
        raise ValueError(f"out axes {out_axes!r} are not the labels' axes {output_axes(axes)!r}")
    want = tuple(sizes[a] for a in out_axes)
    if tuple(int(n) for n in getattr(out, "shape", ())) != want:
        raise ValueError(f"out has shape {tuple(getattr(out, 'shape', ()))}, the labels need {want}")
    max_id = np.iinfo(np.dtype(out.dtype)).max if np.dtype(out.dtype).kind in "ui" else 0
    if max_id == 0:
        raise ValueError(f"out must have an integer dtype (uint32 is best), not {out.dtype}")
    can = to_canonical(arr, axes)
    n_t, n_z, n_c, h, w = (int(s) for s in can.shape)
    cin = model.config.in_channels
    chans = _channels(n_c, cin, channel, "C" in axes)
    params = params if params is not None else default_params(model)
    low, high = model.normalization
    runner = _make_runner(model, config)
    zoom = _zoom(model, config.diameter)
    volume = _volume_options(model, config) if n_z > 1 else {}
    halo3 = _as_triple(halo, "halo") or default_halo(model, config)
    block3 = _as_triple(block, "block") or default_block((n_z, h, w), halo3, config)
    if min(block3) < 1 or min(halo3) < 0:
        raise ValueError(f"block must be >= 1 and halo >= 0 voxels, got {block3} and {halo3}")
    blocks = plan_blocks((n_z, h, w), block3, halo3)
    grid_starts = tuple(sorted({b.core[d].start for b in blocks}) for d in range(3))
    # prediction: one plane at a time, in large Y/X blocks with the net's context around them
    margin = _grid(model, (min(h, 64), min(w, 64)), config).margin[0]  # 'valid' nets: their border
    net_halo = math.ceil(max(config.overlap, margin) / (zoom or 1.0))
    # (cores of exactly PREDICT_BLOCK: with the defaults, core + context is 4 tiles of 576 px)
    pblocks = plan_blocks((1, h, w), (1, PREDICT_BLOCK, PREDICT_BLOCK), (0, net_halo, net_halo), even=False)

    def net_shape(b: Block) -> tuple[int, int]:
        hh, ww = b.ext_shape[1:]
        return (hh, ww) if zoom is None else (max(1, round(hh * zoom)), max(1, round(ww * zoom)))

    grids = [_grid(model, net_shape(b), config) for b in pblocks]
    total = n_t * n_z * sum(len(g) for g in grids)
    store = _Out(out, out_axes)
    done, next_track = 0, 1
    with _probability_store((2, n_z, h, w), scratch) as maps:
        for t in range(n_t):

            def read(box: Box, t: int = t) -> np.ndarray:
                raw = _load(can[t, box[0], chans, box[1], box[2]])
                if raw.dtype == bool:
                    raw = raw.view(np.uint8)
                if raw.dtype.kind == "f":
                    check_finite(raw)
                return raw

            sampling = _frame_bounds(read, (n_z, h, w), blocks, cin, low, high)
            while True:
                try:
                    next(sampling)
                except StopIteration as stop:
                    bounds = stop.value
                    break
                yield Progress(done, total, "predict")
            if all(bd is None for bd in bounds):  # a constant frame: nothing to segment
                for b in blocks:
                    store.write(t, b.core, np.zeros(tuple(s.stop - s.start for s in b.core), out.dtype))
                done += n_z * sum(len(g) for g in grids)
                yield Progress(t + 1, n_t, "postprocess")
                continue
            for z in range(n_z):
                for pb, grid in zip(pblocks, grids, strict=True):
                    raw = read((slice(z, z + 1), pb.ext[1], pb.ext[2]))
                    planes = _plane_reader(raw, bounds)
                    nhw = net_shape(pb)
                    if zoom is not None:
                        planes = _zoomed(planes, nhw)
                    probs = np.empty((model.config.out_channels, 1, *nhw), np.float32)
                    done = yield from _predict_planes(
                        runner, planes, 1, grid, probs, _batch(config, grid), done, total
                    )
                    del raw, planes
                    if zoom is not None:
                        probs = _unzoom(probs, pb.ext_shape[1:])
                    _write_maps(maps, (z, pb.core[1], pb.core[2]), probs[:, 0, pb.inner[1], pb.inner[2]])
                    del probs
            joins, next_id = _Joins(), 1
            for k, b in enumerate(blocks):
                m = np.asarray(maps[(slice(None), *b.ext)], dtype=np.float32)
                if n_z > 1:
                    lab = instances_from_probabilities(m[0], m[1], params, **volume)
                else:
                    lab = instances_from_probabilities(m[0, 0], m[1, 0], params)[None]
                del m
                next_id = _stitch(store, t, blocks, grid_starts, b, k, lab, joins, next_id, max_id)
                yield Progress(t * len(blocks) + k + 1, n_t * len(blocks), "postprocess")
            if joins.parent:
                _relabel(store, t, blocks, _compact_lut(joins, next_id))
            if track and t > 0:
                next_track = _track(store, t, blocks, next_track)
            elif track:
                next_track = next_id
    return out


def _plane_reader(raw: np.ndarray, bounds: list[tuple[float, float] | None]) -> Callable[[int], np.ndarray]:
    def plane(z: int) -> np.ndarray:
        return _normalise_plane(raw, bounds, z)

    return plane


def _zoomed(planes: Callable[[int], np.ndarray], shape: tuple[int, int]) -> Callable[[int], np.ndarray]:
    def plane(z: int) -> np.ndarray:
        return _zoomed_plane(planes, shape, z)

    return plane


def _stitch(
    store: _Out,
    t: int,
    blocks: list[Block],
    grid_starts: tuple[list[int], list[int], list[int]],
    b: Block,
    k: int,
    lab: np.ndarray,
    joins: _Joins,
    next_id: int,
    max_id: int,
) -> int:
    """Write the core of block ``b`` with ids that continue the objects already written."""
    core = lab[b.inner]
    n_l = int(lab.max(initial=0)) + 1
    in_core = np.bincount(core.ravel(), minlength=n_l) > 0  # O(n); np.unique sorts
    in_core[0] = False
    links: dict[int, int] = {}
    seen = _processed_mask(blocks, grid_starts, b, k)
    if seen.any() and in_core.any():
        prev = store.read(t, b.ext)[seen].astype(np.int64)
        links = _link(lab[seen].astype(np.int64), joins.roots(prev), in_core, joins)
    lut = np.zeros(n_l, np.int64)
    fresh = np.flatnonzero(in_core)
    fresh = fresh[~np.isin(fresh, np.fromiter(links, np.int64, len(links)))]
    lut[fresh] = np.arange(next_id, next_id + fresh.size)
    for l_id, g in links.items():
        lut[l_id] = g
    next_id += fresh.size
    if next_id - 1 > max_id:
        raise OverflowError(f"more objects than the labels' dtype holds ({max_id}); use uint32 or uint64")
    store.write(t, b.core, lut[core].astype(store.out.dtype, copy=False))
    return next_id


def _compact_lut(joins: _Joins, next_id: int) -> np.ndarray:
    """Provisional id -> final id: joined ids to their root, roots renumbered 1..n."""
    roots = np.arange(next_id, dtype=np.int64)
    for i in list(joins.parent):
        roots[i] = joins.find(i)
    used = np.unique(roots[1:])
    lut = np.zeros(next_id, np.int64)
    lut[1:] = np.searchsorted(used, roots[1:]) + 1
    return lut


def _relabel(store: _Out, t: int, blocks: list[Block], lut: np.ndarray) -> None:
    for b in blocks:
        ids = store.read(t, b.core)
        store.write(t, b.core, lut[ids].astype(ids.dtype, copy=False))


def _track(store: _Out, t: int, blocks: list[Block], next_id: int) -> int:
    """Give frame ``t``'s objects the id of the frame ``t - 1`` object they overlap with IoU > 0.5."""
    pairs: dict[tuple[int, int], int] = {}
    size_cur: dict[int, int] = {}
    size_prev: dict[int, int] = {}
    for b in blocks:
        cur = store.read(t, b.core).ravel().astype(np.int64)
        prv = store.read(t - 1, b.core).ravel().astype(np.int64)
        for ids, sizes in ((cur, size_cur), (prv, size_prev)):
            u, c = np.unique(ids[ids > 0], return_counts=True)
            for i, n in zip(u.tolist(), c.tolist(), strict=True):
                sizes[i] = sizes.get(i, 0) + n
        both = (cur > 0) & (prv > 0)
        keys, c = np.unique(np.stack([cur[both], prv[both]], 1), axis=0, return_counts=True)
        for (a, p), n in zip(keys.tolist(), c.tolist(), strict=True):
            pairs[(a, p)] = pairs.get((a, p), 0) + n
    mapping: dict[int, int] = {}
    for (a, p), n in pairs.items():
        if n / (size_cur[a] + size_prev[p] - n) > 0.5:
            mapping[a] = p
    for a in sorted(size_cur):
        if a not in mapping:
            mapping[a] = next_id
            next_id += 1
    top = max(size_cur, default=0)
    lut = np.zeros(top + 1, np.int64)
    for a, v in mapping.items():
        lut[a] = v
    if next_id - 1 > np.iinfo(np.dtype(store.out.dtype)).max:
        raise OverflowError("more tracked objects than the labels' dtype holds; use uint32 or uint64")
    _relabel(store, t, blocks, lut)
    return next_id


def segment_chunked(image: Any, out: Any, model: Model | str | None = None, **kwargs: Any) -> Any:
    """:func:`iter_segment_chunked` drained: returns ``out``."""
    return drain(iter_segment_chunked(image, out, model, **kwargs))


# --------------------------------------------------------------------------- OME-Zarr output


def _label_chunks(shape: tuple[int, ...], axes: str) -> tuple[int, ...]:
    """One plane per chunk (napari reads a plane at a time), 512 x 512 in Y/X."""
    return tuple(min(n, 512) if a in "YX" else 1 for n, a in zip(shape, axes, strict=True))


def _pixel_size_dict(pixel_size: Any, axes: str) -> dict[str, float] | None:
    """{"Z": .., "Y": .., "X": ..} from a dict or a per-axis scale of the labels (``axes``)."""
    if pixel_size is None:
        return None
    if isinstance(pixel_size, dict):
        return {str(k).upper(): float(v) for k, v in pixel_size.items()}
    values = [float(v) for v in pixel_size]
    spatial = [a for a in axes if a in "ZYX"]
    if len(values) == len(axes):
        return dict(zip(axes, values, strict=True))
    if len(values) == len(spatial):
        return dict(zip(spatial, values, strict=True))
    raise ValueError(f"pixel_size {pixel_size!r} does not match the axes {axes!r}")


def iter_segment_to_zarr(
    image: Any,
    path: str | os.PathLike,
    model: Model | str | None = None,
    axes: str | None = None,
    channel: int | None = None,
    params: PostprocessParams | None = None,
    config: PredictConfig = PredictConfig(),
    block: int | tuple[int, ...] | None = None,
    halo: int | tuple[int, ...] | None = None,
    track: bool = False,
    pixel_size: Any = None,
    unit: str | None = None,
    chunks: tuple[int, ...] | None = None,
    overwrite: bool = False,
    scratch: str | os.PathLike | None = None,
) -> Generator[Progress, None, Path]:
    """Segment ``image`` chunk by chunk into an OME-Zarr labels store at ``path``; returns it.

    The labels' axes are the image's in OME-NGFF order (``TZYX`` subset). The store appears
    at ``path`` only when segmentation finished: an error or closing the generator (Stop)
    leaves nothing there that looks complete. ``pixel_size`` ({"Z", "Y", "X"} or a per-axis
    scale) is written with the labels and, unless ``config.anisotropy`` is set, gives the
    z/xy anisotropy used in 3D. Temporary probabilities of large frames go to ``scratch``
    (default: the output's folder, where the user expects the space to be used).
    """
    axes = _resolve_axes(image, axes)
    arr = _lazy(image, axes)
    out_axes = "".join(a for a in "TZYX" if a in axes)
    sizes = dict(zip(axes, (int(n) for n in arr.shape), strict=True))
    shape = tuple(sizes[a] for a in out_axes)
    sizes_phys = _pixel_size_dict(pixel_size, output_axes(axes))
    if config.anisotropy is None and sizes_phys:
        config = replace(config, anisotropy=anisotropy_from_pixel_size(sizes_phys))
    chunks = chunks or _label_chunks(shape, out_axes)
    kw: dict[str, Any] = {"pixel_size": sizes_phys, "unit": unit, "labels": True, "overwrite": overwrite}
    with ome_zarr_writer(path, shape, np.uint32, out_axes, chunks, **kw) as out:
        yield from iter_segment_chunked(
            arr,
            out,
            model,
            axes,
            channel,
            params,
            config,
            block,
            halo,
            track,
            out_axes=out_axes,
            scratch=scratch if scratch is not None else Path(path).parent,
        )
    return Path(path)


def segment_to_zarr(
    image: Any, path: str | os.PathLike, model: Model | str | None = None, **kwargs: Any
) -> Path:
    """:func:`iter_segment_to_zarr` drained (what the batch CLI calls)."""
    return drain(iter_segment_to_zarr(image, path, model, **kwargs))
