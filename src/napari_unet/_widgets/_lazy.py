"""Whole-stack segmentation of a lazy (dask or zarr) image layer, without Qt.

A layer whose data is lazy may be larger than memory, so "whole stack" must not load it: the
chunked engine (:mod:`napari_unet.scale.chunked`) writes the labels block by block into an OME-Zarr
store in the user cache folder, and the Labels layer is backed by that store's zarr array
(napari reads the planes it shows; painting writes into the store).

A store lives as long as its layer. One whose napari died (a crash, a killed process, a
viewer closed mid-run) is an orphan: each store has an owner record (``.<store>.owner``: host
and process id) and :func:`clean_cache`, run once when the plugin starts, removes the stores,
temporary stores and records whose owner process is gone from this machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import platformdirs
import zarr

from napari_unet.common.leftovers import QUIET, newest_change, pid_alive, remove, this_host
from napari_unet.engine.metrics import count_objects
from napari_unet.scale.chunked import PROBS_NAME, iter_segment_to_zarr

CACHE_ENV = "NAPARI_UNET_CACHE_DIR"
# what labels_store_path names, and the hidden things around such a store
_STORE = r"(?P<store>[A-Za-z0-9_.-]+-\d{8}-\d{6}-[0-9a-f]{6}\.ome\.zarr)"
_STORE_NAME = re.compile(rf"^{_STORE}$")
_STORE_TEMP = re.compile(rf"^\.{_STORE}\.[0-9a-f]{{8}}\.(?:tmp|old)$")  # the OME-Zarr writer's
_OWNER = re.compile(rf"^\.{_STORE}\.owner$")
UNOWNED_AGE = 24 * 3600.0  # s: a store without owner record (older versions) is left this long
_cleaning: threading.Thread | None = None


def is_lazy(data: Any) -> bool:
    """A dask or zarr-like array (not numpy): reading all of it may not fit in memory."""
    return not isinstance(data, np.ndarray) and hasattr(data, "chunks") and hasattr(data, "shape")


def cache_folder() -> Path:
    """Where lazy labels stores live: ``$NAPARI_UNET_CACHE_DIR`` or the user cache folder."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root)

    return platformdirs.user_cache_path("napari-unet") / "labels"


def _owner_path(store: Path) -> Path:
    return store.with_name(f".{store.name}.owner")


def labels_store_path(image_name: str) -> Path:
    """A new store for one run in :func:`cache_folder` (never the image's folder, which may be
    read-only or shared), with its owner record. Stores are removed with their layer
    (:func:`remove_store`); raises ``OSError`` when the cache folder cannot be written."""
    folder = cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", image_name).strip("._")[:60] or "image"
    path = folder / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.ome.zarr"
    _owner_path(path).write_text(f"{this_host()}\n{os.getpid()}\n", encoding="utf-8")
    return path


def _owner_gone(owner: Path) -> bool | None:
    """Whether the process an owner record names has ended: True, False, or None (no record)."""
    try:
        host, pid_text = owner.read_text(encoding="utf-8").split()[:2]
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    if host != this_host():
        return False  # another machine's (a shared home folder): it cannot be told from here
    return pid != os.getpid() and not pid_alive(pid)


def clean_cache(started: float | None = None) -> list[Path]:
    """Remove the orphans of the labels cache: stores, temporary stores and owner records of dead runs.

    A store (or a temporary store being written) goes when its owner record names a process of
    this machine that has ended; one without a record (made by an older version) when untouched
    for ``UNOWNED_AGE``; a probability scratch store of ``scale.chunked`` when its process has
    ended and it was untouched for ``QUIET`` seconds. Stores of live napari sessions stay.

    Parameters
    ----------
    started : float, optional
        When this session started (``time.time()``); None: now.

    Returns
    -------
    list of Path
        What was removed.
    """
    now = time.time() if started is None else started
    folder = cache_folder()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    owners = {m["store"]: _owner_gone(Path(e.path)) for e in entries if (m := _OWNER.match(e.name))}
    doomed: list[Path] = []
    for entry in entries:
        name = entry.name
        match = _STORE_NAME.match(name) or _STORE_TEMP.match(name) or _OWNER.match(name)
        if match:
            gone = owners.get(match["store"])
            if gone is None:  # no record: judged by age alone
                age = UNOWNED_AGE if _STORE_NAME.match(name) else QUIET
                gone = newest_change(entry.path, after=now - age) <= now - age
            if gone:
                doomed.append(Path(entry.path))
        elif probs := PROBS_NAME.match(name):
            pid = int(probs["pid"]) if probs["pid"] else None
            if pid is not None and (pid == os.getpid() or pid_alive(pid)):
                continue
            if newest_change(entry.path, after=now - QUIET) <= now - QUIET:
                doomed.append(Path(entry.path))
    return [p for p in doomed if remove(p) or not os.path.lexists(p)]


def start_cache_cleaning() -> threading.Thread | None:
    """Run :func:`clean_cache` once per process, in a background thread (removing a large orphan
    store takes a while; the plugin need not wait). The thread, or None when it ran already."""
    global _cleaning
    if _cleaning is not None:
        return None
    _cleaning = threading.Thread(
        target=clean_cache, args=(time.time(),), name="napari-unet-cache", daemon=True
    )
    _cleaning.start()
    return _cleaning


def remove_store(path: Path) -> bool:
    """Delete a labels store once its layer is gone, if it is one of ours: in the cache folder
    and named like :func:`labels_store_path`'s (a store the user saved elsewhere is never touched)."""

    path = Path(path)
    try:
        ours = path.resolve().parent == cache_folder().resolve() and path.name.endswith(".ome.zarr")
    except OSError:
        return False
    if ours:
        with contextlib.suppress(OSError):
            _owner_path(path).unlink()
    if ours and path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
        return True
    return False


def open_labels(path: Path) -> Any:
    """The labels array of a store written by :func:`napari_unet.scale.chunked.segment_to_zarr`,
    open for reading and painting."""

    node = zarr.open(str(path), mode="r+")
    return node["0"] if isinstance(node, zarr.Group) else node


def segment_lazy(
    image: Any, axes: str, path: Path, **kwargs: Any
) -> Generator[Any, None, tuple[Any, str, int]]:
    """Run in the worker: the chunked engine into ``path``; returns (labels array, their axes,
    number of objects). The labels' axes are the image's in OME-NGFF order (``TZYX``)."""

    yield from iter_segment_to_zarr(image, path, axes=axes, **kwargs)
    labels = open_labels(path)
    out_axes = "".join(a for a in "TZYX" if a in axes)
    return labels, out_axes, count_objects(labels, out_axes)


def to_layer_order(labels: Any, labels_axes: str, layer_axes: str) -> Any:
    """The labels in the layer's axis order: the zarr array itself when it already is (paintable),
    else a dask view (read-only)."""
    wanted = [a for a in layer_axes if a != "C"]
    if "".join(wanted) == labels_axes:
        return labels

    return da.from_array(labels, chunks=labels.chunks).transpose([labels_axes.index(a) for a in wanted])
