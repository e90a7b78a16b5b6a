"""Class probabilities -> instance labels (2D or 3D), separating touching nuclei.

The network predicts background / interior / boundary. Interiors of touching nuclei are
separated by the boundary class, so connected interiors are the seeds, one per object.
Each seed is then grown over the foreground (interior + boundary) by a seeded watershed
on the interior probability, and objects smaller than ``min_size`` are dropped.
The same code runs on a (Z, Y, X) probability volume, which gives one id per object
through z. In a volume the seeds are first eroded by an ellipsoid of ``seed_erosion`` px
in y/x and ``seed_erosion / anisotropy`` slices in z (its physical shape is a ball): the 2D
net sees the blurred, out-of-focus tops and bottoms of neighbouring nuclei as one disk, whose
interior bridges their seeds through z; eroding them first keeps touching nuclei apart in 3D
(measured on synthetic stacks with benchmarks/bench_3d.py).

In 2D, ``split_depth`` (off by default, on in the bundled model's card) also cuts a seed where
its shape narrows between two wider cores: the most common error of the 3-class net is two
touching nuclei whose interiors meet (no boundary predicted between them), and such a merged
interior has a waist (merges were 70 % of the missed nuclei on the training script's tuning
images). The cores are the h-maxima of the seed's smoothed distance map: a core counts when the
waist is at least ``split_depth`` px narrower than it. The bundled card's 1.0 px is the grid
choice of ``benchmarks/eval_model.py --grid --cross-validate`` on the held-out experiments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from napari_unet.engine.convex_hull import convex_areas

NECK_SMOOTHING = 2.0  # px: sigma of the blur on a seed's distance map (pixel steps make false cores)
NECK_SOLIDITY = 0.95  # seeds more convex than this have no waist worth looking for


@dataclass(frozen=True)
class PostprocessParams:
    """How probabilities become objects.

    ``threshold``: foreground probability cut; ``min_size``: smallest object in pixels
    (voxels in 3D); ``seed_threshold``: interior probability that makes a seed;
    ``min_seed_size``: smallest seed in pixels; ``split_depth``: how much narrower (px) a waist
    must be than the cores either side of it for a 2D seed to be cut there, 0 = never (see the
    module docstring). A ``threshold`` outside (0, 1), nan included, a ``seed_threshold`` of 0 or
    less or nan, negative sizes and a negative or non-finite ``split_depth`` raise
    ``ValueError``; a ``seed_threshold`` of 1 or more makes no seeds (each foreground component
    is one object).
    """

    threshold: float = 0.5
    seed_threshold: float = 0.5
    min_size: int = 15
    min_seed_size: int = 4
    split_depth: float = 0.0

    def __post_init__(self) -> None:
        # a threshold of nan, 0, 1 or 2 does not fail: it silently finds nothing (or everything)
        for name, high in (("threshold", 1.0), ("seed_threshold", math.inf)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise ValueError(f"{name} must be a number, not {value!r}")
            if not 0.0 < float(value) < high:  # nan fails this too
                span = "between 0 and 1 (exclusive)" if high == 1.0 else "above 0"
                raise ValueError(f"{name} must be {span}, not {value}")
        for name in ("min_size", "min_seed_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, not {value!r}")
        depth = self.split_depth
        if isinstance(depth, bool) or not isinstance(depth, (int, float, np.floating, np.integer)):
            raise ValueError(f"split_depth must be a number, not {depth!r}")
        if not 0.0 <= float(depth) < math.inf:
            raise ValueError(f"split_depth must be 0 (off) or a positive number of pixels, not {depth}")

    def for_zoom(self, zoom: float | None) -> PostprocessParams:
        """These parameters for an image the engine zoomed by ``zoom`` (Y/X) for the net.

        The sizes (``min_size``, ``min_seed_size``, ``split_depth``) are in pixels of the
        model's working scale, where its objects have the card's diameter and where the card
        chose them; the instances are found at the image's own scale, so areas are divided by
        zoom**2 and lengths by zoom (an image enlarged for the net has small objects, whose
        debris and waists are small too). Without a zoom, the two scales are one.
        """
        if zoom is None:
            return self

        def area(value: int) -> int:
            return 0 if value == 0 else max(1, round(value / zoom**2))

        return replace(
            self,
            min_size=area(self.min_size),
            min_seed_size=area(self.min_seed_size),
            split_depth=float(self.split_depth) / zoom,
        )


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


def _objects(
    comps: np.ndarray, n_comps: int, seeds: np.ndarray | None, n_seeds: int, interior: np.ndarray, params
) -> np.ndarray:
    """Grow ``seeds`` over the foreground components ``comps`` and drop small objects.

    This is a seeded watershed on ``-interior`` restricted to the foreground, done only where
    it matters. Flooding stays inside a component, so a component with one seed is that
    seed's object and one without seeds is an object of its own: only components with two
    or more seeds (touching nuclei) need the watershed, each in its bounding box. Object
    sizes come from component sizes, so the whole image is relabelled in one pass. This is
    much faster than one watershed over the image, with identical output (ids: seeds 1..n
    in :func:`scipy.ndimage.label` order, then seedless components, renumbered 1..k after
    size filtering, as :func:`remove_small` does).
    """
    comp_size = np.bincount(comps.ravel(), minlength=n_comps + 1)
    comp_obj = np.zeros(n_comps + 1, np.int64)  # object id of each component (0: several seeds)
    multi = np.zeros(0, np.int64)
    if seeds is None:
        comp_obj[1:] = np.arange(1, n_comps + 1)
        n_obj = n_comps
        seed_id = None
    else:
        seed_size = np.bincount(seeds.ravel(), minlength=n_seeds + 1)
        kept = seed_size >= max(params.min_seed_size, 1)
        kept[0] = False
        n_kept = int(kept.sum())
        seed_id = np.zeros(n_seeds + 1, np.int64)
        seed_id[kept] = np.arange(1, n_kept + 1)
        where = np.flatnonzero(seeds)
        seed_comp = np.zeros(n_kept + 1, np.int64)
        seed_comp[seed_id[seeds.ravel()[where]]] = comps.ravel()[where]
        seed_comp[0] = 0
        per_comp = np.bincount(seed_comp[1:], minlength=n_comps + 1)
        per_comp[0] = 0
        single = per_comp[seed_comp] == 1
        single[0] = False
        comp_obj[seed_comp[single]] = np.flatnonzero(single)
        orphans = np.flatnonzero(per_comp == 0)[1:]
        comp_obj[orphans] = n_kept + 1 + np.arange(orphans.size)
        n_obj = n_kept + orphans.size
        multi = np.flatnonzero(per_comp > 1)
    obj_size = np.zeros(n_obj + 1, np.int64)
    simple = comp_obj > 0
    obj_size[comp_obj[simple]] = comp_size[simple]
    grown_parts = []
    if multi.size:
        boxes = ndi.find_objects(comps, max_label=int(multi[-1]))
        for c in multi:
            box = boxes[c - 1]
            inside = comps[box] == c
            markers = np.where(inside, seed_id[seeds[box]], 0)
            grown = watershed(-interior[box], markers=markers, mask=inside)[inside]
            obj_size += np.bincount(grown, minlength=n_obj + 1)
            grown_parts.append((box, inside, grown))
    keep = obj_size >= max(params.min_size, 1)
    keep[0] = False
    n_final = int(keep.sum())
    dtype = _label_dtype(n_final)
    final = np.zeros(n_obj + 1, dtype)
    final[keep] = np.arange(1, n_final + 1)
    labels = final[comp_obj][comps]
    for box, inside, grown in grown_parts:
        labels[box][inside] = final[grown]
    return labels


def ball(radius: float, anisotropy: float = 1.0) -> np.ndarray:
    """A 3D footprint: the voxels within ``radius`` xy-pixels of the centre, physically.

    A z step is ``anisotropy`` pixels, so it spans ``floor(radius / anisotropy)`` slices
    each side of the centre.
    """
    kz, k = int(np.floor(radius / max(anisotropy, 1e-6))), int(np.floor(radius))
    zz, yy, xx = np.mgrid[-kz : kz + 1, -k : k + 1, -k : k + 1]
    return (zz * anisotropy) ** 2 + yy**2 + xx**2 <= radius**2


def erode_seeds(seeds: np.ndarray, radius: float, anisotropy: float = 1.0) -> np.ndarray:
    """Seed mask eroded by a physical ball (3D only; a 2D mask or radius < 1 is returned as is).

    The array border counts as inside, so a nucleus cut by the stack's top keeps its seed.
    """
    if seeds.ndim != 3 or radius < 1 or seeds.all():
        return seeds
    footprint = ball(radius, anisotropy)
    if footprint.sum() > 1500:  # large balls: the distance transform is O(n), erosion O(n * ball)
        return ndi.distance_transform_edt(seeds, sampling=(anisotropy, 1.0, 1.0)) > radius
    return ndi.binary_erosion(seeds, footprint, border_value=1)


def split_at_necks(
    seed_mask: np.ndarray, depth: float, smoothing: float = NECK_SMOOTHING, solidity: float = NECK_SOLIDITY
) -> tuple[np.ndarray, int]:
    """Label a 2D seed mask, cutting each seed at a waist ``depth`` px narrower than its cores.

    Returns ``(seeds, n)`` like :func:`scipy.ndimage.label`. A waist makes a seed non-convex, so
    only seeds with a solidity (area / convex-hull area, all hulls at once) under ``solidity``
    and big enough to hold two cores are looked at, each in its bounding box: an image of
    single nuclei costs little more than the labelling.
    """
    seeds, n = ndi.label(seed_mask)
    if n == 0 or depth <= 0:
        return seeds, n
    flat = seeds.ravel()
    where = np.flatnonzero(flat)
    inverse = flat[where] - 1
    sizes = np.bincount(inverse, minlength=n)
    # two cores each ``depth`` above a waist: a seed smaller than two discs of radius
    # 2 * depth + smoothing cannot hold them
    big = sizes >= 2 * math.pi * (2 * depth + smoothing) ** 2
    if not big.any():
        return seeds, n
    y, x = np.divmod(where, seeds.shape[1])
    convex = convex_areas(inverse, y, x, n)
    candidates = np.flatnonzero(big & (sizes < solidity * convex)) + 1
    if candidates.size == 0:
        return seeds, n
    boxes = ndi.find_objects(seeds)
    pad = math.ceil(3 * smoothing) + 1
    for i in candidates:
        box = boxes[i - 1]
        inside = seeds[box] == i
        region = np.pad(inside, pad)
        dist = ndi.gaussian_filter(ndi.distance_transform_edt(region), smoothing)
        peaks = (dist == ndi.maximum_filter(dist, size=3)) & region
        if ndi.label(peaks)[1] < 2:  # one local maximum: one core whatever the depth (fast path)
            continue
        cores, k = ndi.label(h_maxima(dist, depth).astype(bool) & region)
        if k < 2:
            continue
        parts = watershed(-dist, cores, mask=region)[pad:-pad, pad:-pad][inside]
        # the first part keeps the seed's id, the others take new ones after n
        ids = np.concatenate([[0, i], n + np.arange(1, k)])
        seeds[box][inside] = ids[parts]
        n += k - 1
    return seeds, n


def instances_from_probabilities(
    interior: np.ndarray,
    foreground: np.ndarray,
    params: PostprocessParams = PostprocessParams(),
    seed_erosion: float = 0.0,
    anisotropy: float = 1.0,
) -> np.ndarray:
    """Interior and foreground probabilities (same 2D/3D shape) -> instance labels.

    ``seed_erosion``/``anisotropy``: see the module docstring (volumes only; 0 = off).
    Returns uint16 (uint32 when there are more than 65534 objects), 0 = background.
    """
    interior = np.asarray(interior, dtype=np.float32)
    foreground = np.asarray(foreground, dtype=np.float32)
    if interior.shape != foreground.shape:
        raise ValueError("interior and foreground maps must have the same shape")
    mask = foreground > params.threshold
    if not mask.any():
        return np.zeros(interior.shape, np.uint16)
    comps, n_comps = ndi.label(mask)
    seed_mask = erode_seeds(interior > params.seed_threshold, seed_erosion, anisotropy)
    if interior.ndim == 2 and params.split_depth > 0:
        seeds, n = split_at_necks(seed_mask & mask, float(params.split_depth))
    else:
        seeds, n = ndi.label(seed_mask & mask)
    # no interiors at all (e.g. tiny objects): the foreground components are the objects;
    # seeds below min_seed_size are dropped and their components count as seedless
    return _objects(comps, n_comps, seeds if n else None, n, interior, params)


def instances_from_classes(
    probs: np.ndarray,
    params: PostprocessParams = PostprocessParams(),
    seed_erosion: float = 0.0,
    anisotropy: float = 1.0,
) -> np.ndarray:
    """Softmax probabilities (3, ...) in the order background, interior, boundary -> labels."""
    probs = np.asarray(probs)
    if probs.shape[0] != 3:
        raise ValueError(f"expected 3 class probabilities, got {probs.shape[0]}")
    interior = probs[1]
    foreground = probs[1] + probs[2]
    return instances_from_probabilities(interior, foreground, params, seed_erosion, anisotropy)


def instances(
    probs: np.ndarray, params: PostprocessParams, volume: dict[str, float] | None = None
) -> np.ndarray:
    """Labels from (K, ...) probabilities of a 2- or 3-class net.

    The one entry point for every caller that turns a net's output into objects: the
    engine, Fine-tune's preview and the object-size probes.

    ``volume``: :func:`napari_unet.engine.object_scale.volume_options`, used for a z-stack.
    """
    opts = volume if (volume is not None and probs.ndim == 4 and probs.shape[1] > 1) else {}
    if probs.shape[0] == 3:
        return instances_from_classes(probs, params, **opts)
    if probs.shape[0] == 2:  # background / foreground: objects are connected components
        return instances_from_probabilities(probs[1], probs[1], params, **opts)
    raise ValueError(f"cannot turn {probs.shape[0]} output channels into instances (need 2 or 3)")
