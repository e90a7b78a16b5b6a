"""Per-object sums, extremes and second moments of a labels array, in one pass over its pixels.

Every column of the objects table except solidity is a sum, a minimum or a maximum over an
object's pixels (size, centroid, bounding box, mean and max intensity, and the second moments
that give eccentricity), so the same statistics serve a whole image
(:mod:`napari_unet.engine.measure`) and a store read block by block
(:mod:`napari_unet.scale.measure_blocks`, which adds up the blocks' with
:func:`combine_stats`): both tables come from :func:`stats_table` and agree by construction.

One pass with ``bincount`` over the foreground pixels, not ``regionprops``' object-by-object
Python loop: 0.07 s instead of ~0.5 s for a 2048 px image with ~1000 nuclei.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_unet.engine.convex_hull import convex_areas

__all__ = ["Stats", "combine_stats", "eccentricity_from_sums", "object_stats", "stats_table"]

Stats = dict[str, np.ndarray]

_BIG = np.iinfo(np.int64).max


def _ids(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct ids and each value's index among them, as ``np.unique`` gives them.

    Faster when the ids are not much larger than the number of pixels: a lookup table
    instead of a sort.
    """
    top = int(values.max())
    if top > 4 * values.size + 1024:
        return np.unique(values, return_inverse=True)
    present = np.bincount(values, minlength=top + 1) > 0
    ids = np.flatnonzero(present)
    lut = np.zeros(top + 1, np.intp)
    lut[ids] = np.arange(ids.size)
    return ids, lut[values]


def object_stats(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    origin: Sequence[int] | None = None,
    convex: bool = False,
) -> Stats:
    """Per-object statistics of the labels (and image) that the table's columns are made of.

    ``count``, coordinate sums ``s<d>``, extremes ``lo<d>``/``hi<d>``, the Y/X second
    moments ``syy``/``sxx``/``sxy`` and, with an image, ``isum``/``imax``, keyed by ``id``.
    ``origin``: the block's first pixel in the whole array, so a block's coordinates are the
    array's. ``convex`` (2D, whole objects only): ``convex``, each object's convex hull in
    pixels as scikit-image counts it (for solidity). No object: every key, with no rows.
    """
    origin = (0,) * labels.ndim if origin is None else tuple(origin)
    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    if idx.size:
        ids, inverse = _ids(flat[idx].astype(np.int64, copy=False))
    else:
        ids, inverse = np.zeros(0, np.int64), np.zeros(0, np.intp)
    coords = [
        c.astype(np.int64) + o for c, o in zip(np.unravel_index(idx, labels.shape), origin, strict=True)
    ]
    n = ids.size

    def total(w: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(inverse, weights=w, minlength=n).astype(np.float64)

    stats: Stats = {"id": ids.astype(np.int64), "count": total()}
    for d, c in enumerate(coords):
        stats[f"s{d}"] = total(c.astype(np.float64))
        lo, hi = np.full(n, _BIG), np.full(n, -1, np.int64)
        np.minimum.at(lo, inverse, c)
        np.maximum.at(hi, inverse, c)
        stats[f"lo{d}"], stats[f"hi{d}"] = lo, hi
    if len(coords) >= 2:  # the second moments of the last two axes (Y, X), for eccentricity
        y, x = (c.astype(np.float64) for c in coords[-2:])
        stats["syy"], stats["sxx"], stats["sxy"] = total(y * y), total(x * x), total(x * y)
    if image is not None:
        values = image.ravel()[idx].astype(np.float64)
        stats["isum"] = total(values)
        top = np.full(n, -np.inf)
        np.maximum.at(top, inverse, values)
        stats["imax"] = top
    if convex and labels.ndim == 2:
        stats["convex"] = convex_areas(inverse, coords[0] - origin[0], coords[1] - origin[1], n)
    return stats


def combine_stats(parts: list[Stats]) -> Stats:
    """One row per object from the blocks' partial rows: sums added, extremes kept."""
    parts = [p for p in parts if p and p["id"].size]
    if not parts:
        return {}
    allp = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "convex"}
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


def eccentricity_from_sums(
    n: np.ndarray, sy: np.ndarray, sx: np.ndarray, syy: np.ndarray, sxx: np.ndarray, sxy: np.ndarray
) -> np.ndarray:
    """Eccentricity from per-object pixel counts and sums of y, x, y*y, x*x, x*y.

    scikit-image's definition: ``sqrt(1 - l2 / l1)`` of the eigenvalues of the inertia tensor
    of the ellipse with the same second moments.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        my, mx = sy / n, sx / n
        cyy, cxx, cxy = syy / n - my * my, sxx / n - mx * mx, sxy / n - mx * my
        half = np.sqrt(((cyy - cxx) / 2.0) ** 2 + cxy**2)
        big = (cyy + cxx) / 2.0 + half
        small = np.maximum((cyy + cxx) / 2.0 - half, 0.0)
        ecc = np.sqrt(np.clip(1.0 - small / big, 0.0, 1.0))
    return np.where(big > 0, ecc, 0.0)


def stats_table(stats: Stats, spatial: str) -> dict[str, np.ndarray]:
    """The objects table's columns from (combined) statistics; ``spatial``: e.g. ``"YX"``.

    ``label``, ``area``, centroids, bounding boxes (first and one-past-last pixel), mean and
    max intensity (with an image), eccentricity and, from ``convex``, solidity (2D), z extent (3D).
    """
    count = stats["count"]
    table = {"label": stats["id"].astype(np.int64), "area": count.astype(np.int64)}
    with np.errstate(invalid="ignore", divide="ignore"):
        for d, a in enumerate(spatial):
            table[f"centroid_{a.lower()}"] = stats[f"s{d}"] / count
        for d, a in enumerate(spatial):
            table[f"bbox_{a.lower()}0"] = stats[f"lo{d}"]
            table[f"bbox_{a.lower()}1"] = stats[f"hi{d}"] + 1
        if "isum" in stats:
            table["mean_intensity"] = stats["isum"] / count
            table["max_intensity"] = stats["imax"]
        if len(spatial) == 2:
            table["eccentricity"] = eccentricity_from_sums(
                count, stats["s0"], stats["s1"], stats["syy"], stats["sxx"], stats["sxy"]
            )
            if "convex" in stats:
                table["solidity"] = count / stats["convex"]
        else:
            table["z_extent"] = table["bbox_z1"] - table["bbox_z0"]
    return table
