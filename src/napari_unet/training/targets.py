"""Instance labels -> the network's training targets: background / interior / boundary.

Touching nuclei are the hard case for a U-Net: a 2-class output merges them. Predicting a
thin boundary class gives the post-processing seeds (the interiors) that are separated
even where objects touch. The loss weight map follows the idea of Ronneberger et al.
2015 (eq. 2): pixels in the thin gap between two objects weigh more. The paper's
exact map needs a distance transform per object; we use a cheap, local equivalent:
a pixel that has two different objects (or an object and another object's background gap)
within ``touch_radius`` gets ``touch_weight``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
N_CLASSES = 3
TARGET_NAME = "3class-bg-interior-boundary"


def inner_boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels with a face neighbour of another value, by array shifts.

    This is ``find_boundaries(labels, mode="inner")`` before its foreground test, ~20x cheaper
    (it runs on every training crop). Outside the array the edge pixel repeats, as
    ``find_boundaries``' reflected border does.
    """
    labels = np.asarray(labels)
    p = np.pad(labels, 1, mode="edge")
    inner = (slice(1, -1),) * labels.ndim
    c = p[inner]
    out = np.zeros(labels.shape, bool)
    for ax in range(labels.ndim):
        for part in (slice(None, -2), slice(2, None)):
            idx = list(inner)
            idx[ax] = part
            out |= p[tuple(idx)] != c
    return out


def encode_classes(labels: np.ndarray) -> np.ndarray:
    """Instance labels (H, W) -> uint8 classes: 0 background, 1 interior, 2 boundary."""
    labels = np.asarray(labels)
    fg = labels > 0
    boundary = inner_boundaries(labels) & fg
    classes = np.zeros(labels.shape, np.uint8)
    classes[fg] = INTERIOR
    classes[boundary] = BOUNDARY
    return classes


def touching_zone(labels: np.ndarray, radius: int = 2) -> np.ndarray:
    """Pixels that see two different objects within ``radius``: the gaps that split nuclei."""
    labels = np.asarray(labels)
    size = 2 * radius + 1
    big = np.iinfo(np.int64).max
    lab64 = labels.astype(np.int64, copy=False)
    hi = ndi.maximum_filter(lab64, size=size)
    lo = ndi.minimum_filter(np.where(lab64 > 0, lab64, big), size=size)
    return (hi > 0) & (lo < big) & (hi != lo)


def weight_map(
    labels: np.ndarray,
    boundary_weight: float = 2.0,
    touch_weight: float = 6.0,
    touch_radius: int = 2,
    classes: np.ndarray | None = None,
) -> np.ndarray:
    """Per-pixel loss weights: 1, ``boundary_weight`` on boundaries, more between touching objects.

    ``classes`` is ``encode_classes(labels)`` when the caller has it already.
    """
    if classes is None:
        classes = encode_classes(labels)
    w = np.ones(labels.shape, np.float32)
    w[classes == BOUNDARY] = boundary_weight
    w[touching_zone(labels, touch_radius)] = touch_weight
    return w
