"""TIFF, OME-TIFF and ImageJ hyperstacks in: pixels (eager or lazy), axes, pixel sizes.

Decisions:

* Axes come from tifffile's series axes (ImageJ hyperstack, OME or tifffile "shaped"
  metadata). Letters are mapped to ours (``S`` samples -> ``C``); if any dimension is of a
  kind we do not know (tifffile's ``Q``/``I`` "unknown"/"sequence", ``E`` lambda, ...) the
  axes are reported as ``None`` rather than half-guessed.
* A truncated or corrupt file is an error, never a silently shorter stack: tifffile reads a
  TIFF whose page chain is cut off as its first page only and merely logs it, so its log is
  watched while reading.
* A lazy TIFF is a dask array with one chunk per plane that reads pages on demand
  (picklable: it reopens the file by path, so it works on dask-distributed workers).
* More than 5 dimensions (beyond TZCYX) and OME metadata that contradicts the pixel data are
  errors (tifffile would zero-fill or drop frames and only log it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import tifffile
import zarr
from dask.base import tokenize

from napari_unet.io.errors import MAX_NDIM, ImageReadError, check_pixels, first_line, native_order

__all__ = [
    "LAZY_ENV",
    "LAZY_THRESHOLD",
    "lazy_threshold",
    "map_tiff_axes",
    "open_tiff",
    "read_tiff",
    "tifffile_log",
]

# tifffile's axis letters that mean the same as ours (TZCYX); S (samples, e.g. RGB) is a channel.
_TIFF_AXES = {"T": "T", "Z": "Z", "C": "C", "Y": "Y", "X": "X", "S": "C"}
# tifffile log messages that mean the file is cut off or its structure is broken.
_CORRUPT_LOG = ("invalid page offset", "corrupted", "failed to reshape", "truncated")
# tifffile log messages that mean the OME-XML does not describe the stored pages
_OME_MISMATCH_LOG = ("ome series",)
LAZY_THRESHOLD = 1 << 30  # uncompressed bytes above which open_image reads lazily
LAZY_ENV = "NAPARI_UNET_LAZY_BYTES"
_PLANE_CHUNK_BYTES = 256 << 20  # planes larger than this are chunked in tiles


def _check_ndim(shape: tuple[int, ...], file_axes: str | None = None) -> None:
    if len(shape) > MAX_NDIM:
        told = f", file axes {file_axes}" if file_axes else ""
        raise ImageReadError(
            f"{len(shape)}-D image {tuple(shape)}{told}: at most {MAX_NDIM} dimensions (TZCYX) are supported"
        )


def map_tiff_axes(file_axes: str) -> str | None:
    """Tifffile axis letters -> ours (TZCYX), or ``None`` if any dimension's meaning is unknown."""
    out = []
    for letter in file_axes.upper():
        ours = _TIFF_AXES.get(letter)
        if ours is None:
            return None
        out.append(ours)
    axes = "".join(out)
    if len(set(axes)) != len(axes) or "Y" not in axes or "X" not in axes:
        return None  # e.g. both C and S: ambiguous; no Y/X: not an image in our sense
    return axes


class _LogCatcher(logging.Handler):
    """The warnings a logger emitted, as messages (``.messages``)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def tifffile_log() -> Iterator[_LogCatcher]:
    """Collect tifffile's warnings instead of letting them reach stderr (they signal corruption)."""
    logger = logging.getLogger("tifffile")
    catcher = _LogCatcher()
    logger.addHandler(catcher)
    try:
        yield catcher
    finally:
        logger.removeHandler(catcher)


def _pixel_sizes_imagej(tif: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    ij = tif.imagej_metadata or {}
    sizes: dict[str, float] = {}
    page = tif.pages[0]
    try:
        xres = page.tags["XResolution"].value
        yres = page.tags["YResolution"].value
        if xres[0] and yres[0] and (xres, yres) != ((1, 1), (1, 1)):
            sizes["X"] = xres[1] / xres[0]
            sizes["Y"] = yres[1] / yres[0]
    except (KeyError, TypeError, IndexError, ZeroDivisionError):
        pass
    spacing = ij.get("spacing")
    if isinstance(spacing, (int, float)) and spacing > 0:
        sizes["Z"] = float(spacing)
    finterval = ij.get("finterval")
    if sizes and isinstance(finterval, (int, float)) and finterval > 0:
        sizes["T"] = float(finterval)
    if sizes:
        meta["pixel_size"] = sizes
        unit = ij.get("unit")
        if isinstance(unit, str) and unit:
            meta["unit"] = "µm" if unit in ("micron", "um", "\\u00B5m") else unit
    return meta


def _pixel_sizes_ome(tif: Any) -> dict[str, Any]:
    try:
        root = ET.fromstring(tif.ome_metadata)
    except (ET.ParseError, TypeError, ValueError):
        return {}
    pixels = next((el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels"), None)
    if pixels is None:
        return {}
    sizes: dict[str, float] = {}
    for ax in "XYZ":
        value = pixels.get(f"PhysicalSize{ax}")
        try:
            if value is not None and float(value) > 0:
                sizes[ax] = float(value)
        except ValueError:
            pass
    meta: dict[str, Any] = {}
    names = [ch.get("Name") for ch in pixels if ch.tag.endswith("Channel")]
    if names and all(names):
        meta["channel_names"] = [str(n) for n in names]
    try:
        dt = float(pixels.get("TimeIncrement", "0"))
    except ValueError:
        dt = 0.0
    if dt > 0 and sizes:
        sizes["T"] = dt
        meta["time_unit"] = pixels.get("TimeIncrementUnit", "s")
    if sizes:
        meta.update(pixel_size=sizes, unit=pixels.get("PhysicalSizeXUnit", "µm"))
    return meta


def lazy_threshold(lazy_threshold_bytes: int) -> int:
    """The byte threshold above which a TIFF opens lazily.

    ``NAPARI_UNET_LAZY_BYTES`` replaces the default threshold (not one the caller chose).
    """
    env = os.environ.get(LAZY_ENV)
    if env and lazy_threshold_bytes == LAZY_THRESHOLD:
        try:
            return int(float(env))
        except ValueError:
            raise ImageReadError(f"{LAZY_ENV}={env!r} is not a number of bytes") from None
    return int(lazy_threshold_bytes)


def _tiff_chunks(file_axes: str, shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """One chunk per plane (what napari slices); tiles of ~4096x4096 for huge planes."""
    plane_axes = {"Y", "X", "S"}
    chunks = [n if a in plane_axes else 1 for a, n in zip(file_axes, shape, strict=True)]
    plane = int(np.prod(chunks)) * itemsize
    if plane > _PLANE_CHUNK_BYTES:
        chunks = [min(n, 4096) if a in "YX" else c for a, n, c in zip(file_axes, shape, chunks, strict=True)]
    return tuple(chunks)


class _TiffPlanes:
    """Array-like view of a TIFF series that reads only the pages asked for.

    It holds the path, not an open file: pickling drops the handle, so a dask graph built on it
    can be sent to distributed workers, each of which reopens the file on first use.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path = path
        self.shape = shape
        self.dtype = np.dtype(dtype).newbyteorder("=")
        self.ndim = len(shape)
        self._array: Any = None
        self._store: Any = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_array", "_store", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _array=None, _store=None, _lock=threading.Lock())

    def _open(self) -> Any:
        with self._lock:  # dask threads ask at once: open the file once
            if self._array is None:
                self._store = tifffile.imread(self.path, aszarr=True, series=0)
                self._array = zarr.open(self._store, mode="r")
        return self._array

    def close(self) -> None:
        """Close the file (it reopens on the next read)."""
        with self._lock:
            store, self._store, self._array = self._store, None, None
        if store is not None:
            store.close()

    def __del__(self) -> None:
        # close the handle ourselves: left to the garbage collector it warns (ResourceWarning)
        with contextlib.suppress(Exception):  # nothing to report to at interpreter exit
            self.close()

    def __getitem__(self, index: Any) -> np.ndarray:
        try:
            return native_order(np.asarray(self._open()[index]))
        except Exception as exc:  # noqa: BLE001 - decoders raise anything on bad bytes
            raise ImageReadError(f"corrupt TIFF data ({first_line(exc)})") from None


def open_tiff(
    path: Path, lazy: bool | None = False, threshold: int = LAZY_THRESHOLD
) -> tuple[Any, str | None, dict[str, Any]]:
    """A TIFF's first series -> ``(numpy or dask array, axes or None, meta)``.

    Lazy when ``lazy`` is true, or when it is ``None`` and the uncompressed pixels exceed
    ``threshold`` bytes. Raises :class:`~napari_unet.io.errors.ImageReadError` for a truncated,
    corrupt or contradictory file.
    """
    file_size = path.stat().st_size
    data: Any = None
    with tifffile_log() as log:
        try:
            with tifffile.TiffFile(path) as tif:
                if not tif.series:
                    raise ImageReadError("TIFF file contains no images")
                series = tif.series[0]
                # every strip/tile of the series must lie inside the file: else it is truncated
                for page in series.pages:
                    if page is None:
                        continue
                    for offset, count in zip(page.dataoffsets, page.databytecounts, strict=False):
                        if count and offset + count > file_size:
                            raise ImageReadError("truncated TIFF (image data runs past the end of the file)")
                if (
                    series.dataoffset is not None
                    and series.nbytes > 0
                    and series.dataoffset + series.nbytes > file_size
                ):
                    raise ImageReadError("truncated TIFF (image data runs past the end of the file)")
                file_axes = str(series.axes)
                shape = tuple(int(n) for n in series.shape)
                dtype = np.dtype(series.dtype)
                meta: dict[str, Any] = {"format": "tiff", "file_axes": file_axes}
                if tif.is_ome:
                    meta["format"] = "ome-tiff"
                    meta.update(_pixel_sizes_ome(tif))
                    if series.kind != "ome":
                        raise ImageReadError("OME metadata contradicts the data (pages do not fit its sizes)")
                elif tif.is_imagej:
                    meta["format"] = "imagej-tiff"
                    meta.update(_pixel_sizes_imagej(tif))
                if len(tif.series) > 1:
                    meta["series"] = len(tif.series)
                _check_ndim(shape, file_axes)
                nbytes = int(np.prod(shape)) * dtype.itemsize
                meta["nbytes"] = nbytes
                if lazy is None:
                    lazy = nbytes > threshold
                if not lazy:
                    data = series.asarray()
        except ImageReadError:
            raise
        except tifffile.TiffFileError as exc:
            msg = first_line(exc)
            if msg.startswith("not a TIFF file"):
                raise ImageReadError("not a TIFF file") from None
            raise ImageReadError(f"corrupt TIFF ({msg})") from None
        except MemoryError:
            raise ImageReadError("image is too large to load into memory") from None
        except Exception as exc:  # noqa: BLE001 - decoders raise anything on bad bytes
            raise ImageReadError(f"truncated or corrupt TIFF ({first_line(exc)})") from None
    mismatch = [m for m in log.messages if any(k in m.lower() for k in _OME_MISMATCH_LOG)]
    if mismatch:
        detail = first_line(Exception(mismatch[-1].split("> ", 1)[-1]))
        raise ImageReadError(f"OME metadata contradicts the data ({detail})")
    broken = [m for m in log.messages if any(k in m.lower() for k in _CORRUPT_LOG)]
    if broken:
        detail = broken[-1].split("> ", 1)[-1]
        raise ImageReadError(f"truncated or corrupt TIFF ({first_line(Exception(detail))})")
    if lazy:
        if 0 in shape:
            raise ImageReadError(f"image has no pixels (shape {shape})")
        if dtype.kind not in "biuf":
            raise ImageReadError(f"unsupported pixel type {dtype}")
        planes = _TiffPlanes(path, shape, dtype)
        name = "tiff-" + tokenize(str(path.resolve()), path.stat().st_mtime_ns, file_size)
        chunks = _tiff_chunks(file_axes, shape, dtype.itemsize)
        data = da.from_array(
            planes,
            chunks=chunks,
            name=name,
            lock=False,
            asarray=False,
            meta=np.empty((0,) * len(shape), planes.dtype),
        )
    else:
        data = check_pixels(data)
    meta["lazy"] = bool(lazy)
    axes = map_tiff_axes(file_axes) if len(file_axes) == data.ndim else None
    if file_axes.upper().endswith("S") and data.shape[-1] in (3, 4):
        meta["rgb"] = True  # colour samples, even where the other axes are unknown
    return data, axes, meta


def read_tiff(path: Path) -> tuple[np.ndarray, str | None, dict[str, Any]]:
    """:func:`open_tiff`, always into memory."""
    return open_tiff(path, lazy=False)
