"""OME-Zarr (OME-NGFF) in and out: lazy reading, block-wise atomic writing.

Decisions:

* Written stores are **NGFF 0.4 on Zarr format 2** (``.zgroup``/``.zattrs``/``.zarray``,
  ``"/"`` chunk keys, Blosc-zstd): what napari-ome-zarr, ome-zarr-py and Fiji's readers
  (n5-zarr, MoBIE) all read today. Reading also accepts NGFF 0.5 on Zarr format 3, where the
  attributes sit under ``"ome"``, and the older string-list axes of NGFF 0.3.
* NGFF 0.4 orders axes time, channel, space; our canonical order puts Z before C (TZCYX).
  :func:`write_ome_zarr` transposes to ``TCZYX`` order (a free view for dask); the streaming
  :func:`ome_zarr_writer` cannot transpose, so it refuses axes in another order.
* A labels store is an OME-Zarr image of its own with an ``"image-label"`` attribute
  (``labels=True``): napari-ome-zarr then opens it as a Labels layer and so does our reader. We
  do not nest it under an image's ``labels/`` group: the image may be read-only, remote, or a
  TIFF.
* One resolution level is written (no pyramid). Reading takes every level, checks that they
  agree (same number of dimensions, same pixel type: mixed pixel types are an error, never
  silently upcast) and returns the highest resolution; :func:`read_ome_zarr_levels` gives all.
* Atomic: everything is written into a hidden sibling ``.NAME.<random>.tmp`` folder that is
  renamed into place only when complete, so an interrupted write never leaves a store that looks
  complete (a killed process can leave the hidden temporary folder; it never ends in ``.zarr``).
  This protects against interruption, not power loss (chunk files are not fsynced).
  zarr writes chunks from background tasks, and a failed write (a full disk) returns while its
  sibling chunks are still being written: the clean-up waits for them first
  (:func:`wait_for_pending_writes`), else they land in the removed folder and bring it back.
* Missing chunks: a chunk absent from a store reads as the array's fill value. That is the Zarr
  specification, and writers use it to skip empty chunks (zarr-python 3 does by default), so a
  store with missing chunks is not refused; but an interrupted copy looks the same, so reading an
  image (not a labels store, where an absent chunk is background) counts them and
  ``meta["warning"]`` names the first ones. Our image stores write every chunk
  (``write_empty_chunks``), so in them a missing chunk is always a loss.
* Errors in reading are :class:`~napari_unet.io.errors.ImageReadError` with a one-line reason; a
  chunk that cannot be decoded names its file (zarr's own message names neither store nor chunk).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask.array as da
import numcodecs
import numpy as np
import zarr
import zarr.core.sync
from dask.base import tokenize

from napari_unet.common.axes import validate_axes
from napari_unet.io.errors import MAX_NDIM, ImageReadError, first_line

NGFF_VERSION = "0.4"
NGFF_ORDER = "TCZYX"
# NGFF axis names/types -> our letters
_NAME_TO_LETTER = {"t": "T", "time": "T", "c": "C", "channel": "C", "z": "Z", "y": "Y", "x": "X"}
_TYPE_OF = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
# our short unit symbols <-> UDUNITS-2 names that NGFF requires
_UNIT_TO_NGFF = {
    "µm": "micrometer",
    "um": "micrometer",
    "micron": "micrometer",
    "microns": "micrometer",
    "\\u00B5m": "micrometer",
    "nm": "nanometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
    "pm": "picometer",
    "Å": "angstrom",
}
_NGFF_TO_UNIT = {
    "micrometer": "µm",
    "nanometer": "nm",
    "millimeter": "mm",
    "centimeter": "cm",
    "meter": "m",
    "picometer": "pm",
    "angstrom": "Å",
}
_ZARR_MARKERS = (".zgroup", ".zarray", "zarr.json")
DEFAULT_PLANE_CHUNK = 1024
MISSING_CHECK_MAX_CHUNKS = 250_000  # above this, listing a store's chunks costs more than it tells
PENDING_WRITES_TIMEOUT = 120.0  # s to wait for zarr's in-flight chunk writes before a clean-up


# --- reading --------------------------------------------------------------------------------------


def is_zarr_store(path: str | os.PathLike) -> bool:
    """A folder holding Zarr metadata (format 2 or 3) at its top level."""
    p = Path(path)
    return p.is_dir() and any((p / m).is_file() for m in _ZARR_MARKERS)


def _open_node(path: Path) -> Any:
    if not path.exists():
        raise ImageReadError("no such file or folder")
    if not path.is_dir():
        raise ImageReadError("not a Zarr store (a file, not a folder)")
    if not is_zarr_store(path):
        raise ImageReadError("not a Zarr store (no .zgroup, .zarray or zarr.json in the folder)")
    try:
        return zarr.open(store=str(path), mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises many kinds on broken metadata
        raise ImageReadError(f"unreadable Zarr store ({first_line(exc)})") from None


def _ome_attrs(node: Any) -> dict[str, Any]:
    attrs = dict(node.attrs)
    ome = attrs.get("ome")
    return dict(ome) if isinstance(ome, Mapping) else attrs  # NGFF 0.5 nests under "ome"


def _axis_letters(axes_meta: Sequence[Any]) -> tuple[str | None, list[str]]:
    """NGFF axes -> our letters (``None`` if any axis is of a kind we do not know) and the names."""
    letters, names = [], []
    for ax in axes_meta:
        name = str(ax.get("name", "") if isinstance(ax, Mapping) else ax)
        names.append(name)
        letter = _NAME_TO_LETTER.get(name.lower())
        if letter is None and isinstance(ax, Mapping):
            letter = {"time": "T", "channel": "C"}.get(str(ax.get("type", "")).lower())
        letters.append(letter)
    if None in letters or len(set(letters)) != len(letters):
        return None, names
    axes = "".join(letters)  # type: ignore[arg-type]
    return (axes if "Y" in axes and "X" in axes else None), names


def _scale_of(transforms: Any, ndim: int) -> list[float] | None:
    for t in transforms or []:
        if isinstance(t, Mapping) and t.get("type") == "scale" and "scale" in t:
            scale = [float(s) for s in t["scale"]]
            if len(scale) != ndim:
                raise ImageReadError(
                    f"OME metadata gives {len(scale)} scale factors but the data has {ndim} dimensions"
                )
            return scale
    return None


def _check_array(arr: Any) -> None:
    shape = tuple(arr.shape)
    if len(shape) > MAX_NDIM:
        raise ImageReadError(
            f"{len(shape)}-D image {shape}: at most {MAX_NDIM} dimensions (TZCYX) are supported"
        )
    if len(shape) < 2:
        raise ImageReadError(f"{len(shape)}-D array {shape} is not an image")
    if 0 in shape:
        raise ImageReadError(f"image has no pixels (shape {shape})")
    if np.dtype(arr.dtype).kind not in "biuf":
        raise ImageReadError(f"unsupported pixel type {arr.dtype}")


def _levels(path: str | os.PathLike) -> tuple[list[Any], str | None, dict[str, Any]]:
    """Zarr arrays of every level (highest resolution first), axes and metadata."""
    node = _open_node(Path(path))
    meta: dict[str, Any] = {}
    if isinstance(node, zarr.Array):
        note = "plain Zarr array without OME-NGFF metadata; axes guessed from shape"
        return [node], None, {"format": "zarr", "note": note}
    attrs = _ome_attrs(node)
    multiscales = attrs.get("multiscales")
    if not multiscales:
        arrays = sorted(node.array_keys())
        if len(arrays) == 1:
            note = f"Zarr group without OME-NGFF metadata; read its only array {arrays[0]!r}"
            return [node[arrays[0]]], None, {"format": "zarr", "note": note}
        found = ", ".join(arrays[:5]) or "none"
        raise ImageReadError(f"Zarr group has no OME-NGFF 'multiscales' metadata (arrays: {found})")
    meta["format"] = "ome-zarr"
    ms = multiscales[0]
    datasets = ms.get("datasets") or []
    if not datasets:
        raise ImageReadError("OME-NGFF 'multiscales' lists no datasets")
    levels = []
    for ds in datasets:
        key = str(ds.get("path", ""))
        try:
            arr = node[key]
        except (KeyError, FileNotFoundError, ValueError, zarr.errors.NodeNotFoundError):
            raise ImageReadError(f"OME metadata names dataset {key!r} that is not in the store") from None
        if not isinstance(arr, zarr.Array):
            raise ImageReadError(f"OME dataset {key!r} is a group, not an array")
        levels.append(arr)
    first = levels[0]
    _check_array(first)
    ndim = first.ndim
    if any(lv.ndim != ndim for lv in levels):
        raise ImageReadError(f"multiscale levels have different dimensions {[lv.shape for lv in levels]}")
    dtypes = sorted({str(np.dtype(lv.dtype)) for lv in levels})
    if len(dtypes) > 1:
        raise ImageReadError(f"multiscale levels have different pixel types ({', '.join(dtypes)})")

    axes_meta = ms.get("axes")
    axes: str | None = None
    if axes_meta is None:
        meta["note"] = "OME-NGFF metadata without axes; axes guessed from shape"
    else:
        if len(axes_meta) != ndim:
            names = ",".join(_axis_letters(axes_meta)[1])
            raise ImageReadError(
                f"OME metadata lists {len(axes_meta)} axes ({names}) but the data has {ndim} "
                f"dimensions {tuple(first.shape)}"
            )
        axes, names = _axis_letters(axes_meta)
        meta["ngff_axes"] = names
        if axes is None:
            meta["note"] = f"OME-NGFF axes {names} are not all of T, C, Z, Y, X"

    scale = _scale_of(datasets[0].get("coordinateTransformations"), ndim)
    global_scale = _scale_of(ms.get("coordinateTransformations"), ndim)
    if global_scale is not None:
        scale = [a * b for a, b in zip(scale or [1.0] * ndim, global_scale, strict=True)]
    if axes is not None and scale is not None:
        meta["pixel_size"] = {a: s for a, s in zip(axes, scale, strict=True) if a in "TZYX"}
    if axes is not None and axes_meta is not None:
        units = {a: ax.get("unit") for a, ax in zip(axes, axes_meta, strict=True) if isinstance(ax, Mapping)}
        space = next((units[a] for a in "XYZ" if units.get(a)), None)
        if space:
            meta["unit"] = _NGFF_TO_UNIT.get(str(space), str(space))
        if units.get("T"):
            meta["time_unit"] = str(units["T"])

    channels = (attrs.get("omero") or {}).get("channels") if isinstance(attrs.get("omero"), Mapping) else None
    if axes is not None and "C" in axes and channels:
        labels = [str(c.get("label", "")) if isinstance(c, Mapping) else "" for c in channels]
        if len(labels) == first.shape[axes.index("C")] and all(labels):
            meta["channel_names"] = labels
        else:  # 'omero' is transitional metadata: a wrong count is reported, not fatal
            meta["note"] = (
                f"OME 'omero' lists {len(labels)} channels, data has {first.shape[axes.index('C')]}"
            )
    if "image-label" in attrs:
        meta["labels"] = True
    version = ms.get("version") or attrs.get("version")
    if version:
        meta["ngff_version"] = str(version)
    if ms.get("name"):
        meta["name"] = str(ms["name"])
    meta["level_shapes"] = [tuple(lv.shape) for lv in levels]
    return levels, axes, meta


def read_ome_zarr(path: str | os.PathLike) -> tuple[Any, str | None, dict[str, Any]]:
    """OME-Zarr folder -> ``(dask array of the highest resolution, axes or None, meta)``.

    Always lazy: nothing but metadata is read here. ``meta`` holds ``format`` ("ome-zarr" or
    "zarr" for a store without OME metadata, whose axes are then ``None`` and ``note`` says so),
    ``pixel_size`` ({"T"?, "Z"?, "Y", "X"}), ``unit``, ``channel_names``, ``labels`` (an
    ``image-label`` store), ``levels`` and ``level_shapes``.
    """
    levels = read_ome_zarr_levels(path)
    return levels[0][0], levels[1], levels[2]


def read_ome_zarr_levels(path: str | os.PathLike) -> tuple[list[Any], str | None, dict[str, Any]]:
    """Like :func:`read_ome_zarr` but with a dask array per resolution level (napari multiscale).

    ``meta["warning"]`` (one line) says when chunks of an image's full resolution are missing
    (see the module docstring); a chunk that cannot be read raises
    :class:`~napari_unet.io.errors.ImageReadError` naming its file when the data is computed.
    """
    arrays, axes, meta = _levels(path)
    _check_array(arrays[0])
    meta["levels"] = len(arrays)
    if not meta.get("labels"):
        warning = _missing_chunks_warning(arrays[0])
        if warning:
            meta["warning"] = warning
    return [_as_dask(a, Path(path)) for a in arrays], axes, meta


def _chunk_file(arr: Any, coords: Sequence[int]) -> str:
    """Where the chunk at grid position ``coords`` of ``arr`` lives (its file in a local store)."""
    key = arr.metadata.encode_chunk_key(tuple(int(c) for c in coords))
    root = getattr(arr.store, "root", None)
    return str(Path(root) / arr.path / key) if root is not None else f"{arr.path}/{key}"


def missing_chunks(arr: Any, first: int = 3) -> tuple[int, int, list[str]]:
    """How many chunks of a zarr array are absent from its store, of how many, and the first ones.

    Returns ``(0, total, [])`` without listing when the array has too many chunks to list
    (``MISSING_CHECK_MAX_CHUNKS``) or is sharded (its keys are shards, not chunks).
    """
    total = int(arr.nchunks)
    if total > MISSING_CHECK_MAX_CHUNKS or getattr(arr, "shards", None) is not None:
        return 0, total, []
    missing = total - int(arr.nchunks_initialized)
    if missing <= 0:
        return 0, total, []
    root = getattr(arr.store, "root", None)
    names: list[str] = []
    if root is not None:  # a local store: name the first absent chunk files
        for coords in np.ndindex(*arr.cdata_shape):
            name = _chunk_file(arr, coords)
            if not os.path.exists(name):
                names.append(name)
                if len(names) >= first:
                    break
    return missing, total, names


def _missing_chunks_warning(arr: Any) -> str | None:
    """One line when chunks of ``arr`` are missing (they read as its fill value), else None."""
    try:
        missing, total, names = missing_chunks(arr)
    except Exception:  # noqa: BLE001 - a check that cannot list the store warns of nothing
        return None
    if not missing:
        return None
    shown = ", ".join(names) + (", ..." if missing > len(names) else "")
    return (
        f"{missing} of {total} chunks are missing ({shown}) and read as the fill value "
        f"{arr.fill_value}: normal for a writer that skips empty chunks, a loss after an interrupted copy"
    )


class _NamedChunks:
    """A zarr array for dask whose read errors name the store's chunk file.

    zarr says "error during blosc decompression: -1" for a corrupt chunk, naming neither file nor
    chunk; on a failed read each chunk of the selection is read again alone to find the culprit.
    """

    def __init__(self, arr: Any) -> None:
        self.arr = arr
        self.shape, self.dtype, self.ndim, self.chunks = arr.shape, arr.dtype, arr.ndim, arr.chunks

    def __getitem__(self, selection: Any) -> np.ndarray:
        try:
            return np.asarray(self.arr[selection])
        except Exception as exc:  # noqa: BLE001 - zarr and its codecs raise many kinds
            raise ImageReadError(self._culprit(selection, exc)) from None

    def _grid_ranges(self, selection: Any) -> list[range] | None:
        """The chunk-grid positions a selection of ints and unit-step slices touches, per axis."""
        sel = selection if isinstance(selection, tuple) else (selection,)
        sel = sel + (slice(None),) * (self.ndim - len(sel))
        ranges = []
        for s, n, c in zip(sel, self.shape, self.chunks, strict=True):
            if isinstance(s, (int, np.integer)):
                ranges.append(range(int(s) % n // c, int(s) % n // c + 1))
            elif isinstance(s, slice) and s.step in (None, 1):
                start, stop, _ = s.indices(n)
                ranges.append(range(start // c, max(start, stop - 1) // c + 1))
            else:
                return None
        return ranges

    def _culprit(self, selection: Any, exc: Exception) -> str:
        """One line naming the first chunk of ``selection`` that cannot be read, and why."""
        ranges = self._grid_ranges(selection)
        grids = itertools.product(*ranges) if ranges is not None else iter(())
        for grid in itertools.islice(grids, 64):  # a few reads, on the failure path only
            box = tuple(slice(g * c, (g + 1) * c) for g, c in zip(grid, self.chunks, strict=True))
            try:
                self.arr[box]
            except Exception as one:  # noqa: BLE001 - this chunk is the one
                return f"{_chunk_file(self.arr, grid)}: corrupt or unreadable chunk ({first_line(one)})"
        root = getattr(self.arr.store, "root", None)
        where = Path(root) / self.arr.path if root is not None else self.arr.path
        return f"cannot read the chunks of {where} ({first_line(exc)})"


def _as_dask(arr: Any, path: Path) -> da.Array:
    """A dask array over a zarr array, whose read errors name the chunk (see :class:`_NamedChunks`)."""
    name = "ome-zarr-" + tokenize(str(path.resolve()), arr.path, arr.shape, arr.chunks, str(arr.dtype))
    meta = np.empty((0,) * arr.ndim, dtype=arr.dtype)
    return da.from_array(_NamedChunks(arr), chunks=arr.chunks, name=name, lock=False, fancy=False, meta=meta)


def open_level(path: str | os.PathLike, level: int = 0, mode: str = "r") -> Any:
    """The ``zarr.Array`` of one resolution level of an OME-Zarr (``mode="r+"`` to write into it).

    E.g. to back a Labels layer by a store that :func:`ome_zarr_writer` has just committed (the
    array it yielded pointed into the temporary folder, which no longer exists).
    """
    arrays = _levels(path)[0]
    if not 0 <= level < len(arrays):
        raise ImageReadError(f"no resolution level {level} (the store has {len(arrays)})")
    arr = arrays[level]
    return arr if mode == "r" else zarr.open_array(str(Path(path) / arr.path), mode=mode)


# --- writing --------------------------------------------------------------------------------------


def ngff_unit(unit: str | None) -> str | None:
    """Our unit symbol (``µm``) -> the UDUNITS-2 name NGFF requires (``micrometer``)."""
    if not unit:
        return None
    return _UNIT_TO_NGFF.get(unit, unit)


def _check_ngff_axes(axes: str, shape: tuple[int, ...]) -> str:
    axes = validate_axes(axes, shape)
    positions = [NGFF_ORDER.index(a) for a in axes]
    if positions != sorted(positions):
        wanted = "".join(a for a in NGFF_ORDER if a in axes)
        raise ValueError(f"axes {axes!r} are not in OME-NGFF order (time, channel, space): use {wanted!r}")
    return axes


def default_chunks(shape: Sequence[int], axes: str) -> tuple[int, ...]:
    """One plane (up to 1024x1024) per chunk: what napari slices and block processing want."""
    return tuple(
        min(int(n), DEFAULT_PLANE_CHUNK) if a in "YX" else 1 for a, n in zip(axes, shape, strict=True)
    )


def _attrs(
    axes: str,
    pixel_size: Mapping[str, float] | None,
    unit: str | None,
    name: str | None,
    labels: bool,
    channel_names: Sequence[str] | None,
) -> dict[str, Any]:
    sizes = dict(pixel_size or {})
    space_unit = ngff_unit(unit)
    ngff_axes = []
    for a in axes:
        entry: dict[str, Any] = {"name": a.lower(), "type": _TYPE_OF[a]}
        if a in "ZYX" and space_unit:
            entry["unit"] = space_unit
        ngff_axes.append(entry)
    scale = [1.0 if a == "C" else float(sizes.get(a, 1.0)) for a in axes]
    ms: dict[str, Any] = {
        "version": NGFF_VERSION,
        "axes": ngff_axes,
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
    }
    if name:
        ms["name"] = str(name)
    attrs: dict[str, Any] = {"multiscales": [ms]}
    if channel_names:
        attrs["omero"] = {"channels": [{"label": str(c), "active": True} for c in channel_names]}
    if labels:
        attrs["image-label"] = {"version": NGFF_VERSION}
    return attrs


def wait_for_pending_writes(timeout: float = PENDING_WRITES_TIMEOUT) -> None:
    """Wait until zarr's background tasks (chunk writes still in flight) have ended.

    zarr writes the chunks of one assignment as concurrent tasks on its own event loop; when one
    fails (a full disk) the assignment raises at once while the others go on. A clean-up that
    removes the store then must wait for them, else they recreate its folders after it, and the
    tasks still pending when Python exits print a flood of asyncio tracebacks.
    """
    loop = zarr.core.sync.loop[0]
    if loop is None or loop.is_closed() or not loop.is_running():
        return

    async def settle() -> None:
        me, deadline = asyncio.current_task(), loop.time() + timeout
        while loop.time() < deadline:  # again: a task ending early (a failed gather) may leave children
            pending = [t for t in asyncio.all_tasks() if t is not me]
            if not pending:
                return
            await asyncio.wait(pending, timeout=deadline - loop.time())

    with contextlib.suppress(Exception):  # a loop closing at exit has nothing left to wait for
        asyncio.run_coroutine_threadsafe(settle(), loop).result(timeout + 5)


def remove_store(path: str | os.PathLike) -> None:
    """Delete a (temporary) store after its pending writes ended; a missing one is fine."""
    wait_for_pending_writes()
    shutil.rmtree(path, ignore_errors=True)
    if os.path.exists(path):  # a write that outlived the wait: try once more
        time.sleep(0.1)
        shutil.rmtree(path, ignore_errors=True)


def touch_store(arr: Any) -> None:
    """Mark the store of a zarr array as in use now (its folder's modification time).

    A run that writes nothing into its store for a while (predicting a large frame) still
    touches it, so that a later run's clean-up of leftovers (which removes only temporary stores
    untouched for a while) never takes it for one a killed run left.
    """
    root = getattr(getattr(arr, "store", None), "root", None)
    if root is not None:
        with contextlib.suppress(OSError):
            os.utime(root)


def _temp_sibling(target: Path) -> Path:
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")


def _check_target(target: Path, overwrite: bool) -> None:
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target.name} already exists (pass overwrite=True to replace it)")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK):
        raise PermissionError(f"folder {target.parent} is not writable")


def _commit(tmp: Path, target: Path, overwrite: bool) -> None:
    """Rename the finished temp store into place (swapping out an old one when overwriting)."""
    if not target.exists():
        os.replace(tmp, target)
        return
    if not overwrite:
        raise FileExistsError(f"{target.name} already exists (pass overwrite=True to replace it)")
    trash = target.with_name(f".{target.name}.{secrets.token_hex(4)}.old")
    os.replace(target, trash)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(trash, target)
        raise
    if trash.is_dir():
        shutil.rmtree(trash, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            trash.unlink()


@contextlib.contextmanager
def ome_zarr_writer(
    path: str | os.PathLike,
    shape: Sequence[int],
    dtype: Any,
    axes: str,
    chunks: Sequence[int] | None = None,
    pixel_size: Mapping[str, float] | None = None,
    unit: str | None = None,
    name: str | None = None,
    overwrite: bool = False,
    labels: bool = False,
    channel_names: Sequence[str] | None = None,
    fill_value: int | float = 0,
) -> Iterator[Any]:
    """``with ome_zarr_writer(...) as arr:`` a writable ``zarr.Array`` in a hidden temp store.

    Write blocks into ``arr`` (``arr[z] = plane``, aligned to ``arr.chunks`` if several threads
    write); on a clean exit the store is renamed to ``path``, on an exception it is deleted and
    ``path`` is untouched. ``axes`` must be in NGFF order (``TCZYX`` subset). Chunks never written
    read back as ``fill_value``. Use ``labels=True`` for label images (adds ``image-label``).

    Labels skip the chunks that are all ``fill_value`` (background: a sparse store is small);
    images write every chunk, so that a missing chunk in them always means a loss. On failure
    the temporary store is removed only after zarr's pending writes ended.
    """
    target = Path(path)
    shape = tuple(int(s) for s in shape)
    axes = _check_ngff_axes(axes, shape)
    dtype = np.dtype(dtype)
    if labels and dtype.kind not in "iub":
        raise ValueError(f"labels must have an integer pixel type, not {dtype}")
    chunks = tuple(int(c) for c in chunks) if chunks is not None else default_chunks(shape, axes)
    if len(chunks) != len(shape):
        raise ValueError(f"chunks {chunks} do not match shape {shape}")
    if channel_names is not None and ("C" not in axes or len(channel_names) != shape[axes.index("C")]):
        raise ValueError(f"{len(channel_names)} channel names do not match axes {axes!r} and shape {shape}")
    _check_target(target, overwrite)
    tmp = _temp_sibling(target)
    try:
        root = zarr.open_group(str(tmp), mode="w-", zarr_format=2)
        arr = root.create_array(
            "0",
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            compressors=numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE),
            chunk_key_encoding={"name": "v2", "separator": "/"},
            fill_value=fill_value,
            config={"write_empty_chunks": not labels},
        )
        root.attrs.update(_attrs(axes, pixel_size, unit, name, labels, channel_names))
        yield arr
        wait_for_pending_writes()  # every chunk is on disk before the store is renamed into place
        _commit(tmp, target, overwrite)
    except BaseException:
        remove_store(tmp)
        raise


create_ome_zarr = ome_zarr_writer


def write_ome_zarr(
    path: str | os.PathLike,
    data: Any,
    axes: str,
    pixel_size: Mapping[str, float] | None = None,
    unit: str | None = None,
    chunks: Sequence[int] | None = None,
    name: str | None = None,
    overwrite: bool = False,
    labels: bool = False,
    channel_names: Sequence[str] | None = None,
) -> Path:
    """Write a numpy, dask or zarr array as an NGFF 0.4 OME-Zarr, block by block and atomically.

    ``axes`` are the data's (any order: the store gets them in NGFF's ``TCZYX`` order). Dask and
    zarr data are computed one chunk at a time (threads, never a distributed client: the
    destination is a local folder), so memory stays bounded whatever the size. ``chunks`` are in
    the written (NGFF) order; default: one plane, at most 1024x1024. Returns ``Path(path)``.
    """
    axes = validate_axes(axes, tuple(data.shape))
    order = [axes.index(a) for a in NGFF_ORDER if a in axes]
    ngff_axes = "".join(axes[i] for i in order)
    lazy = not isinstance(data, np.ndarray)
    if lazy:
        data = (
            data
            if isinstance(data, da.Array)
            else da.from_array(data, chunks=getattr(data, "chunks", "auto"))
        )
    if order != list(range(len(order))):
        data = data.transpose(order)
    shape = tuple(int(s) for s in data.shape)
    if labels:
        kind = np.dtype(data.dtype).kind
        if kind == "b":
            data = data.astype(np.uint8)
        elif kind not in "iu":
            raise ValueError(f"labels must be integers, not {data.dtype}")
    if channel_names is not None and "C" not in ngff_axes:
        channel_names = None
    with ome_zarr_writer(
        path,
        shape,
        data.dtype,
        ngff_axes,
        chunks,
        pixel_size=pixel_size,
        unit=unit,
        name=name,
        overwrite=overwrite,
        labels=labels,
        channel_names=channel_names,
    ) as arr:
        if lazy:
            # dask chunks aligned to the store's: no two tasks write the same zarr chunk. The pool
            # is ours so that a failure waits for the tasks still writing before the clean-up
            pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))
            try:
                da.store(data.rechunk(arr.chunks), arr, lock=False, scheduler="threads", pool=pool)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        else:
            arr[...] = data
    return Path(path)
