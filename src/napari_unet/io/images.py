"""Images in, label images out: the file side of segmentation, shared by the CLI and the plugin.

Reading returns the pixels, the axes the file itself declares (or ``None`` where it does not
say) and a small metadata dict, so the caller decides what an ambiguous array means: a
guessed axis order is worse than asking the user.

Decisions:

* TIFF axes come from tifffile's series axes (ImageJ hyperstack, OME or tifffile "shaped"
  metadata). Letters are mapped to ours (``S`` samples -> ``C``); if any dimension is of a
  kind we do not know (tifffile's ``Q``/``I`` "unknown"/"sequence", ``E`` lambda, ...) the
  axes are reported as ``None`` rather than half-guessed.
* PNG/JPEG: a colour image is ``"YXC"`` with ``meta["rgb"] = True``; the caller picks a
  channel. An RGB(A) file whose colour channels are identical (and whose alpha, if any, is
  fully opaque) is a grayscale image saved as RGB, which many acquisition and export tools do;
  it is collapsed to ``"YX"`` (``meta["collapsed_rgb"] = True``) because nothing is lost and
  the user should not need a flag for it. Pass ``collapse_gray_rgb=False`` to get the raw
  array, e.g. when the user describes the file's axes explicitly.
* A truncated or corrupt file is an error, never a silently shorter stack: tifffile reads a
  TIFF whose page chain is cut off as its first page only and merely logs it, so its log is
  watched while reading.
* :func:`open_image` is :func:`read_image` for stacks of any size: a TIFF whose pixels exceed
  :data:`LAZY_THRESHOLD` (1 GiB, or ``NAPARI_UNET_LAZY_BYTES``) comes back as a dask array with
  one chunk per plane that reads pages on demand (picklable: it reopens the file by path, so it
  works on dask-distributed workers); OME-Zarr folders are always lazy.
* More than 5 dimensions (beyond TZCYX) and OME metadata that contradicts the pixel data are
  errors (tifffile would zero-fill or drop frames and only log it).
* Labels are written atomically (temporary file in the same folder, then ``os.replace``):
  an interrupted run never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import logging
import os
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.common.atomic import atomic_write

TIFF_SUFFIXES = (".tif", ".tiff")
PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg")
SUPPORTED_SUFFIXES = (".ome.tif", ".ome.tiff", *TIFF_SUFFIXES, *PLAIN_SUFFIXES)

# tifffile's axis letters that mean the same as ours (TZCYX); S (samples, e.g. RGB) is a channel.
_TIFF_AXES = {"T": "T", "Z": "Z", "C": "C", "Y": "Y", "X": "X", "S": "C"}
# tifffile log messages that mean the file is cut off or its structure is broken.
_CORRUPT_LOG = ("invalid page offset", "corrupted", "failed to reshape", "truncated")
_IMAGEJ_ORDER = "TZCYX"
# tifffile log messages that mean the OME-XML does not describe the stored pages
_OME_MISMATCH_LOG = ("ome series",)
MAX_NDIM = 5
LAZY_THRESHOLD = 1 << 30  # uncompressed bytes above which open_image reads lazily
LAZY_ENV = "NAPARI_UNET_LAZY_BYTES"
ZARR_SUFFIXES = (".ome.zarr", ".zarr")
_PLANE_CHUNK_BYTES = 256 << 20  # planes larger than this are chunked in tiles
_MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff"}


class ImageReadError(ValueError):
    """A file that cannot be read as an image; the message is one line, without the path."""


def image_stem(path: str | os.PathLike) -> str:
    """File name without its image suffix; ``a.ome.tif`` -> ``a`` (not ``a.ome``)."""
    name = Path(path).name
    lower = name.lower()
    for suffix in (*SUPPORTED_SUFFIXES, *ZARR_SUFFIXES):
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _suffix(path: Path) -> str:
    lower = path.name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:limit]


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImageReadError("no such file")
    if path.is_dir():
        raise ImageReadError("is a folder, not an image file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageReadError(f"cannot read file ({exc.strerror or _first_line(exc)})") from None
    if size == 0:
        raise ImageReadError("file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise ImageReadError("permission denied")


def _native(data: np.ndarray) -> np.ndarray:
    """Native byte order: torch and most of numpy's fast paths refuse big-endian arrays."""
    return data if data.dtype.isnative else data.astype(data.dtype.newbyteorder("="))


def _check_ndim(shape: tuple[int, ...], file_axes: str | None = None) -> None:
    if len(shape) > MAX_NDIM:
        told = f", file axes {file_axes}" if file_axes else ""
        raise ImageReadError(
            f"{len(shape)}-D image {tuple(shape)}{told}: at most {MAX_NDIM} dimensions (TZCYX) are supported"
        )


def _check_pixels(data: np.ndarray) -> np.ndarray:
    if data.size == 0:
        raise ImageReadError(f"image has no pixels (shape {tuple(data.shape)})")
    if data.dtype.kind not in "biuf":
        raise ImageReadError(f"unsupported pixel type {data.dtype}")
    return _native(np.asarray(data))


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
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _tifffile_log() -> Iterator[_LogCatcher]:
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


def _lazy_threshold(lazy_threshold_bytes: int) -> int:
    """The env var replaces the default threshold (not one the caller chose)."""
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
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_array", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _array=None, _lock=threading.Lock())

    def _open(self) -> Any:
        with self._lock:  # dask threads ask at once: open the file once
            if self._array is None:
                import tifffile
                import zarr

                self._array = zarr.open(tifffile.imread(self.path, aszarr=True, series=0), mode="r")
        return self._array

    def __getitem__(self, index: Any) -> np.ndarray:
        try:
            return _native(np.asarray(self._open()[index]))
        except Exception as exc:  # noqa: BLE001 - decoders raise anything on bad bytes
            raise ImageReadError(f"corrupt TIFF data ({_first_line(exc)})") from None


def _open_tiff(
    path: Path, lazy: bool | None = False, threshold: int = LAZY_THRESHOLD
) -> tuple[Any, str | None, dict[str, Any]]:
    import tifffile

    file_size = path.stat().st_size
    data: Any = None
    with _tifffile_log() as log:
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
            msg = _first_line(exc)
            if msg.startswith("not a TIFF file"):
                raise ImageReadError("not a TIFF file") from None
            raise ImageReadError(f"corrupt TIFF ({msg})") from None
        except MemoryError:
            raise ImageReadError("image is too large to load into memory") from None
        except Exception as exc:  # noqa: BLE001 - decoders raise anything on bad bytes
            raise ImageReadError(f"truncated or corrupt TIFF ({_first_line(exc)})") from None
    mismatch = [m for m in log.messages if any(k in m.lower() for k in _OME_MISMATCH_LOG)]
    if mismatch:
        detail = _first_line(Exception(mismatch[-1].split("> ", 1)[-1]))
        raise ImageReadError(f"OME metadata contradicts the data ({detail})")
    broken = [m for m in log.messages if any(k in m.lower() for k in _CORRUPT_LOG)]
    if broken:
        detail = broken[-1].split("> ", 1)[-1]
        raise ImageReadError(f"truncated or corrupt TIFF ({_first_line(Exception(detail))})")
    if lazy:
        import dask.array as da
        from dask.base import tokenize

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
        data = _check_pixels(data)
    meta["lazy"] = bool(lazy)
    axes = map_tiff_axes(file_axes) if len(file_axes) == data.ndim else None
    if file_axes.upper().endswith("S") and data.shape[-1] in (3, 4):
        meta["rgb"] = True  # colour samples, even where the other axes are unknown
    return data, axes, meta


def _read_tiff(path: Path) -> tuple[np.ndarray, str | None, dict[str, Any]]:
    return _open_tiff(path, lazy=False)


def _read_plain(path: Path, suffix: str, collapse_gray_rgb: bool) -> tuple[np.ndarray, str | None, dict]:
    import imageio.v3 as iio

    kind = "png" if suffix == ".png" else "jpeg"
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head.startswith(_MAGIC[kind]):  # decoders give baffling messages for non-images
        raise ImageReadError(f"not a {kind.upper()} image (unrecognised content)")
    try:
        data = np.asarray(iio.imread(path))
    except MemoryError:
        raise ImageReadError("image is too large to load into memory") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError...
        msg = _first_line(exc)
        if "truncated" in msg.lower():
            raise ImageReadError(f"truncated {kind.upper()} file") from None
        if "could not find a backend" in msg.lower():
            raise ImageReadError(f"not a {kind.upper()} image (unrecognised content)") from None
        raise ImageReadError(f"not a readable {kind.upper()} image ({msg})") from None
    data = _check_pixels(data)
    meta: dict[str, Any] = {"format": kind}
    if data.ndim == 2:
        return data, "YX", meta
    if data.ndim != 3 or data.shape[-1] not in (2, 3, 4):
        raise ImageReadError(f"unexpected {kind.upper()} layout (shape {tuple(data.shape)})")
    nchan = data.shape[-1]
    has_alpha = nchan in (2, 4)
    color = data[..., : nchan - 1] if has_alpha else data
    gray = all(np.array_equal(color[..., 0], color[..., i]) for i in range(1, color.shape[-1]))
    opaque = not has_alpha or bool((data[..., -1] == data[..., -1].max()).all())
    if collapse_gray_rgb and gray and opaque:
        meta["collapsed_rgb"] = True
        return np.ascontiguousarray(color[..., 0]), "YX", meta
    meta["rgb"] = nchan >= 3
    return data, "YXC", meta


def read_image(
    path: str | os.PathLike, collapse_gray_rgb: bool = True
) -> tuple[np.ndarray, str | None, dict[str, Any]]:
    """Read a TIFF/OME-TIFF/PNG/JPEG -> ``(pixels, axes or None, meta)``.

    ``axes`` uses the letters TZCYX and is ``None`` where the file does not say. ``meta`` may
    hold ``format``, ``file_axes`` (tifffile's letters), ``pixel_size`` ({"X", "Y", "Z"}) with
    ``unit``, ``rgb`` and ``collapsed_rgb``. Raises :class:`ImageReadError` with a one-line
    reason (no path in it) for anything that is not a complete, non-empty image.
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
        return _read_plain(path, suffix, collapse_gray_rgb)
    return _read_tiff(path)


def open_image(
    path: str | os.PathLike,
    lazy: bool | None = None,
    lazy_threshold_bytes: int = LAZY_THRESHOLD,
) -> tuple[Any, str | None, dict[str, Any]]:
    """:func:`read_image` for stacks of any size -> ``(numpy or dask array, axes or None, meta)``.

    TIFF/OME-TIFF: a dask array (one chunk per plane, pages read on demand) when ``lazy`` is
    true, or when it is ``None`` and the uncompressed pixels exceed the threshold
    (``lazy_threshold_bytes``; the default can be changed with ``NAPARI_UNET_LAZY_BYTES``).
    OME-Zarr folders (``.zarr``): always a dask array of the highest resolution. PNG/JPEG:
    numpy. ``meta`` adds to read_image's keys ``lazy``, ``nbytes``, ``channel_names``,
    ``pixel_size["T"]`` (with ``time_unit``) where known, and ``note`` when axes were not given.
    """
    path = Path(path)
    lower = path.name.lower().rstrip("/")
    if lower.endswith(ZARR_SUFFIXES) or path.is_dir():
        from napari_unet.io.omezarr import read_ome_zarr

        data, axes, meta = read_ome_zarr(path)
        meta["lazy"] = True
        meta["nbytes"] = int(data.nbytes)
        return data, axes, meta
    suffix = _suffix(path)
    if suffix in TIFF_SUFFIXES or suffix in (".ome.tif", ".ome.tiff"):
        _check_file(path)
        return _open_tiff(path, lazy, _lazy_threshold(lazy_threshold_bytes))
    data, axes, meta = read_image(path)
    meta.update(lazy=False, nbytes=int(data.nbytes))
    return data, axes, meta


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
    import dask
    import dask.array as da

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
    """Write integer labels to a zlib-compressed TIFF, atomically; returns the path.

    ImageJ hyperstack metadata (axes, pixel size from ``meta["pixel_size"]``/``meta["unit"]``)
    is written where ImageJ can represent the file (uint16 labels, axes in TZCYX order), so the
    labels open calibrated in Fiji; otherwise a plain TIFF with tifffile's axes metadata.
    Dask or zarr labels are written a plane at a time (BigTIFF beyond 4 GB).
    """
    import tifffile

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
