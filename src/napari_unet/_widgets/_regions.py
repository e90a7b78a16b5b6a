"""Reviewed regions: a Shapes layer's rectangles, polygons and ellipses as a mask in the
labels' pixels, so Fine-tune learns only where the user looked (no Qt: tested without a display).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from skimage.draw import polygon

Plane = tuple[int, ...]  # index over the labels' leading (T / Z) axes; () for a 2D image


@dataclass(frozen=True)
class Regions:
    """A reviewed mask from a Shapes layer: ``mask`` is (Y, X) for every plane when the
    shapes are 2D, else the labels' shape; ``planes`` are the planes holding shapes."""

    mask: np.ndarray
    planes: frozenset[Plane]
    skipped: int  # lines / paths / points: no area


def _ellipse_outline(corners: np.ndarray, n: int = 64) -> np.ndarray:
    """napari stores an ellipse as the 4 corners of its box; its outline as a polygon."""
    c = corners.mean(axis=0)
    u = (corners[1] + corners[2]) / 2 - c
    v = (corners[2] + corners[3]) / 2 - c
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)[:, None]
    return c + np.cos(t) * u + np.sin(t) * v


def regions_mask(
    shapes: Sequence[np.ndarray],
    shape_types: Sequence[str],
    to_labels: Callable[[np.ndarray], np.ndarray],
    labels_shape: Sequence[int],
    shapes_ndim: int,
) -> Regions:
    """Rasterise rectangles, polygons and ellipses into the labels' pixel grid.

    ``to_labels`` maps (N, shapes_ndim) vertex coordinates to the labels' data coordinates of
    its last ``min(shapes_ndim, labels ndim)`` axes (world transforms of both layers).
    Shapes of a 2D layer drawn over a stack count on every plane."""

    labels_shape = tuple(int(n) for n in labels_shape)
    h, w = labels_shape[-2:]
    n_lead = len(labels_shape) - 2
    per_plane = shapes_ndim < len(labels_shape)  # 2D shapes over a stack: one (Y, X) mask
    mask = np.zeros((h, w) if per_plane or n_lead == 0 else labels_shape, bool)
    planes: set[Plane] = set()
    skipped = 0
    for verts, kind in zip(shapes, shape_types, strict=True):
        if kind not in ("rectangle", "polygon", "ellipse"):
            skipped += 1
            continue
        pts = np.asarray(to_labels(np.asarray(verts, float)), float)
        yx = pts[:, -2:]
        if kind == "ellipse":
            yx = _ellipse_outline(yx)
        rr, cc = polygon(yx[:, 0], yx[:, 1], (h, w))
        if per_plane or n_lead == 0:
            mask[rr, cc] = True
            continue
        lead = pts[:, -len(labels_shape) : -2]
        plane = tuple(
            int(np.clip(np.round(v), 0, n - 1)) for v, n in zip(lead.mean(axis=0), labels_shape, strict=False)
        )
        mask[plane][rr, cc] = True
        planes.add(plane)
    return Regions(mask, frozenset(planes), skipped)


def affine_between(
    src_scale: Sequence[float],
    src_translate: Sequence[float],
    dst_scale: Sequence[float],
    dst_translate: Sequence[float],
) -> Callable[[np.ndarray], np.ndarray]:
    """Data coordinates of one layer -> those of another, over their common trailing axes
    (napari aligns layers of different dimensionality on their last axes)."""
    k = min(len(src_scale), len(dst_scale))
    s0, t0 = np.asarray(src_scale[-k:], float), np.asarray(src_translate[-k:], float)
    s1, t1 = np.asarray(dst_scale[-k:], float), np.asarray(dst_translate[-k:], float)

    def f(pts: np.ndarray) -> np.ndarray:
        return ((pts[:, -k:] * s0 + t0) - t1) / s1

    return f
