"""Class probabilities -> instance labels (2D or 3D), separating touching nuclei.

The network predicts background / interior / boundary. Interiors of touching nuclei are
separated by the boundary class, so connected interiors are the seeds, one per object.
Each seed is then grown over the foreground (interior + boundary) by a seeded watershed
on the interior probability, and objects smaller than ``min_size`` are dropped.
The same code runs on a (Z, Y, X) probability volume, which gives one id per object
through z.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed


@dataclass(frozen=True)
class PostprocessParams:
    """``threshold``: foreground probability cut; ``min_size``: smallest object in pixels
    (voxels in 3D); ``seed_threshold``: interior probability that makes a seed."""

    threshold: float = 0.5
    seed_threshold: float = 0.5
    min_size: int = 15
    min_seed_size: int = 4


def _label_dtype(n: int) -> np.dtype:
    return np.dtype(np.uint16) if n < 65535 else np.dtype(np.uint32)


def remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop objects below ``min_size`` pixels and renumber 1..n (in place where possible)."""
    if labels.max(initial=0) == 0:
        return labels
    sizes = np.bincount(labels.ravel())
    keep = sizes >= max(min_size, 1)
    keep[0] = False
    lut = np.zeros(sizes.size, np.int64)
    lut[keep] = np.arange(1, int(keep.sum()) + 1)
    n = int(keep.sum())
    return lut[labels].astype(_label_dtype(n), copy=False)


def instances_from_probabilities(
    interior: np.ndarray,
    foreground: np.ndarray,
    params: PostprocessParams = PostprocessParams(),
) -> np.ndarray:
    """Interior and foreground probabilities (same 2D/3D shape) -> instance labels.

    Returns uint16 (uint32 when there are more than 65534 objects), 0 = background.
    """
    interior = np.asarray(interior, dtype=np.float32)
    foreground = np.asarray(foreground, dtype=np.float32)
    if interior.shape != foreground.shape:
        raise ValueError("interior and foreground maps must have the same shape")
    mask = foreground > params.threshold
    if not mask.any():
        return np.zeros(interior.shape, np.uint16)
    seeds_mask = (interior > params.seed_threshold) & mask
    seeds, n = ndi.label(seeds_mask)
    if n == 0:
        # no interiors at all (e.g. tiny objects): fall back to foreground components
        seeds, n = ndi.label(mask)
    else:
        seeds = remove_small(seeds, params.min_seed_size).astype(np.int32, copy=False)
        # foreground components without any seed still become objects
        comps, nc = ndi.label(mask)
        if nc:
            has_seed = np.zeros(nc + 1, bool)
            has_seed[np.unique(comps[seeds > 0])] = True
            has_seed[0] = True
            orphan = ~has_seed[comps]
            if orphan.any():
                extra, ne = ndi.label(orphan)
                seeds = np.where(extra > 0, extra + seeds.max(), seeds).astype(np.int32)
    labels = watershed(-interior, markers=seeds, mask=mask)
    return remove_small(labels, params.min_size)


def instances_from_classes(probs: np.ndarray, params: PostprocessParams = PostprocessParams()) -> np.ndarray:
    """Softmax probabilities (3, ...) in the order background, interior, boundary -> labels."""
    probs = np.asarray(probs)
    if probs.shape[0] != 3:
        raise ValueError(f"expected 3 class probabilities, got {probs.shape[0]}")
    interior = probs[1]
    foreground = probs[1] + probs[2]
    return instances_from_probabilities(interior, foreground, params)
