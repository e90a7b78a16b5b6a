"""Per-object measurements of a labels array: the numbers a microscopist takes away.

One row per object (per object and frame in a time-lapse), with scikit-image's definitions
(``regionprops``): id, size in pixels (voxels in 3D) and, when the pixel size is known, in
physical units; centroid; bounding box; mean and max intensity of the image; eccentricity and
solidity in 2D; z extent in 3D. The numbers come from one pass over the pixels
(:mod:`.object_stats`, :mod:`.convex_hull`) rather than regionprops' loop over the objects. The
table is a plain dict of equal-length numpy arrays (no pandas needed) and writes itself to CSV.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.common.atomic import atomic_write
from napari_unet.engine.object_stats import object_stats, stats_table

__all__ = [
    "Table",
    "add_physical_units",
    "check_axes",
    "join_frames",
    "measure",
    "measure_labels",
    "one_channel",
    "pixel_sizes",
    "split_frames",
    "table_to_csv",
]

Table = dict[str, np.ndarray]


def pixel_sizes(axes: str, scale: Mapping[str, float] | Sequence[float] | None) -> dict[str, float] | None:
    """Pixel size per spatial axis (Z, Y, X) from a mapping or a per-axis sequence; None if unknown.

    Raises ValueError (one line) for a sequence of the wrong length or a size that is not a
    positive number, so a caller can refuse a bad scale before any work.
    """
    if scale is None:
        return None
    if isinstance(scale, Mapping):
        sizes = {a: float(v) for a, v in scale.items() if a in "ZYX" and v is not None}
    else:
        values = list(scale)
        if len(values) != len(axes):
            raise ValueError(f"scale has {len(values)} values for the {len(axes)} axes {axes}")
        sizes = {a: float(v) for a, v in zip(axes, values, strict=True) if a in "ZYX"}
    spatial = [a for a in axes if a in "ZYX"]
    if any(a not in sizes for a in spatial):
        return None
    if not all(math.isfinite(sizes[a]) and sizes[a] > 0 for a in spatial):
        raise ValueError(f"pixel sizes must be positive numbers, got {sizes}")
    return {a: sizes[a] for a in spatial}


def check_axes(axes: str | None, shape: tuple[int, ...]) -> str:
    """The labels' axes, checked (None: ``YX`` for 2D, ``ZYX`` for 3D, ``TZYX`` for 4D)."""
    if axes is None:
        axes = {2: "YX", 3: "ZYX", 4: "TZYX"}.get(len(shape), "")
    axes = axes.upper()
    if len(axes) != len(shape) or set(axes) - set("TZYX") or len(set(axes)) != len(axes) or axes[-2:] != "YX":
        raise ValueError(
            f"axes {axes!r} do not fit labels of shape {shape} (letters among T, Z, Y, X, ending YX)"
        )
    if 0 in shape:
        raise ValueError(f"labels of shape {shape} hold no pixels")
    return axes


def add_physical_units(
    table: Table, axes: str, scale: Mapping[str, float] | Sequence[float] | None, unit: str | None
) -> Table:
    """Add ``area_<unit>2`` (2D) or ``volume_<unit>3`` (3D) and centroids in ``<unit>``."""
    sizes = pixel_sizes(axes, scale)
    if sizes is None:
        return table
    spatial = axes.replace("T", "")
    name = unit or "unit"
    cell = float(np.prod([sizes[a] for a in spatial]))
    table[f"area_{name}2" if len(spatial) == 2 else f"volume_{name}3"] = table["area"] * cell
    for a in spatial:
        table[f"centroid_{a.lower()}_{name}"] = table[f"centroid_{a.lower()}"] * sizes[a]
    return table


def split_frames(labels: Any, image: Any, axes: str) -> list[tuple[int | None, Any, Any]]:
    """``(frame, labels, image)`` of each time point (frame None without a T axis).

    Plain indexing, so a zarr or dask array stays lazy: each frame is read when measured.
    """
    if "T" not in axes:
        return [(None, labels, image)]
    t = axes.index("T")

    def at(arr: Any, i: int) -> Any:
        return None if arr is None else arr[(slice(None),) * t + (i,)]

    return [(i, at(labels, i), at(image, i)) for i in range(int(labels.shape[t]))]


def one_channel(image: Any, image_axes: str, channel: int | None) -> Any:
    """The channel the labels were made from (None: the first), lazily for a dask or zarr image."""
    axes = image_axes.upper().replace("S", "C")
    if "C" not in axes:
        return image
    return image[(slice(None),) * axes.index("C") + (channel or 0,)]


def join_frames(parts: Sequence[tuple[int | None, Table]]) -> Table:
    """The frames' tables as one, a ``frame`` column first for numbered frames."""
    tables = [t if i is None else {"frame": np.full(t["label"].shape, i, np.int64), **t} for i, t in parts]
    return {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}


def _frame_table(labels: np.ndarray, image: np.ndarray | None, spatial: str) -> Table:
    """One frame's rows: the statistics of :mod:`.object_stats`, with solidity in 2D."""
    return stats_table(object_stats(labels, image, convex=len(spatial) == 2), spatial)


def measure_labels(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    *,
    axes: str | None = None,
    scale: Mapping[str, float] | Sequence[float] | None = None,
    unit: str | None = None,
) -> Table:
    """One row per object of ``labels`` (per object and frame with a T axis).

    ``axes``: the labels' axis letters among T, Z, Y, X (None: ``YX`` for 2D, ``ZYX`` for 3D).
    ``image``: same shape, for mean and max intensity. ``scale``: pixel size per axis (a
    ``{"Z": .., "Y": .., "X": ..}`` mapping or one value per axis), adding ``area_<unit>2``
    (2D) or ``volume_<unit>3`` (3D) and centroids in ``<unit>``; ``unit`` names it (default
    "unit"). Raises ValueError with one line for a non-integer labels array, an image of
    another shape, or axes that do not fit.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iub":
        raise ValueError(f"labels must be integers, not {labels.dtype}")
    axes = check_axes(axes, labels.shape)
    if image is not None:
        image = np.asarray(image)
        if image.shape != labels.shape:
            raise ValueError(
                f"image shape {image.shape} differs from the labels' {labels.shape} (pick one channel)"
            )
    pixel_sizes(axes, scale)  # a bad scale is refused before any work
    spatial = axes.replace("T", "")
    lab = labels.astype(np.int64, copy=False) if labels.dtype == bool else labels
    parts = [(i, _frame_table(frame, img, spatial)) for i, frame, img in split_frames(lab, image, axes)]
    return add_physical_units(join_frames(parts), axes, scale, unit)


def measure(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    *,
    axes: str | None = None,
    scale: Mapping[str, float] | Sequence[float] | None = None,
    unit: str | None = None,
    dataframe: bool | None = None,
) -> Any:
    """Per-object measurements of ``labels``: a pandas DataFrame, or a dict of numpy arrays.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer labels (0 is background), with axes among T, Z, Y, X.
    image : numpy.ndarray, optional
        The image of the same shape (one channel), for mean and max intensity.
    axes : str, optional
        The labels' axis letters, e.g. ``"TYX"``; None: ``YX`` for 2D, ``ZYX`` for 3D.
    scale : mapping or sequence, optional
        Pixel size per axis (``{"Z": 2.0, "Y": 0.5, "X": 0.5}`` or one value per axis), for
        areas or volumes and centroids in physical units.
    unit : str, optional
        The unit's name for the physical columns (e.g. ``"um"``).
    dataframe : bool or None
        True: a DataFrame (pandas needed); False: a dict of arrays; None: a DataFrame when
        pandas is installed, else the dict.

    Returns
    -------
    pandas.DataFrame or dict of numpy.ndarray
        One row per object (and frame): ``label``, ``frame`` (time-lapses), ``area`` in pixels
        (voxels in 3D), centroids, bounding boxes, ``mean_intensity`` / ``max_intensity``
        (with an image), ``eccentricity`` / ``solidity`` (2D), ``z_extent`` (3D), and
        ``area_<unit>2`` / ``volume_<unit>3`` with a scale.

    Raises
    ------
    ValueError
        With one line: non-integer labels, an image of another shape, axes that do not fit.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((20, 20), np.uint16)
    >>> labels[2:6, 2:6] = 1
    >>> labels[10:15, 10:12] = 2
    >>> table = measure(labels, dataframe=False)
    >>> table["label"].tolist(), table["area"].tolist()
    ([1, 2], [16, 10])
    """
    table = measure_labels(labels, image, axes=axes, scale=scale, unit=unit)
    if dataframe is False:
        return table
    try:
        import pandas as pd  # local: optional, and heavy to import
    except ImportError:
        if dataframe:
            raise ImportError("measure(dataframe=True) needs pandas: pip install pandas") from None
        return table
    return pd.DataFrame(table)


CSV_ROWS = 10_000  # rows turned into Python values at a time (a whole store's table could be millions)


def table_to_csv(table: Table, path: str | Path) -> Path:
    """Write the table as CSV (one header row, one row per object), atomically.

    Rows are converted :data:`CSV_ROWS` at a time: the table of a store larger than memory
    may hold millions of rows, and Python values of all of them would take gigabytes.
    """
    path = Path(path)
    keys = list(table)
    n = len(table[keys[0]]) if keys else 0
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(keys)
        for start in range(0, n, CSV_ROWS):
            columns = [table[k][start : start + CSV_ROWS].tolist() for k in keys]
            writer.writerows([_cell(v) for v in row] for row in zip(*columns, strict=True))
    return path


def _cell(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value
