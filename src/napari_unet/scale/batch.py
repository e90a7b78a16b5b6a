"""Batch segmentation of many files, in-process or on a Dask distributed cluster; resumable.

    from napari_unet.batch import BatchOptions, run_batch
    results = run_batch(["data/*.tif", "plate.ome.zarr"], "out/", BatchOptions(model="nuclei"))
    results = run_batch(["data/"], "out/", BatchOptions(), scheduler="tcp://head:8786")

Why it is shaped like this:

* One job is one file: :func:`segment_file` takes picklable arguments only (paths and a frozen
  :class:`BatchOptions` naming the model *file*), so Dask can ship it to any worker. Each
  worker process loads a model once and keeps it (:func:`cached_model`), so a 1,000-file batch
  loads the model once per worker, not once per file.
* Dask distributed is the engine (``client.map`` + ``as_completed``); there is no scheduler
  here. Without a scheduler the files run one after the other in this process: the engine
  already uses every core through torch's threads, so in-process parallelism would only
  oversubscribe them.
* Resumable because every output is written atomically (a temporary file or folder renamed
  into place): an output that exists under its final name is complete, so a re-run skips it
  ("skipped (done)") and redoes everything else. An existing file that is *not* a readable
  label file is not ours: it is reported and left alone unless ``overwrite``.
* A file's problem never stops the batch: it becomes a ``failed`` :class:`FileResult` with a
  one-line message, whichever machine it ran on.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from napari_unet.common.generators import drain
from napari_unet.engine.metrics import count_objects

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from napari_unet.engine.predict import Progress
    from napari_unet.models.model_file import Model

__all__ = [
    "BatchOptions",
    "FileResult",
    "SchedulerError",
    "Summary",
    "cached_model",
    "count_objects",
    "decide_axes",
    "expand_inputs",
    "is_zarr_path",
    "output_format",
    "output_path",
    "output_state",
    "resolve_scheduler",
    "run_batch",
    "segment_file",
    "summarize",
    "write_summary",
]

Status = Literal["done", "skipped", "failed"]
SCHEDULER_ENV = "NAPARI_UNET_SCHEDULER"
ZARR_SUFFIXES = (".ome.zarr", ".zarr")
LABELS_TAG = "_labels"
OUTPUT_SUFFIX = {"tif": f"{LABELS_TAG}.tif", "zarr": f"{LABELS_TAG}.ome.zarr"}
_GLOB_MAGIC = re.compile(r"[*?[]")
CONNECT_TIMEOUT = "10s"  # how long to wait for a scheduler before saying it cannot be reached


class BatchInputError(Exception):
    """One file cannot be segmented; the message is the one line shown to the user."""


class SchedulerError(Exception):
    """The Dask scheduler asked for cannot be used; raised before any file is processed."""


@dataclass(frozen=True)
class BatchOptions:
    """Everything a worker needs to segment one file; small and picklable.

    ``model``: a model name or an absolute ``.pt`` path (None: the bundled model). Workers
    load it themselves, so on a cluster the path must be visible to them (shared file system).
    ``format``: ``"tif"``, ``"zarr"`` (OME-Zarr) or ``"auto"`` (OME-Zarr for OME-Zarr inputs,
    TIFF for everything else). ``torch_threads``: per worker process; None leaves torch's
    default (Dask's nanny starts workers with OMP_NUM_THREADS=1, i.e. one thread each).
    """

    model: str | None = None
    axes: str | None = None
    channel: int | None = None
    threshold: float | None = None
    min_size: int | None = None
    diameter: float | None = None
    device: str = "auto"
    format: str = "auto"
    overwrite: bool = False
    torch_threads: int | None = None
    track: bool = False  # time-lapses: an object keeps its id from frame to frame

    def __post_init__(self) -> None:
        if self.format not in ("auto", "tif", "zarr"):
            raise ValueError(f"format must be 'auto', 'tif' or 'zarr', not {self.format!r}")


@dataclass(frozen=True)
class FileResult:
    """What happened to one input; ``message`` is one line (the problem, or why it was skipped)."""

    input: str
    output: str | None
    status: Status
    objects: int | None = None
    seconds: float = 0.0
    message: str = ""
    worker: str = ""


def _one_line(text: object) -> str:
    text = str(text).strip()
    return " ".join(text.split("\n")[0].split()) if text else "unknown error"


# --- inputs -----------------------------------------------------------------------------------------


def is_zarr_path(path: str | os.PathLike) -> bool:
    """OME-Zarr stores are folders named ``*.zarr``: an input, never a folder to look into."""
    return str(path).rstrip("/\\").lower().endswith(".zarr")


def _is_image_file(path: Path) -> bool:
    from napari_unet.io.images import SUPPORTED_SUFFIXES

    name = path.name.lower()
    return not name.startswith(".") and name.endswith(SUPPORTED_SUFFIXES) and path.is_file()


def _is_input(path: Path) -> bool:
    if is_zarr_path(path):
        return path.is_dir() and not path.name.startswith(".")
    return _is_image_file(path)


def _inside_zarr(path: str) -> bool:
    """``**`` also walks into OME-Zarr stores; what lies inside one is never an input."""
    return any(is_zarr_path(part) for part in Path(path).parent.parts)


def _is_our_output(path: Path, outdir: Path | None) -> bool:
    """Labels we wrote earlier into OUTDIR must not become inputs when OUTDIR is inside the input."""
    if outdir is None or not path.name.lower().endswith(tuple(OUTPUT_SUFFIX.values())):
        return False
    try:
        return path.parent.resolve() == outdir.resolve()
    except OSError:
        return False


def _folder_inputs(folder: Path, recursive: bool) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        keep = []
        for d in sorted(dirs):
            if d.startswith("."):
                continue
            if is_zarr_path(d):
                found.append(here / d)  # an input, not a folder to walk into
            elif recursive:
                keep.append(d)
        dirs[:] = keep
        found += [here / f for f in files if _is_image_file(here / f)]
        if not recursive:
            break
    return sorted(found)


def expand_inputs(
    specs: Iterable[str | os.PathLike], recursive: bool = False, outdir: str | os.PathLike | None = None
) -> tuple[list[str], list[tuple[str, str]]]:
    """Files, folders and glob patterns -> (input paths, [(spec, problem)] for specs giving none).

    A folder gives its supported images (and ``*.zarr`` stores), sorted, non-recursive unless
    ``recursive``. A pattern (``*``, ``?``, ``[``; ``**`` spans folders) is expanded here, so it
    works quoted and on any shell; its matches are sorted and filtered to supported inputs. A
    plain path is kept even if missing or unsupported: that file then fails with its own
    reason. The order of the arguments is kept and repeats are dropped (by real path), so
    ``a.tif data/*.tif`` segments a.tif once. Label files already in ``outdir`` are never inputs.
    """
    out_dir = Path(outdir) if outdir is not None else None
    seen: set[str] = set()
    inputs: list[str] = []
    problems: list[tuple[str, str]] = []

    def add(path: Path | str) -> None:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            inputs.append(str(path))

    for spec in specs:
        text = os.fspath(spec)
        path = Path(text).expanduser()
        if path.is_dir() and not is_zarr_path(path):
            found = [p for p in _folder_inputs(path, recursive) if not _is_our_output(p, out_dir)]
            if not found:
                where = "or its subfolders " if recursive else ""
                hint = "" if recursive else " (--recursive looks into subfolders)"
                problems.append((text, f"folder {where}contains no supported images{hint}"))
            for p in found:
                add(p)
        elif _GLOB_MAGIC.search(text) and not path.exists():
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            found = [
                Path(m)
                for m in matches
                if _is_input(Path(m)) and not _is_our_output(Path(m), out_dir) and not _inside_zarr(m)
            ]
            if not matches:
                problems.append((text, "no files match this pattern"))
            elif not found:
                problems.append((text, f"{len(matches)} match(es) but no supported images among them"))
            for p in found:
                add(p)
        else:
            add(str(path) if text.startswith("~") else text)  # else the user's spelling, for messages
    return inputs, problems


# --- outputs and the resume rule --------------------------------------------------------------------


def _stem(input_path: str | os.PathLike) -> str:
    from napari_unet.io.images import image_stem

    name = Path(str(input_path).rstrip("/\\")).name
    for suffix in ZARR_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return image_stem(name)


def output_format(input_path: str | os.PathLike, fmt: str) -> str:
    """``auto``: OME-Zarr stays OME-Zarr (it is usually big), everything else becomes TIFF."""
    if fmt != "auto":
        return fmt
    return "zarr" if is_zarr_path(input_path) else "tif"


def output_path(outdir: str | os.PathLike, input_path: str | os.PathLike, fmt: str = "auto") -> Path:
    """``OUTDIR/<stem>_labels.tif`` or ``OUTDIR/<stem>_labels.ome.zarr``: stable, so re-runs find it."""
    return Path(outdir) / f"{_stem(input_path)}{OUTPUT_SUFFIX[output_format(input_path, fmt)]}"


def _tiff_complete(path: Path) -> bool:
    import tifffile

    from napari_unet.io.images import _tifffile_log  # collects tifffile's complaints instead of printing them

    try:
        size = path.stat().st_size
        with _tifffile_log() as log, tifffile.TiffFile(path) as tif:
            if log.messages:
                return False
            if not tif.series:
                return False
            for page in tif.series[0].pages:
                if page is None:
                    continue
                for offset, count in zip(page.dataoffsets, page.databytecounts, strict=False):
                    if count and offset + count > size:
                        return False
            return True
    except Exception:  # noqa: BLE001 - anything unreadable is "not a complete label file"
        return False


def _zarr_complete(path: Path) -> bool:
    """An OME-Zarr is renamed into place once written: its multiscales metadata marks it done."""
    try:
        if (path / "zarr.json").is_file():
            attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
            attrs = attrs.get("ome", attrs)
        elif (path / ".zattrs").is_file():
            attrs = json.loads((path / ".zattrs").read_text())
        else:
            return False
        datasets = attrs["multiscales"][0]["datasets"]
        first = path / datasets[0]["path"]
        return (first / "zarr.json").is_file() or (first / ".zarray").is_file()
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return False


def output_state(path: str | os.PathLike) -> Literal["missing", "complete", "foreign"]:
    """``complete``: a label file/store we can read (skip it); ``foreign``: something else is there."""
    path = Path(path)
    if not path.exists():
        return "missing"
    if is_zarr_path(path):
        return "complete" if path.is_dir() and _zarr_complete(path) else "foreign"
    return "complete" if path.is_file() and _tiff_complete(path) else "foreign"


def _precheck(input_path: str, output: Path, overwrite: bool) -> FileResult | None:
    """The skip/refuse decision, made before any work (and again on the worker)."""
    if overwrite:
        return None
    state = output_state(output)
    if state == "complete":
        return FileResult(input_path, str(output), "skipped", message="skipped (done)")
    if state == "foreign":
        return FileResult(
            input_path,
            str(output),
            "failed",
            message=f"{output} exists but is not a complete label file (use --overwrite to replace it)",
        )
    return None


# --- one file ---------------------------------------------------------------------------------------

_MODELS: dict[tuple[str, int, int], Model] = {}
_MODELS_LOCK = threading.Lock()


def cached_model(spec: str | None) -> Model:
    """The model named by ``spec``, loaded once per process (reloaded if the file changes).

    This is what makes a Dask worker load the model once for all the files it is given.
    """
    from napari_unet.models.registry import load_model, resolve_model_path

    path = resolve_model_path(spec)
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    with _MODELS_LOCK:
        if key not in _MODELS:
            if len(_MODELS) >= 4:
                _MODELS.clear()
            _MODELS[key] = load_model(path)
        return _MODELS[key]


def decide_axes(data: Any, file_axes: str | None, user_axes: str | None) -> str:
    """--axes, else what the file declares, else a guess that refuses to guess RGB or >4-D."""
    from napari_unet.common.axes import AxesError, guess_axes, validate_axes

    if user_axes is not None:
        return validate_axes(user_axes, data.shape)
    if file_axes is not None:
        return validate_axes(file_axes, data.shape)
    try:
        return guess_axes(data.shape)
    except AxesError as exc:  # its advice "give axes" means, here, the --axes option
        raise AxesError(str(exc).replace("give axes", "pass --axes")) from None


def _read_input(path: Path, wants_channels: bool) -> tuple[Any, str | None, dict[str, Any]]:
    """The one place inputs are read: OME-Zarr and TIFF through ``io.open_image`` (lazy, as dask,
    above its size threshold, so a worker holds one frame at a time), PNG/JPEG through
    ``io.read_image``, which can keep a grey-looking RGB image's channels when asked.
    """
    from napari_unet.io import images as io

    if is_zarr_path(path):
        if not path.exists():
            raise BatchInputError("no such file or folder")
        if not path.is_dir():
            raise BatchInputError("an OME-Zarr store is a folder; this is a file")
        return io.open_image(path)
    if path.name.lower().endswith(io.TIFF_SUFFIXES):
        return io.open_image(path)
    return io.read_image(path, collapse_gray_rgb=not wants_channels)


def _write_output(
    path: Path, labels: np.ndarray, axes: str | None, meta: dict[str, Any], fmt: str, overwrite: bool
) -> None:
    """The one place labels are written; both formats are atomic (temp file/folder, then rename)."""
    if fmt == "zarr":
        from napari_unet.io.omezarr import write_ome_zarr

        if axes is None:
            raise BatchInputError("labels of unknown axes cannot be written as OME-Zarr; use --format tif")
        sizes = {k: v for k, v in (meta.get("pixel_size") or {}).items() if k in axes}
        write_ome_zarr(
            path,
            labels,
            axes,
            pixel_size=sizes or None,
            unit=meta.get("unit"),
            overwrite=overwrite,
            labels=True,
        )
        return
    from napari_unet.io.images import write_labels

    write_labels(path, labels, axes=axes, meta=meta)


def _postprocess_params(model: Model, threshold: float | None, min_size: int | None) -> Any:
    """The model card's postprocessing with the user's overrides; None lets predict choose."""
    if threshold is None and min_size is None:
        return None
    from napari_unet.engine.predict import default_params

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


def _count_store(path: Path) -> int:
    """Objects in a written labels store, one chunk at a time (it may not fit in memory)."""
    from napari_unet.io.omezarr import read_ome_zarr

    return count_objects(read_ome_zarr(path)[0])


def _tiff_from_store(store: Path, output: Path, axes: str, meta: dict[str, Any]) -> int:
    """Copy a labels store into a TIFF one plane at a time (atomic); returns the object count."""
    from napari_unet.io.images import write_labels
    from napari_unet.io.omezarr import read_ome_zarr

    labels = read_ome_zarr(store)[0]
    write_labels(output, labels, axes=axes if len(axes) == labels.ndim else None, meta=meta)
    return _count_store(store)


def _segment_and_write(
    input_path: Path,
    output: Path,
    options: BatchOptions,
    model: Model,
    progress: Callable[[Progress], None] | None,
) -> int:
    """Read, segment, write; returns the object count. Raises BatchInputError with one line.

    A lazy input (OME-Zarr, or a TIFF above io's size threshold) is segmented block by block
    (``chunked``) so memory does not grow with the stack: straight into the OME-Zarr output,
    or, for a TIFF output, into a hidden store beside it that is then copied plane by plane
    into the TIFF and removed. Everything else is segmented in memory and then written.
    """
    import numpy as np

    from napari_unet.common.axes import AxesError, output_axes
    from napari_unet.engine.normalize import BadImageError
    from napari_unet.engine.predict import PredictConfig, anisotropy_from_pixel_size, iter_segment
    from napari_unet.io.images import ImageReadError
    from napari_unet.models.model_file import ModelFileError

    fmt = output_format(input_path, options.format)
    user_channel_axis = options.axes is not None and bool(set(options.axes) & {"C", "S"})
    wants_channels = options.channel is not None or user_channel_axis
    labels = None
    try:
        # the user describing a channel axis means the raw array, not a grayscale-collapsed one
        data, file_axes, meta = _read_input(input_path, wants_channels)
        axes = decide_axes(data, file_axes, options.axes)
        _check_channels(axes, tuple(data.shape), options.channel, model)
        config = PredictConfig(
            device=options.device,
            diameter=options.diameter,
            anisotropy=anisotropy_from_pixel_size(meta.get("pixel_size")),
        )
        params = _postprocess_params(model, options.threshold, options.min_size)
        kwargs = {"axes": axes, "channel": options.channel, "params": params, "config": config}
        if meta.get("lazy"):
            from napari_unet.scale import chunked

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
                if store != output:
                    return _tiff_from_store(store, output, output_axes(axes), meta)
            finally:
                if store != output:
                    shutil.rmtree(store, ignore_errors=True)
        elif options.track and "T" in axes:  # the chunked engine links frames; in memory here
            from napari_unet.scale.chunked import iter_segment_chunked

            out = np.zeros([n for n, a in zip(data.shape, axes, strict=True) if a != "C"], np.uint32)
            labels = drain(iter_segment_chunked(data, out, model, track=True, **kwargs), progress)
        else:
            labels = drain(iter_segment(data, model=model, **kwargs), progress)
    except OSError as exc:  # the chunked path writes while it segments
        raise BatchInputError(f"cannot write {output} ({exc.strerror or _one_line(exc)})") from None
    except (ImageReadError, BadImageError, AxesError, ModelFileError, BatchInputError) as exc:
        raise BatchInputError(str(exc)) from None
    except ValueError as exc:  # the core's other refusals are one-line ValueErrors too
        raise BatchInputError(str(exc)) from None
    except MemoryError:
        raise BatchInputError("out of memory") from None
    if labels is None:
        return _count_store(output)
    out_axes: str | None = output_axes(axes)
    if labels.ndim != len(out_axes):
        out_axes = None  # predict changed the dimensionality; write without claiming axes
    try:
        _write_output(output, labels, out_axes, meta, fmt, options.overwrite)
    except OSError as exc:
        raise BatchInputError(f"cannot write {output} ({exc.strerror or _one_line(exc)})") from None
    except ValueError as exc:
        raise BatchInputError(f"cannot write {output.name}: {_one_line(exc)}") from None
    return count_objects(labels)


def _on_dask_worker() -> bool:
    if "distributed" not in sys.modules:
        return False
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


@contextlib.contextmanager
def _local_dask() -> Iterator[None]:
    """Lazy inputs are computed here, never on a distributed Client that happens to be around:
    inside a task, dask would otherwise pick the worker's client and queue the file's chunks
    behind the very tasks that wait for them. One thread on a worker (it has one core's share),
    a thread pool in-process.
    """
    import dask

    with dask.config.set(scheduler="synchronous" if _on_dask_worker() else "threads"):
        yield


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
    early = _precheck(text, out, options.overwrite)
    if early is not None:
        return replace(early, worker=_worker_name())
    try:
        if options.torch_threads is not None:
            import torch

            if torch.get_num_threads() != options.torch_threads:
                torch.set_num_threads(options.torch_threads)
        if model is None:
            try:
                model = cached_model(options.model)
            except Exception as exc:  # noqa: BLE001 - a worker that cannot load the model fails the file
                raise BatchInputError(
                    f"cannot load model {options.model or 'nuclei'}: {_one_line(exc)}"
                ) from None
        with _local_dask():
            count = _segment_and_write(Path(text), out, options, model, progress)
    except BatchInputError as exc:
        problem = _one_line(exc)
    except Exception as exc:  # noqa: BLE001 - one broken input must not end the batch
        problem = f"unexpected {type(exc).__name__}: {_one_line(exc)}"
    else:
        return FileResult(text, str(out), "done", count, time.perf_counter() - start, "", _worker_name())
    return FileResult(text, str(out), "failed", None, time.perf_counter() - start, problem, _worker_name())


# --- schedulers -------------------------------------------------------------------------------------


def resolve_scheduler(cli_value: str | None) -> str | None:
    """``--scheduler``, else ``$NAPARI_UNET_SCHEDULER``, else in-process (None).

    ``none``/``in-process`` forces in-process (overriding the variable). Dask's own
    ``scheduler-address`` setting is deliberately not used: it is meant for other tools, and a
    batch that silently leaves the machine is surprising.
    """
    value = cli_value if cli_value is not None else os.environ.get(SCHEDULER_ENV) or None
    if value is None or value.strip().lower() in ("", "none", "in-process", "inprocess"):
        return None
    return value.strip()


@dataclass
class _Cluster:
    client: Any
    cluster: Any = None
    own_client: bool = True

    def close(self) -> None:
        if self.own_client:
            with contextlib.suppress(Exception):
                self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()


def _connect(scheduler: Any) -> _Cluster:
    """A Client for ``scheduler``: an existing Client, ``local[:N]``, a scheduler file or an address."""
    import logging

    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - distributed is a dependency
        raise SchedulerError("dask.distributed is not installed") from None
    if not isinstance(scheduler, str):
        return _Cluster(scheduler, own_client=False)
    text = scheduler
    m = re.fullmatch(r"local(?::(\d+))?", text.lower())
    if m:
        n = int(m.group(1)) if m.group(1) else max(1, os.cpu_count() or 1)
        if n < 1:
            raise SchedulerError("local:N needs N >= 1 workers")
        try:
            cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                # its HTTP server (health, metrics) starts anyway: on a free port, not 8787
                scheduler_kwargs={"dashboard_address": ":0"},
                silence_logs=logging.ERROR,
            )
            return _Cluster(Client(cluster), cluster)
        except Exception as exc:  # noqa: BLE001 - any start failure is one line
            raise SchedulerError(f"cannot start a local cluster ({_one_line(exc)})") from None
    try:
        if text.lower().endswith(".json"):
            if not Path(text).is_file():
                raise SchedulerError("no such scheduler file")
            return _Cluster(Client(scheduler_file=text, timeout=CONNECT_TIMEOUT))
        return _Cluster(Client(text, timeout=CONNECT_TIMEOUT))
    except SchedulerError:
        raise
    except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, ValueError for bad addresses
        raise SchedulerError(f"cannot connect ({_one_line(exc) or type(exc).__name__})") from None


# --- the batch --------------------------------------------------------------------------------------


def _model_for_workers(spec: str | None) -> str | None:
    """The bundled model stays a name (each worker finds its own copy); any other model is sent as
    its absolute file path, which the workers must be able to read.
    """
    from napari_unet.models.registry import BUNDLED_NAME, resolve_model_path

    if spec is None or spec == BUNDLED_NAME:
        return spec
    return str(resolve_model_path(spec).resolve())


def run_batch(
    inputs: Sequence[str | os.PathLike],
    outdir: str | os.PathLike,
    options: BatchOptions = BatchOptions(),
    scheduler: Any = None,
    progress: Callable[[FileResult], None] | None = None,
    *,
    recursive: bool = False,
    model: Model | None = None,
    tile_progress: Callable[[str, Progress], None] | None = None,
    started: Callable[[int], None] | None = None,
) -> list[FileResult]:
    """Segment every input (files, folders, globs) into ``outdir``; one result per input, in order.

    ``scheduler``: None (in-process, sequential), ``"local"``/``"local:N"`` (a LocalCluster
    of N one-thread worker processes), ``"tcp://host:port"``, a scheduler-file ``*.json`` or
    a ``distributed.Client`` (left open). ``progress`` is called once per finished file (done,
    skipped or failed, in completion order); ``tile_progress`` per tile, in-process only;
    ``started`` once with the number of inputs, before the work. Specs that give no file
    become failed results (``output`` None). Of inputs that share an output name the first
    that succeeds (or is already done) owns it; the others fail. Raises
    :class:`SchedulerError` before any file is processed if the scheduler cannot be used.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths, problems = expand_inputs(inputs, recursive=recursive, outdir=outdir)
    n_all = len(problems) + len(paths)
    results: dict[int, FileResult] = {}
    if started is not None:
        started(n_all)

    def finish(i: int, result: FileResult) -> None:
        results[i] = result
        if progress is not None:
            progress(result)

    for i, (spec, problem) in enumerate(problems):
        finish(i, FileResult(spec, None, "failed", message=problem))
    job = _Jobs(
        paths, [output_path(outdir, p, options.format) for p in paths], options, len(problems), finish
    )
    if isinstance(scheduler, str):
        scheduler = resolve_scheduler(scheduler)
    if scheduler is None:
        job.run_in_process(model, tile_progress)
    else:
        job.run_distributed(scheduler)
    return [results[i] for i in range(n_all)]


class _Jobs:
    """The inputs of one batch, their outputs, and who owns each output name."""

    def __init__(
        self,
        paths: list[str],
        outputs: list[Path],
        options: BatchOptions,
        base: int,
        finish: Callable[[int, FileResult], None],
    ) -> None:
        self.paths, self.outputs, self.options = paths, outputs, options
        self._base, self._finish = base, finish
        self.groups: dict[Path, deque[int]] = {}
        for i, out in enumerate(outputs):
            self.groups.setdefault(out, deque()).append(i)

    def settle(self, i: int, result: FileResult) -> int | None:
        """Record a result; returns the next input to try for the same output name, if any."""
        self._finish(self._base + i, result)
        group = self.groups[self.outputs[i]]
        if result.status == "failed":
            return group.popleft() if group else None
        while group:  # the name is taken now: the rest of its group fails
            j = group.popleft()
            self._finish(
                self._base + j,
                FileResult(
                    self.paths[j],
                    str(self.outputs[j]),
                    "failed",
                    message=f"{self.outputs[j].name} was already written for {self.paths[i]} "
                    "(same output name; give it another -o)",
                ),
            )
        return None

    def run_in_process(
        self, model: Model | None, tile_progress: Callable[[str, Progress], None] | None
    ) -> None:
        if model is None and self.paths:
            model = cached_model(self.options.model)
        for i in range(len(self.paths)):
            group = self.groups[self.outputs[i]]
            if not group or group[0] != i:
                continue  # settled already: its output name was taken
            group.popleft()
            path = self.paths[i]
            cb = None if tile_progress is None else (lambda step, p=path: tile_progress(p, step))
            result = segment_file(path, self.outputs[i], self.options, model=model, progress=cb)
            nxt = self.settle(i, result)
            if nxt is not None:
                group.appendleft(nxt)  # the name is still free: that input runs in its own turn

    def run_distributed(self, scheduler: Any) -> None:
        from distributed import as_completed

        options = replace(self.options, model=_model_for_workers(self.options.model))
        # outputs already complete (or foreign) are settled here: no worker time, no model loading
        first: list[int] = []
        for group in self.groups.values():
            nxt: int | None = group.popleft()
            while nxt is not None:
                early = _precheck(self.paths[nxt], self.outputs[nxt], options.overwrite)
                if early is None:
                    first.append(nxt)
                    break
                nxt = self.settle(nxt, replace(early, worker="client"))
        if not first:
            return
        conn = _connect(scheduler)
        index: dict[str, int] = {}
        try:
            client = conn.client

            def submit(i: int) -> Any:
                fut = client.submit(segment_file, self.paths[i], str(self.outputs[i]), options, pure=False)
                index[fut.key] = i
                return fut

            pending = as_completed([submit(i) for i in sorted(first)])
            for fut in pending:
                i = index.pop(fut.key)
                if fut.status == "finished":
                    result = fut.result()
                else:  # the worker died or the task could not run: the file fails, the batch goes on
                    exc = fut.exception()
                    problem = f"worker failed: {type(exc).__name__}: {_one_line(exc)}"
                    result = FileResult(self.paths[i], str(self.outputs[i]), "failed", message=problem)
                fut.release()
                nxt = self.settle(i, result)
                if nxt is not None:
                    pending.add(submit(nxt))
        except BaseException:
            with contextlib.suppress(Exception):
                conn.client.cancel(list(index))
            raise
        finally:
            conn.close()


# --- summary ----------------------------------------------------------------------------------------


@dataclass
class Summary:
    """Counts and throughput of a batch, for the last line of the CLI and the summary file."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    objects: int = 0
    seconds: float = 0.0
    files_per_second: float = field(default=0.0)

    def line(self) -> str:
        rate = f", {self.files_per_second:.2f} files/s" if self.done else ""
        return (
            f"{self.done} segmented, {self.skipped} skipped (done), {self.failed} failed; "
            f"{self.objects} objects; {self.seconds:.1f} s{rate}"
        )


def summarize(results: Sequence[FileResult], seconds: float) -> Summary:
    """Counts by status; files/s counts segmented files only (skips are free)."""
    s = Summary(seconds=seconds)
    for r in results:
        if r.status == "done":
            s.done += 1
            s.objects += r.objects or 0
        elif r.status == "skipped":
            s.skipped += 1
        else:
            s.failed += 1
    s.files_per_second = s.done / seconds if seconds > 0 else 0.0
    return s


def write_summary(
    path: str | os.PathLike,
    results: Sequence[FileResult],
    seconds: float,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Per-file results as JSON (or CSV if the name ends in .csv), written atomically."""
    import csv

    from napari_unet.common.atomic import atomic_write

    path = Path(path)
    rows = [asdict(r) for r in results]
    with atomic_write(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        if path.suffix.lower() == ".csv":
            names = [f.name for f in FileResult.__dataclass_fields__.values()]
            writer = csv.DictWriter(fh, fieldnames=names)
            writer.writeheader()
            writer.writerows(rows)
        else:
            blob = {**(extra or {}), "summary": asdict(summarize(results, seconds)), "files": rows}
            json.dump(blob, fh, indent=1)
            fh.write("\n")
    return path
