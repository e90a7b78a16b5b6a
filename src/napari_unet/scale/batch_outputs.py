"""Where a batch writes each input's labels, the resume rule, and the writing itself.

Resumable because every output is written atomically (a temporary file or folder renamed
into place): an output that exists under its final name is complete, so a re-run skips it
("skipped (done)") and redoes everything else. An existing file that is *not* a readable
label file is not ours: it is reported and left alone unless ``overwrite``.

A killed run leaves its hidden temporaries (a full-size store for a large input); a re-run
removes them first (:func:`remove_leftovers`): only names of ours, untouched for a minute before
the run began, and not those of a process still alive on this machine.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tifffile

from napari_unet.common.leftovers import QUIET, newest_change, pid_alive, remove
from napari_unet.engine.metrics import count_objects
from napari_unet.io.images import image_stem
from napari_unet.io.labels import write_labels
from napari_unet.io.omezarr import read_ome_zarr, write_ome_zarr
from napari_unet.io.tiff import tifffile_log
from napari_unet.scale.batch_types import BatchInputError, FileResult
from napari_unet.scale.chunked import PROBS_NAME

__all__ = [
    "LABELS_TAG",
    "OUTPUT_SUFFIX",
    "ZARR_SUFFIXES",
    "count_store",
    "is_zarr_path",
    "output_format",
    "output_path",
    "output_state",
    "precheck",
    "remove_leftovers",
    "tiff_from_store",
    "write_output",
]

ZARR_SUFFIXES = (".ome.zarr", ".zarr")
LABELS_TAG = "_labels"
OUTPUT_SUFFIX = {"tif": f"{LABELS_TAG}.tif", "zarr": f"{LABELS_TAG}.ome.zarr"}


def is_zarr_path(path: str | os.PathLike) -> bool:
    """OME-Zarr stores are folders named ``*.zarr``: an input, never a folder to look into."""
    return str(path).rstrip("/\\").lower().endswith(".zarr")


def _stem(input_path: str | os.PathLike) -> str:
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


# .<name>.<8 hex>.tmp (atomic_write, the OME-Zarr writer), .<name>.<8 hex>.old (a replaced store)
# and .<name>.<pid>.tmp.zarr (the store a lazy input is segmented into before its TIFF is written)
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?:[0-9a-f]{8}\.(?:tmp|old)|(?P<pid>\d+)\.tmp\.zarr)$")


def _leftover_owner(name: str) -> tuple[bool, int | None]:
    """Whether ``name`` is a temporary of a batch output, and the process id it names (if any)."""
    probs = PROBS_NAME.match(name)
    if probs:
        return True, int(probs["pid"]) if probs["pid"] else None
    match = _TEMP_NAME.match(name)
    if not match:
        return False, None
    target, pid = match["target"], int(match["pid"]) if match["pid"] else None
    if target.endswith((*OUTPUT_SUFFIX.values(), "_objects.csv")):
        return True, pid
    # the temporary of a temporary store: ..a_labels.tif.12.tmp.zarr.*.tmp
    ours, inner = _leftover_owner(target)
    return ours and target.startswith("."), inner if inner is not None else pid


def remove_leftovers(
    outdir: str | os.PathLike, started: float | None = None, quiet: float = QUIET
) -> list[Path]:
    """Delete the hidden temporaries that killed runs of ours left in ``outdir``; what was removed.

    Only what is surely dead goes: a name of ours (a label file's, an objects table's or a
    probability store's temporary), nothing in it changed during the ``quiet`` seconds before
    ``started`` (a live run touches its stores every few seconds, see
    :mod:`napari_unet.scale.chunked`), and not named after a process still alive on this machine.
    Anything else, the user's files included, is never touched.

    Parameters
    ----------
    outdir : str or os.PathLike
        The output folder (its top level: outputs never go deeper).
    started : float, optional
        When this run began (``time.time()``); None: now.
    quiet : float
        Seconds a temporary must have been left untouched.

    Returns
    -------
    list of Path
        The files and folders removed.
    """
    cutoff = (time.time() if started is None else started) - quiet
    removed: list[Path] = []
    try:
        entries = list(os.scandir(outdir))
    except OSError:
        return removed
    for entry in entries:
        ours, pid = _leftover_owner(entry.name)
        if not ours or (pid is not None and pid != os.getpid() and pid_alive(pid)):
            continue
        if newest_change(entry.path, after=cutoff) > cutoff:
            continue  # in use, or just made: not a leftover
        if remove(entry.path) or not os.path.lexists(entry.path):
            removed.append(Path(entry.path))
    return removed


def objects_path(labels_output: str | os.PathLike) -> Path:
    """``OUTDIR/<stem>_objects.csv``, the per-object table beside ``OUTDIR/<stem>_labels.*``."""
    path = Path(labels_output)
    name = path.name
    stem = name[: name.rindex(LABELS_TAG)] if LABELS_TAG in name else path.stem
    return path.with_name(f"{stem}_objects.csv")


def _tiff_complete(path: Path) -> bool:
    try:
        size = path.stat().st_size
        with tifffile_log() as log, tifffile.TiffFile(path) as tif:
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


def precheck(input_path: str, output: Path, overwrite: bool) -> FileResult | None:
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


def write_output(
    path: Path, labels: np.ndarray, axes: str | None, meta: dict[str, Any], fmt: str, overwrite: bool
) -> None:
    """The one place labels are written; both formats are atomic (temp file/folder, then rename)."""
    if fmt == "zarr":
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
    write_labels(path, labels, axes=axes, meta=meta)


def count_store(path: Path) -> int:
    """Objects in a written labels store, one chunk at a time (it may not fit in memory)."""
    return count_objects(read_ome_zarr(path)[0])


def tiff_from_store(store: Path, output: Path, axes: str, meta: dict[str, Any]) -> int:
    """Copy a labels store into a TIFF one plane at a time (atomic); returns the object count."""
    labels = read_ome_zarr(store)[0]
    write_labels(output, labels, axes=axes if len(axes) == labels.ndim else None, meta=meta)
    return count_store(store)
