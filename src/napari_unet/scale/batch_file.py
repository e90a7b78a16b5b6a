"""One file's job in a batch: read it, segment it, write its labels; never raise for the file.

:func:`segment_file` takes picklable arguments only (paths and a frozen
:class:`~napari_unet.scale.batch_types.BatchOptions` naming the model *file*), so Dask can
ship it to any worker. Each worker process loads a model once and keeps it
(:func:`cached_model`), so a 1,000-file batch loads the model once per worker, not once per
file. A file's problem becomes a ``failed`` :class:`~napari_unet.scale.batch_types.FileResult`
with a one-line message, whichever machine it ran on.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_unet.common.axes import AxesError, decide_axes, output_axes
from napari_unet.common.generators import drain
from napari_unet.engine import predict
from napari_unet.engine.config import PredictConfig, Progress
from napari_unet.engine.measure import measure_labels, table_to_csv
from napari_unet.engine.metrics import count_objects
from napari_unet.engine.normalize import BadImageError
from napari_unet.engine.object_scale import anisotropy_from_pixel_size
from napari_unet.engine.setup import default_params
from napari_unet.io import images as io
from napari_unet.io.errors import ImageReadError
from napari_unet.io.omezarr import remove_store
from napari_unet.models.model_file import Model, ModelFileError
from napari_unet.models.registry import load_model, resolve_model_path
from napari_unet.scale import chunked
from napari_unet.scale.batch_outputs import (
    count_store,
    is_zarr_path,
    objects_path,
    output_format,
    precheck,
    tiff_from_store,
    write_output,
)
from napari_unet.scale.batch_types import BatchInputError, BatchOptions, FileResult, one_line
from napari_unet.scale.cluster import local_dask
from napari_unet.scale.measure_blocks import measure_store

__all__ = ["cached_model", "segment_and_write", "segment_file"]

_MODELS: dict[tuple[str, int, int], Model] = {}
_MODELS_LOCK = threading.Lock()


def cached_model(spec: str | None) -> Model:
    """The model named by ``spec``, loaded once per process (reloaded if the file changes).

    This is what makes a Dask worker load the model once for all the files it is given.
    """
    path = resolve_model_path(spec)
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    with _MODELS_LOCK:
        if key not in _MODELS:
            if len(_MODELS) >= 4:
                _MODELS.clear()
            _MODELS[key] = load_model(path)
        return _MODELS[key]


def _read_input(path: Path, wants_channels: bool) -> tuple[Any, str | None, dict[str, Any]]:
    """The one place inputs are read.

    OME-Zarr and TIFF go through ``io.open_image`` (lazy, as dask, above its size threshold,
    so a worker holds one frame at a time), PNG/JPEG through ``io.read_image``, which can
    keep a grey-looking RGB image's channels when asked.
    """
    if is_zarr_path(path):
        if not path.exists():
            raise BatchInputError("no such file or folder")
        if not path.is_dir():
            raise BatchInputError("an OME-Zarr store is a folder; this is a file")
        return io.open_image(path)
    if path.name.lower().endswith(io.TIFF_SUFFIXES):
        return io.open_image(path)
    return io.read_image(path, collapse_gray_rgb=not wants_channels)


def _postprocess_params(model: Model, threshold: float | None, min_size: int | None) -> Any:
    """The model card's postprocessing with the user's overrides; None lets predict choose."""
    if threshold is None and min_size is None:
        return None
    overrides: dict[str, Any] = {}
    if threshold is not None:
        overrides["threshold"] = threshold
    if min_size is not None:
        overrides["min_size"] = min_size
    return replace(default_params(model), **overrides)


def _check_channels(axes: str, shape: tuple[int, ...], channel: int | None, model: Model) -> None:
    if "C" not in axes and channel is not None:
        raise BatchInputError(f"--channel {channel} given but the image has no channel axis ({axes})")
    if "C" in axes:
        nchan = int(shape[axes.index("C")])
        if channel is not None and channel >= nchan:
            raise BatchInputError(f"--channel {channel} out of range: the image has {nchan} channel(s)")
        if channel is None and nchan != model.config.in_channels:
            raise BatchInputError(
                f"image has {nchan} channels (axes {axes}) but the model takes "
                f"{model.config.in_channels}: pick one with --channel N"
            )


def segment_and_write(
    input_path: Path,
    output: Path,
    options: BatchOptions,
    model: Model,
    progress: Callable[[Progress], None] | None,
    notes: list[str] | None = None,
) -> int:
    """Read, segment, write; returns the object count. Raises BatchInputError with one line.

    ``notes``: what the file's line should also say (the object-size estimate, a table not
    written) is appended to it.

    A lazy input (OME-Zarr, or a TIFF above io's size threshold) is segmented block by block
    (``chunked``) so memory does not grow with the stack: straight into the OME-Zarr output,
    or, for a TIFF output, into a hidden store beside it that is then copied plane by plane
    into the TIFF and removed. Everything else is segmented in memory and then written.
    """
    fmt = output_format(input_path, options.format)
    progress = _noting_size(progress, notes)
    user_channel_axis = options.axes is not None and bool(set(options.axes) & {"C", "S"})
    wants_channels = options.channel is not None or user_channel_axis
    labels = None
    try:
        # the user describing a channel axis means the raw array, not a grayscale-collapsed one
        data, file_axes, meta = _read_input(input_path, wants_channels)
        if meta.get("warning") and notes is not None:  # e.g. chunks missing from an OME-Zarr
            notes.append(f"warning: {meta['warning']}")
        axes = decide_axes(data, file_axes, options.axes)
        _check_channels(axes, tuple(data.shape), options.channel, model)
        config = PredictConfig(
            device=options.device,
            diameter=options.diameter,
            estimate_size=options.estimate_size,
            accurate=options.accurate,
            anisotropy=anisotropy_from_pixel_size(meta.get("pixel_size")),
        )
        params = _postprocess_params(model, options.threshold, options.min_size)
        kwargs = {"axes": axes, "channel": options.channel, "params": params, "config": config}
        if meta.get("lazy"):
            sizes = {k: v for k, v in (meta.get("pixel_size") or {}).items() if k in "ZYX"}
            store = output if fmt == "zarr" else output.with_name(f".{output.name}.{os.getpid()}.tmp.zarr")
            try:
                gen = chunked.iter_segment_to_zarr(
                    data,
                    store,
                    model,
                    pixel_size=sizes or None,
                    unit=meta.get("unit"),
                    overwrite=options.overwrite or store != output,
                    track=options.track,
                    **kwargs,
                )
                drain(gen, progress)
                if options.measure:  # block by block from the store, before a TIFF copy removes it
                    _write_store_objects(store, output, data, axes, options.channel, meta)
                if store != output:
                    return tiff_from_store(store, output, output_axes(axes), meta)
            finally:
                if store != output:
                    remove_store(store)  # after its pending writes: none lands after the removal
        elif options.track and "T" in axes:  # the chunked engine links frames; in memory here
            out = np.zeros([n for n, a in zip(data.shape, axes, strict=True) if a != "C"], np.uint32)
            labels = drain(chunked.iter_segment_chunked(data, out, model, track=True, **kwargs), progress)
        else:
            labels = drain(predict.iter_segment(data, model=model, **kwargs), progress)
    except OSError as exc:  # the chunked path writes while it segments
        raise BatchInputError(f"cannot write {output} ({exc.strerror or one_line(exc)})") from None
    except (ImageReadError, BadImageError, AxesError, ModelFileError, BatchInputError) as exc:
        raise BatchInputError(str(exc)) from None
    except ValueError as exc:  # the core's other refusals are one-line ValueErrors too
        raise BatchInputError(str(exc)) from None
    except MemoryError:
        raise BatchInputError("out of memory") from None
    if labels is None:
        return count_store(output)
    out_axes: str | None = output_axes(axes)
    if labels.ndim != len(out_axes):
        out_axes = None  # predict changed the dimensionality; write without claiming axes
    try:
        write_output(output, labels, out_axes, meta, fmt, options.overwrite)
        if options.measure:
            _write_objects(output, labels, data, axes, options.channel, meta)
    except OSError as exc:
        raise BatchInputError(f"cannot write {output} ({exc.strerror or one_line(exc)})") from None
    except ValueError as exc:
        raise BatchInputError(f"cannot write {output.name}: {one_line(exc)}") from None
    return count_objects(labels)


def _write_objects(
    output: Path, labels: np.ndarray, data: Any, axes: str, channel: int | None, meta: dict[str, Any]
) -> None:
    """Write ``<stem>_objects.csv`` beside the labels: one row per object.

    Intensities come from the channel the model saw, physical units from the file's pixel size.
    """
    image = np.asarray(data)
    if "C" in axes or "S" in axes:
        c = axes.index("C") if "C" in axes else axes.index("S")
        image = np.take(image, channel or 0, axis=c)
    lab_axes = output_axes(axes)
    if labels.ndim != len(lab_axes) or image.shape != labels.shape:
        image = None  # predict changed the dimensionality: no intensities to pair
        lab_axes = None
    sizes = meta.get("pixel_size") or None
    table = measure_labels(labels, image, axes=lab_axes, scale=sizes, unit=meta.get("unit"))
    table_to_csv(table, objects_path(output))


def _write_store_objects(
    store: Path, output: Path, data: Any, axes: str, channel: int | None, meta: dict[str, Any]
) -> None:
    """``<stem>_objects.csv`` of a lazy input: its labels store measured block by block.

    The rows are :func:`_write_objects`' without ``solidity`` (it needs an object whole);
    memory holds one block of labels and image, not the stack.
    """
    sizes = meta.get("pixel_size") or None
    table = measure_store(store, data, image_axes=axes, channel=channel, scale=sizes, unit=meta.get("unit"))
    table_to_csv(table, objects_path(output))


def _noting_size(
    progress: Callable[[Progress], None] | None, notes: list[str] | None
) -> Callable[[Progress], None] | None:
    """``progress``, which also appends the object-size estimate, in a few words, to ``notes``."""
    if notes is None:
        return progress

    def note(step: Progress) -> None:
        if step.stage == "size":
            notes.append(step.detail.short())
        if progress is not None:
            progress(step)

    return note


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def segment_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    options: BatchOptions,
    model: Model | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> FileResult:
    """Segment one file into ``output_path``: the job a Dask worker runs; never raises for the file.

    ``model`` (in-process only) skips the per-process model cache; on a worker the model is
    loaded from ``options.model`` once per process. Ctrl-C still propagates.
    """
    start = time.perf_counter()
    text, out = os.fspath(input_path), Path(output_path)
    early = precheck(text, out, options.overwrite)
    if early is not None:
        return replace(early, worker=_worker_name())
    try:
        if options.torch_threads is not None and torch.get_num_threads() != options.torch_threads:
            torch.set_num_threads(options.torch_threads)
        if model is None:
            try:
                model = cached_model(options.model)
            except Exception as exc:  # noqa: BLE001 - a worker that cannot load the model fails the file
                raise BatchInputError(
                    f"cannot load model {options.model or 'nuclei'}: {one_line(exc)}"
                ) from None
        notes: list[str] = []
        with local_dask():
            count = segment_and_write(Path(text), out, options, model, progress, notes)
    except BatchInputError as exc:
        problem = one_line(exc)
    except Exception as exc:  # noqa: BLE001 - one broken input must not end the batch
        problem = f"unexpected {type(exc).__name__}: {one_line(exc)}"
    else:
        note = "; ".join(notes)
        return FileResult(
            text, str(out), "done", count, time.perf_counter() - start, "", _worker_name(), note
        )
    return FileResult(text, str(out), "failed", None, time.perf_counter() - start, problem, _worker_name())
