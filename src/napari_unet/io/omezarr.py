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
* Errors in reading are :class:`~napari_unet.io.errors.ImageReadError` with a one-line reason.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numcodecs
import numpy as np
import zarr

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
    """Like :func:`read_ome_zarr` but with a dask array per resolution level (napari multiscale)."""
    arrays, axes, meta = _levels(path)
    _check_array(arrays[0])
    meta["levels"] = len(arrays)
    return [da.from_zarr(a) for a in arrays], axes, meta


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
        )
        root.attrs.update(_attrs(axes, pixel_size, unit, name, labels, channel_names))
        yield arr
        _commit(tmp, target, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
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
            # dask chunks aligned to the store's: no two tasks write the same zarr chunk
            da.store(data.rechunk(arr.chunks), arr, lock=False, scheduler="threads")
        else:
            arr[...] = data
    return Path(path)
