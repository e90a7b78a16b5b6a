"""Segmenting stacks larger than memory: blocks with a halo, stitched into one id per object.

:func:`iter_segment_chunked` gives the same labels as :func:`napari_unet.engine.predict.iter_segment`
(same objects; a few boundary pixels may differ) while holding only a block in memory. It is
prepared exactly like the in-memory engine (:func:`napari_unet.engine.setup.prepare`). Per T
frame, in three steps:

* **Normalisation** bounds are computed once per frame, from exactly the voxels the in-memory
  path samples (every ``step``-th voxel of the frame in C order, at most ~4 M per channel, see
  :func:`napari_unet.engine.normalize.percentile_bounds`), gathered in one streamed pass over the
  frame (:func:`frame_bounds`). Both paths map intensities identically; the price is one extra
  read of the frame and 8 bytes per sampled voxel.
* **Prediction**, one plane at a time (the net is 2D), in Y/X blocks of ``PREDICT_BLOCK`` px
  read with ``config.overlap`` px of context, tiled by the existing engine: no tile is
  predicted twice across Z, and a plane up to 2048 px wide is tiled exactly as in memory. The
  interior and foreground probabilities go, as float16, into a per-frame store: memory for
  small frames, else a temporary zarr store on disk (2 x 2 bytes per voxel; float16 moves a
  probability by < 0.0005, which flips a rare voxel at a threshold).
* **Post-processing** in (Z, Y, X) blocks of about ``BLOCK_VOXELS`` voxels with a halo of two
  object diameters (and one diameter of slices when Z is split): each block is labelled as a
  volume like an in-memory frame, only its core is kept, and blocks are stitched into one id
  per object (:mod:`napari_unet.scale.stitching`).

Memory is set by the blocks, not by the stack; the union-find holds only joined ids.
Time-lapses are segmented frame by frame (ids restart per frame, as in memory); with
``track=True`` ids follow objects over time (:mod:`napari_unet.scale.tracking`).

The stores on disk (the labels being written, the temporary probabilities) are touched every
``HEARTBEAT`` seconds while the run goes on, written to or not: a later run's clean-up of what
killed runs left (:func:`napari_unet.scale.batch_outputs.remove_leftovers`) removes only
temporaries untouched for longer than that, so it never takes a live run's store for a leftover.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs
import zarr
from zarr.codecs import BloscCodec

from napari_unet.common.axes import output_axes, validate_axes
from napari_unet.common.generators import drain
from napari_unet.engine.config import PredictConfig, Progress
from napari_unet.engine.inference import predict_planes, tile_grid
from napari_unet.engine.normalize import SAMPLE_VOXELS, Bounds, check_finite, range_fallback
from napari_unet.engine.object_scale import anisotropy_from_pixel_size, unzoom
from napari_unet.engine.postprocess import PostprocessParams, instances_from_probabilities
from napari_unet.engine.setup import array_axes, as_numbers, prepare
from napari_unet.io.omezarr import ome_zarr_writer, remove_store, touch_store
from napari_unet.models.model_file import Model
from napari_unet.scale.blocks import (
    BLOCK_VOXELS,
    Block,
    Box,
    LabelsOut,
    as_triple,
    default_block,
    default_halo,
    lazy_array,
    load,
    plan_blocks,
)
from napari_unet.scale.stitching import Joins, compact_lut, relabel, stitch_block
from napari_unet.scale.tracking import track_frame

__all__ = [
    "BLOCK_VOXELS",
    "Block",
    "default_block",
    "default_halo",
    "frame_bounds",
    "iter_segment_chunked",
    "iter_segment_to_zarr",
    "plan_blocks",
    "segment_chunked",
    "segment_to_zarr",
]

PREDICT_BLOCK = 2048  # Y/X core of a prediction block (one plane, with its tiles and the net)
PROBS_IN_MEMORY = 64 * 2**20  # bytes of float16 probabilities per frame kept in memory, not on disk
SCRATCH_ENV = "NAPARI_UNET_SCRATCH"
PROBS_PREFIX = ".napari-unet-probs-"  # + "<pid>-": a temporary probability store (scale.batch_outputs)
# the name of such a store (its <pid>- is absent in stores of older versions): what clean-ups look for
PROBS_NAME = re.compile(rf"^{re.escape(PROBS_PREFIX)}(?:(?P<pid>\d+)-)?[A-Za-z0-9_]+$")
HEARTBEAT = 10.0  # s between touches of the stores a run writes (see the module docstring)


# --------------------------------------------------------------------------- normalisation


def frame_bounds(
    read: Callable[[Box], np.ndarray],
    shape: tuple[int, int, int],
    blocks: list[Block],
    n_c: int,
    low: float,
    high: float,
) -> Generator[None, None, list[Bounds]]:
    """Per-channel bounds of a frame, streamed block by block.

    Equal to :func:`napari_unet.engine.normalize.channel_bounds` on the whole frame: the same
    strided sample (every ``step``-th voxel in C order), gathered block by block. Yields after
    each block (a Stop point: reading a big frame takes a while).
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
    bounds: list[Bounds] = []
    for c in range(n_c):
        sample = np.concatenate(parts[c])
        parts[c] = []
        p_lo, p_hi = (float(v) for v in np.percentile(sample, [low, high]))
        bounds.append(range_fallback((p_lo, p_hi), lo[c], hi[c]))
    return bounds


# --------------------------------------------------------------------------- probabilities


def _write_maps(maps: Any, where: tuple, probs: np.ndarray) -> None:
    """(K, h, w) softmax probabilities -> interior and foreground maps, float16, into ``maps[:, *where]``.

    As post-processing reads them (see :func:`napari_unet.engine.postprocess.instances`); the sum
    is formed in place (``probs`` is spent).
    """
    if probs.shape[0] not in (2, 3):
        raise ValueError(f"cannot turn {probs.shape[0]} output channels into instances (need 2 or 3)")
    maps[(0, *where)] = probs[1].astype(np.float16)
    if probs.shape[0] == 3:
        np.add(probs[1], probs[2], out=probs[2])
    maps[(1, *where)] = probs[-1 if probs.shape[0] == 3 else 1].astype(np.float16)


@contextlib.contextmanager
def _probability_store(shape: tuple[int, int, int, int], scratch: str | os.PathLike | None) -> Iterator[Any]:
    """Where a frame's (2, Z, Y, X) float16 probabilities wait for post-processing.

    Memory when they are small (``PROBS_IN_MEMORY`` bytes), else a temporary zarr store on
    disk in ``scratch`` ($NAPARI_UNET_SCRATCH, else the user cache folder: not /tmp, which
    may be RAM), deleted on exit, also on error or Stop, once its pending writes ended. Its
    name carries the process id, so a clean-up can tell whether the run that made it is alive.
    """
    if 2 * math.prod(shape) <= PROBS_IN_MEMORY:
        yield np.zeros(shape, np.float16)
        return
    folder = scratch or os.environ.get(SCRATCH_ENV)
    if not folder:
        folder = platformdirs.user_cache_path("napari-unet") / "scratch"
    Path(folder).mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f"{PROBS_PREFIX}{os.getpid()}-", dir=folder)
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
        remove_store(tmp)


# --------------------------------------------------------------------------- the engine


def _check_out(out: Any, out_axes: str | None, arr: Any, axes: str) -> tuple[str, int]:
    """The axes of ``out`` and the largest id its dtype holds, after checking its shape and dtype."""
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
    return out_axes, int(max_id)


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
    """Instance labels of ``image`` written block by block into ``out``; yields progress, returns ``out``.

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
    live: list[Any] = [out]  # the arrays whose stores the heartbeat touches
    return (
        yield from _beating(
            _segment_chunked(
                image, out, model, axes, channel, params, config, block, halo, track, out_axes, scratch, live
            ),
            lambda: [touch_store(a) for a in live],
        )
    )


def _beating(gen: Generator[Progress, None, Any], touch: Callable[[], Any]) -> Generator[Progress, None, Any]:
    """``gen``, calling ``touch`` at its start and then at most every ``HEARTBEAT`` seconds."""
    last = -math.inf
    try:
        while True:
            if time.monotonic() - last >= HEARTBEAT:
                touch()
                last = time.monotonic()
            try:
                item = next(gen)
            except StopIteration as stop:
                return stop.value
            yield item
    finally:
        gen.close()


def _segment_chunked(
    image: Any,
    out: Any,
    model: Model | str | None,
    axes: str | None,
    channel: int | None,
    params: PostprocessParams | None,
    config: PredictConfig,
    block: int | tuple[int, ...] | None,
    halo: int | tuple[int, ...] | None,
    track: bool,
    out_axes: str | None,
    scratch: str | os.PathLike | None,
    live: list[Any],
) -> Generator[Progress, None, Any]:
    """The body of :func:`iter_segment_chunked`; a probability store on disk joins ``live``."""
    settled: dict[str, tuple[str, int]] = {}

    def check(arr: Any, axes: str) -> None:
        settled["out"] = _check_out(out, out_axes, arr, axes)

    job = prepare(image, model, axes, channel, params, config, view=lazy_array, check=check)
    config = job.config  # with the estimated object diameter, when one was applied
    if job.size is not None:
        yield Progress(1, 1, "size", job.size)
    out_axes, max_id = settled["out"]
    model, can, chans = job.model, job.canonical, job.channels
    n_t, n_z, _, h, w = job.shape
    cin = model.config.in_channels
    low, high = model.normalization
    volume = job.volume if n_z > 1 else {}
    halo3 = as_triple(halo, "halo") or default_halo(model, config)
    block3 = as_triple(block, "block") or default_block((n_z, h, w), halo3, config)
    if min(block3) < 1 or min(halo3) < 0:
        raise ValueError(f"block must be >= 1 and halo >= 0 voxels, got {block3} and {halo3}")
    blocks = plan_blocks((n_z, h, w), block3, halo3)
    grid_starts = tuple(sorted({b.core[d].start for b in blocks}) for d in range(3))
    # prediction: one plane at a time, in large Y/X blocks with the net's context around them
    margin = tile_grid(model, (min(h, 64), min(w, 64)), config).margin[0]  # 'valid' nets: their border
    net_halo = math.ceil(max(config.overlap, margin) / (job.zoom or 1.0))
    # (cores of exactly PREDICT_BLOCK: with the defaults, core + context is 4 tiles of 576 px)
    pblocks = plan_blocks((1, h, w), (1, PREDICT_BLOCK, PREDICT_BLOCK), (0, net_halo, net_halo), even=False)
    grids = [job.grid(b.ext_shape[1:]) for b in pblocks]
    total = n_t * n_z * sum(len(g) for g in grids)
    store = LabelsOut(out, out_axes)
    done, next_track = 0, 1
    with _probability_store((2, n_z, h, w), scratch) as maps:
        live.append(maps)
        for t in range(n_t):

            def read(box: Box, t: int = t) -> np.ndarray:
                raw = as_numbers(load(can[t, box[0], chans, box[1], box[2]]))
                if raw.dtype.kind == "f":
                    check_finite(raw)
                return raw

            sampling = frame_bounds(read, (n_z, h, w), blocks, cin, low, high)
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
                    planes = job.planes(raw, bounds, pb.ext_shape[1:])
                    probs = np.empty(
                        (model.config.out_channels, 1, *job.net_shape(pb.ext_shape[1:])), np.float32
                    )
                    done = yield from predict_planes(
                        job.runner, planes, 1, grid, probs, job.batch_size(grid), done, total
                    )
                    del raw, planes
                    if job.zoom is not None:
                        probs = unzoom(probs, pb.ext_shape[1:])
                    _write_maps(maps, (z, pb.core[1], pb.core[2]), probs[:, 0, pb.inner[1], pb.inner[2]])
                    del probs
            joins, next_id = Joins(), 1
            for k, b in enumerate(blocks):
                m = np.asarray(maps[(slice(None), *b.ext)], dtype=np.float32)
                if n_z > 1:
                    lab = instances_from_probabilities(m[0], m[1], job.params, **volume)
                else:
                    lab = instances_from_probabilities(m[0, 0], m[1, 0], job.params)[None]
                del m
                next_id = stitch_block(store, t, blocks, grid_starts, b, k, lab, joins, next_id, max_id)
                yield Progress(t * len(blocks) + k + 1, n_t * len(blocks), "postprocess")
            if joins.parent:
                relabel(store, t, blocks, compact_lut(joins, next_id))
            if track and t > 0:
                next_track = track_frame(store, t, blocks, next_track)
            elif track:
                next_track = next_id
    return out


def segment_chunked(
    image: Any,
    out: Any,
    model: Model | str | None = None,
    *,
    axes: str | None = None,
    channel: int | None = None,
    params: PostprocessParams | None = None,
    config: PredictConfig = PredictConfig(),
    block: int | tuple[int, ...] | None = None,
    halo: int | tuple[int, ...] | None = None,
    track: bool = False,
    out_axes: str | None = None,
    scratch: str | os.PathLike | None = None,
) -> Any:
    """:func:`iter_segment_chunked` drained: returns ``out`` (the keywords are the same)."""
    return drain(
        iter_segment_chunked(
            image, out, model, axes, channel, params, config, block, halo, track, out_axes, scratch
        )
    )


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

    A generator that yields :class:`~napari_unet.engine.config.Progress`; the parameters are
    those of :func:`segment_to_zarr`. The store appears at ``path`` only when segmentation
    finished: an error or closing the generator (Stop) leaves nothing there that looks
    complete.
    """
    axes = array_axes(image, axes)
    arr = lazy_array(image, axes)
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
    image: Any,
    path: str | os.PathLike,
    model: Model | str | None = None,
    *,
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
) -> Path:
    """Segment an image of any size block by block into an OME-Zarr labels store.

    Memory is bounded by the blocks, not by the image: only blocks of ``image`` are read and
    the labels are written block by block, with one id per object across blocks (see
    :mod:`napari_unet.scale.chunked`). This is what the batch CLI uses for large inputs.

    Parameters
    ----------
    image : array-like
        Numpy, dask or zarr array (anything with ``shape``, ``dtype`` and indexing) of up to
        5 axes among T, Z, C (or S), Y, X.
    path : str or os.PathLike
        Where the OME-Zarr labels store goes (``*.ome.zarr``). It appears there only once
        segmentation finished, so an interrupted run leaves nothing that looks complete.
    model : Model, str or None
        A loaded model, a model name or a ``.pt`` path; None is the bundled nuclei model.
    axes : str, optional
        The image's axis letters, e.g. ``"ZYX"``; None guesses them.
    channel : int, optional
        The channel a one-channel model sees, when the image has several.
    params : PostprocessParams, optional
        Post-processing thresholds and sizes; None takes the model card's.
    config : PredictConfig
        How to run the net (tile, overlap, batch size, device, precision, diameter,
        anisotropy).
    block : int or tuple of int, optional
        (z, y, x) core of the post-processing blocks in voxels (a (y, x) pair: one slice);
        None sizes them from a fixed voxel budget.
    halo : int or tuple of int, optional
        (z, y, x) context around each block in voxels; None: two object diameters in Y/X,
        one (in slices) in Z.
    track : bool
        Time-lapses: an object keeps its id from frame to frame (IoU > 0.5 with the
        previous frame), instead of ids restarting in every frame.
    pixel_size : dict or sequence of float, optional
        {"Z": .., "Y": .., "X": ..} or a per-axis scale of the labels; written with them and,
        unless ``config.anisotropy`` is set, giving the z/xy anisotropy used in 3D.
    unit : str, optional
        The unit of ``pixel_size`` (e.g. ``"micrometer"``).
    chunks : tuple of int, optional
        Chunks of the labels array; None: one plane per chunk, 512 x 512 in Y/X.
    overwrite : bool
        Replace an existing store at ``path`` (else that is an error).
    scratch : str or os.PathLike, optional
        Folder for the temporary probabilities of frames too large for memory; None: the
        output's folder, where the user expects the space to be used.

    Returns
    -------
    pathlib.Path
        ``path``. The labels' axes are the image's in OME-NGFF order (a ``TZYX`` subset),
        dtype uint32.

    Raises
    ------
    BadImageError
        An image that is not an array, is empty, non-numeric or non-finite.
    AxesError
        Axes that do not fit the image, or a ``channel`` that does not exist.
    ValueError
        Bad ``block``/``halo``/``pixel_size``, or an existing store without ``overwrite``.
    OverflowError
        More objects than uint32 holds.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> stack = np.zeros((4, 64, 64), np.uint16)
    >>> stack[1:3, 20:40, 20:40] = 1000
    >>> folder = Path(tempfile.mkdtemp())
    >>> segment_to_zarr(stack, folder / "labels.ome.zarr", axes="ZYX").name
    'labels.ome.zarr'
    """
    return drain(
        iter_segment_to_zarr(
            image,
            path,
            model,
            axes,
            channel,
            params,
            config,
            block,
            halo,
            track,
            pixel_size,
            unit,
            chunks,
            overwrite,
            scratch,
        )
    )
