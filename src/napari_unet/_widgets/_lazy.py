"""Whole-stack segmentation of a lazy (dask or zarr) image layer, without Qt.

A layer whose data is lazy may be larger than memory, so "whole stack" must not load it: the
chunked engine (:mod:`napari_unet.scale.chunked`) writes the labels block by block into an OME-Zarr
store in the user cache folder, and the Labels layer is backed by that store's zarr array
(napari reads the planes it shows; painting writes into the store).
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import platformdirs
import zarr

from napari_unet.engine.metrics import count_objects
from napari_unet.scale.chunked import iter_segment_to_zarr

CACHE_ENV = "NAPARI_UNET_CACHE_DIR"


def is_lazy(data: Any) -> bool:
    """A dask or zarr-like array (not numpy): reading all of it may not fit in memory."""
    return not isinstance(data, np.ndarray) and hasattr(data, "chunks") and hasattr(data, "shape")


def cache_folder() -> Path:
    """Where lazy labels stores live: ``$NAPARI_UNET_CACHE_DIR`` or the user cache folder."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root)

    return platformdirs.user_cache_path("napari-unet") / "labels"


def labels_store_path(image_name: str) -> Path:
    """A new store for one run in :func:`cache_folder` (never the image's folder, which may be
    read-only or shared). Stores are removed with their layer (:func:`remove_store`)."""
    folder = cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", image_name).strip("._")[:60] or "image"
    return folder / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.ome.zarr"


def remove_store(path: Path) -> bool:
    """Delete a labels store once its layer is gone, if it is one of ours: in the cache folder
    and named like :func:`labels_store_path`'s (a store the user saved elsewhere is never touched)."""

    path = Path(path)
    try:
        ours = path.resolve().parent == cache_folder().resolve() and path.name.endswith(".ome.zarr")
    except OSError:
        return False
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
