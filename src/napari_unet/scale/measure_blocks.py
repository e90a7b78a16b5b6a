"""Per-object measurements of a labels store larger than memory, block by block.

Every column that is a sum, a minimum or a maximum over an object's pixels (size, centroid,
bounding box, mean and max intensity, and the second moments that give eccentricity) can be
gathered block by block and combined at the end, so memory holds one block plus a few numbers
per object. Solidity needs an object's whole shape at once and is not given here.
The columns otherwise match :func:`napari_unet.engine.measure.measure_labels`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from napari_unet.engine.measure import (
    Table,
    add_physical_units,
    check_axes,
    eccentricity_from_sums,
    measure_labels,
)

__all__ = ["BLOCK", "measure_blocks"]

BLOCK = 1024  # px per side of a Y/X block (Z: 16 slices): ~70 MB of int64 work arrays at most


def _block_stats(lab: np.ndarray, img: np.ndarray | None, origin: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-object sums, minima and maxima of one block (``origin``: its first pixel's coordinates)."""
    flat = lab.ravel()
    inside = flat != 0
    if not inside.any():
        return {}
    ids, inverse = np.unique(flat[inside], return_inverse=True)
    coords = [c.ravel()[inside] + o for c, o in zip(np.indices(lab.shape), origin, strict=True)]
    n = ids.size

    def total(w: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(inverse, weights=w, minlength=n)

    stats: dict[str, np.ndarray] = {"id": ids.astype(np.int64), "count": total()}
    for d, c in enumerate(coords):
        cf = c.astype(np.float64)
        stats[f"s{d}"] = total(cf)
        lo = np.full(n, np.iinfo(np.int64).max)
        hi = np.full(n, -1, np.int64)
        np.minimum.at(lo, inverse, c)
        np.maximum.at(hi, inverse, c)
        stats[f"lo{d}"], stats[f"hi{d}"] = lo, hi
    if len(coords) >= 2:  # the second moments of the last two axes (Y, X), for eccentricity
        y, x = (c.astype(np.float64) for c in coords[-2:])
        stats["syy"], stats["sxx"], stats["sxy"] = total(y * y), total(x * x), total(x * y)
    if img is not None:
        values = img.ravel()[inside].astype(np.float64)
        stats["isum"] = total(values)
        mx = np.full(n, -np.inf)
        np.maximum.at(mx, inverse, values)
        stats["imax"] = mx
    return stats


def _combine(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One row per object from the blocks' partial rows: sums added, extremes kept."""
    parts = [p for p in parts if p]
    if not parts:
        return {}
    allp = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(allp["id"], kind="stable")
    ids = allp["id"][order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    out = {"id": ids[starts]}
    for k, v in allp.items():
        if k == "id":
            continue
        v = v[order]
        if k.startswith("lo"):
            out[k] = np.minimum.reduceat(v, starts)
        elif k.startswith("hi") or k == "imax":
            out[k] = np.maximum.reduceat(v, starts)
        else:
            out[k] = np.add.reduceat(v, starts)
    return out


def _frame(labels: Any, image: Any, spatial: str, block: int) -> Table:
    shape = tuple(int(s) for s in labels.shape)
    steps = [max(1, min(16, block)) if a == "Z" else block for a in spatial]
    parts = []
    for origin in itertools.product(*(range(0, n, s) for n, s in zip(shape, steps, strict=True))):
        index = tuple(slice(o, min(o + s, n)) for o, s, n in zip(origin, steps, shape, strict=True))
        lab = np.asarray(labels[index])
        img = None if image is None else np.asarray(image[index])
        parts.append(_block_stats(lab, img, origin))
    st = _combine(parts)
    if not st:
        return {}
    count = st["count"]
    table: Table = {"label": st["id"], "area": count.astype(np.int64)}
    for d, a in enumerate(spatial):
        table[f"centroid_{a.lower()}"] = st[f"s{d}"] / count
    for d, a in enumerate(spatial):
        table[f"bbox_{a.lower()}0"] = st[f"lo{d}"]
        table[f"bbox_{a.lower()}1"] = st[f"hi{d}"] + 1
    if "isum" in st:
        table["mean_intensity"] = st["isum"] / count
        table["max_intensity"] = st["imax"]
    if len(spatial) == 2:
        table["eccentricity"] = eccentricity_from_sums(
            count, st["s0"], st["s1"], st["syy"], st["sxx"], st["sxy"]
        )
    else:
        table["z_extent"] = table["bbox_z1"] - table["bbox_z0"]
    return table


def measure_blocks(
    labels: Any,
    image: Any = None,
    *,
    axes: str | None = None,
    scale: Mapping[str, float] | Sequence[float] | None = None,
    unit: str | None = None,
    block: int = BLOCK,
) -> Table:
    """One row per object (and frame) of a labels array read block by block (zarr, dask, numpy).

    As :func:`napari_unet.engine.measure.measure_labels`, without ``solidity``; ``block`` is
    the Y/X block size in px. Memory: one block and a few numbers per object.
    """
    if np.dtype(labels.dtype).kind not in "iu":
        raise ValueError(f"labels must be integers, not {labels.dtype}")
    axes = check_axes(axes, tuple(labels.shape))
    if image is not None and tuple(image.shape) != tuple(labels.shape):
        raise ValueError(f"image shape {tuple(image.shape)} differs from the labels' {tuple(labels.shape)}")
    if block < 1 or not math.isfinite(block):
        raise ValueError(f"block must be >= 1 px, got {block}")
    spatial = axes.replace("T", "")
    if "T" not in axes:
        frames = [(None, labels, image)]
    else:
        t = axes.index("T")

        def at(arr: Any, i: int) -> Any:
            return None if arr is None else arr[(slice(None),) * t + (i,)]

        frames = [(i, at(labels, i), at(image, i)) for i in range(int(labels.shape[t]))]
    parts = []
    for i, lab, img in frames:
        part = _frame(lab, img, spatial, block)
        if part and i is not None:
            part = {"frame": np.full(part["label"].shape, i, np.int64), **part}
        if part:
            parts.append(part)
    if not parts:  # no object: the same columns, empty
        empty = measure_labels(np.zeros((1,) * len(axes), np.uint8), axes=axes, scale=scale, unit=unit)
        empty.pop("solidity", None)
        return {k: v[:0] for k, v in empty.items()}
    table = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return add_physical_units(table, axes, scale, unit)
