"""The proofreading tools as pure functions: labels + the net's probabilities in, an Edit out.

Each tool answers one kind of error the network makes, with the evidence the network already
computed (background / interior / boundary probabilities):

- :func:`add_object`: a missed object. The model usually saw it, too faintly to pass the
  threshold; a click lowers the threshold *locally*, step by step until the region has a
  plausible size, and takes the supported region under the click, grown from the click by a
  watershed on the interior probability in which other interior seeds compete, so a missed
  neighbour is not eaten. Existing objects compete from their interior seeds, which they keep:
  the rim of a neighbour that bled into the missed object (Segment's watershed grew it there
  because it saw no rival seed) goes back to it, up to the interior valley between the two.
  Bounded: a region larger than a few typical objects is refused.
- :func:`split_object`: a merge. A compact seeded watershed inside the object from the user's
  points over the boundary probability minus the interior one: seams the net saw are followed,
  and where it saw none the parts stay compact around their points.
- :func:`merge_objects`: a split. The ids become one (the smallest), and the thin background
  seam between the pieces (a few px) is closed in each plane.
- :func:`delete_object`: a false object, removed wherever its id is (in 3D: through z).

The functions never change their inputs; 2D tools take one plane, merge and delete a frame's
whole volume (so a 3D object keeps one id through z).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from napari_unet.engine.object_size import object_areas
from napari_unet.engine.postprocess import PostprocessParams
from napari_unet.proofread.edits import Edit, ProofreadError

__all__ = [
    "ACCEPT_AREA",
    "ADD_THRESHOLD_FACTORS",
    "MAX_AREA_DIAMETERS",
    "PlaneEvidence",
    "add_object",
    "bounding_box",
    "delete_object",
    "merge_objects",
    "plane_point",
    "split_object",
]

# A missed object is one the net saw below its cut: add lowers the cut (x the model's thresholds)
# in these steps until the region has a plausible size (ACCEPT_AREA of a typical object's area).
# Chosen on the DSB held-out experiments (benchmarks/bench_proofread.py): one fixed 0.6 left 15 of 58
# missed nuclei refused, the steps 6, at the same median IoU. The model's own cut comes first: an
# object it supports there (one deleted by mistake, a false negative of the seeds) is taken as
# Segment would take it, not bled into its surroundings by a lowered cut (re-adding Segment's
# objects: IoU >= 0.8 in 56 % instead of 52 %; missed nuclei unchanged).
ADD_THRESHOLD_FACTORS = (1.0, 0.6, 0.4, 0.25)
ACCEPT_AREA = 0.35
# The click may miss the object's centre a little: look this fraction of a diameter around it.
CLICK_TOLERANCE = 0.2
# The window searched around a click, in typical diameters each side (objects up to ~4x typical).
WINDOW_DIAMETERS = 2.5
# An added object is at most the area of a disc this many typical diameters across, or as large as
# the largest object already in the plane, times LARGEST_FACTOR: cells and EM profiles span 100x
# in area, and a typical-diameter bound alone refused every large one (4 of 23 EM profiles
# re-added at their centres; benchmarks/bench_proofread.py --dev em).
MAX_AREA_DIAMETERS = 2.5
LARGEST_FACTOR = 1.25
# Split floods from the points with a compact watershed (compactness = SPLIT_COMPACTNESS / diameter,
# so a flood pays about this much probability per typical diameter travelled): a plain watershed
# lets one point's flood take a neighbour whose point sits on higher ground (median IoU of the
# parts 0.65 -> 0.73 on 76 merged pairs of the DSB held-out experiments, 0.3 the best of 0.1-3).
SPLIT_COMPACTNESS = 0.3
# An add may take the rim of a neighbour that bled into the clicked object (never its interior
# seeds), at most this fraction of the neighbour: more would be a merge to split, not a rim.
MAX_TAKEN = 0.5
# Merge closes background seams up to this many pixels wide between the merged pieces.
MERGE_CLOSE_PX = 2


@dataclass(frozen=True)
class PlaneEvidence:
    """The three maps the tools read, (H, W) each: interior, foreground and boundary probability."""

    interior: np.ndarray
    foreground: np.ndarray
    boundary: np.ndarray

    @classmethod
    def from_probabilities(cls, probs: np.ndarray) -> PlaneEvidence:
        """From (K, H, W) softmax outputs: 3 classes (bg/interior/boundary) or 2 (bg/foreground)."""
        probs = np.asarray(probs, np.float32)
        if probs.ndim != 3 or probs.shape[0] not in (2, 3):
            raise ProofreadError(f"expected (2 or 3, H, W) probabilities, got shape {probs.shape}")
        if probs.shape[0] == 3:
            return cls(probs[1], probs[1] + probs[2], probs[2])
        return cls(probs[1], probs[1], np.zeros_like(probs[1]))

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W)."""
        return self.interior.shape  # type: ignore[return-value]


def plane_point(labels: np.ndarray, point: Sequence[float]) -> tuple[int, int]:
    """(y, x) rounded and checked against the plane, or a one-line refusal."""
    y, x = (round(float(c)) for c in point)
    h, w = labels.shape
    if not (0 <= y < h and 0 <= x < w):
        raise ProofreadError(f"the point ({y}, {x}) is outside the image ({h} x {w} px)")
    return y, x


def _window(shape: tuple[int, ...], center: Sequence[int], radius: int) -> tuple[slice, ...]:
    return tuple(
        slice(max(0, c - radius), min(n, c + radius + 1)) for c, n in zip(center, shape, strict=True)
    )


def bounding_box(mask: np.ndarray, pad: int = 0) -> tuple[slice, ...] | None:
    """The smallest box (slices) holding every true pixel of ``mask``, grown by ``pad``; None if empty."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other)) if other else np.flatnonzero(mask)
        if hit.size == 0:
            return None
        box.append(slice(max(0, int(hit[0]) - pad), min(mask.shape[axis], int(hit[-1]) + 1 + pad)))
    return tuple(box)


def _cores(
    lab: np.ndarray, interior: np.ndarray, seed_threshold: float, protected: frozenset[int]
) -> np.ndarray:
    """The pixels existing objects keep whatever an add claims: their interior seeds.

    Where the model is sure of an object's interior (the seeds Segment grew it from), it stays
    that object's; its rim, grown over weaker foreground, may belong to a missed neighbour it bled
    into. Objects with no such pixel in the window (painted where the model saw little) and
    ``protected`` ones (made or corrected by the user) are kept whole.
    """
    objects = lab > 0
    core = objects & (interior >= seed_threshold)
    ids = np.unique(lab[objects])
    keep_whole = ids[~np.isin(ids, np.unique(lab[core]))]
    if protected:
        keep_whole = np.union1d(keep_whole, np.fromiter(protected, np.int64))
    if keep_whole.size:
        core |= np.isin(lab, keep_whole) & objects
    return core


def _grow_from_click(
    fg: np.ndarray,
    interior: np.ndarray,
    lab: np.ndarray,
    core: np.ndarray,
    click: tuple[int, int],
    low: float,
    seed_low: float,
) -> np.ndarray:
    """The region a click claims at one threshold level (``fg >= low`` and the existing objects).

    Grown from the click by a watershed on the interior probability in which the other interior
    seeds of the same supported component compete, and the existing objects from their ``core``:
    a missed neighbour stays out, and an object that bled into the clicked one gives its rim back
    up to the interior valley between the two, where Segment would have cut had it seen both.
    """
    cy, cx = click
    free = lab == 0
    support = ((fg >= low) & free) | (lab > 0)
    if not support[cy, cx]:
        return np.zeros(fg.shape, bool)
    comps, _ = ndi.label(support)
    comp = comps == comps[cy, cx]
    seeds = (interior >= seed_low) & comp & free
    markers = np.zeros(fg.shape, np.int32)
    markers[seeds | (core & comp)] = 2  # other seeds and the objects' cores: whoever, not the click
    own, _ = ndi.label(seeds)
    if own[cy, cx]:
        markers[own == own[cy, cx]] = 1
    else:  # the click is its own seed
        near = (slice(max(0, cy - 1), cy + 2), slice(max(0, cx - 1), cx + 2))
        markers[near][comp[near] & free[near]] = 1
    claimed = watershed(-interior, markers, mask=comp) == 1
    return ndi.binary_fill_holes(claimed) & (free | claimed)


def _taken_too_much(labels: np.ndarray, lab: np.ndarray, region: np.ndarray) -> list[int]:
    """The existing objects ``region`` would take more than ``MAX_TAKEN`` of (whole-plane areas)."""
    taken = lab[region & (lab > 0)]
    if taken.size == 0:
        return []
    ids, counts = np.unique(taken, return_counts=True)
    return [int(i) for i, c in zip(ids, counts, strict=True) if c > MAX_TAKEN * np.count_nonzero(labels == i)]


def _runs_on(region: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...]) -> bool:
    """Whether ``region`` reaches a side of its window that is not the image's edge."""
    return bool(
        (region[0].any() and box[0].start > 0)
        or (region[-1].any() and box[0].stop < shape[0])
        or (region[:, 0].any() and box[1].start > 0)
        or (region[:, -1].any() and box[1].stop < shape[1])
    )


def add_object(
    labels: np.ndarray,
    evidence: PlaneEvidence,
    point: Sequence[float],
    new_id: int,
    diameter: float,
    params: PostprocessParams = PostprocessParams(),
    largest_area: float | None = None,
    protected: frozenset[int] = frozenset(),
) -> Edit:
    """A new object ``new_id`` where the probabilities support one around ``point`` (a 2D plane).

    The foreground cut is lowered step by step (``ADD_THRESHOLD_FACTORS`` x the model's) until the
    region the click claims has a plausible size (``ACCEPT_AREA`` of a typical object or more):
    a missed object is one the net saw below its cut, some barely. Refuses
    (:class:`ProofreadError`) on an existing object, where the model sees background, and where
    the supported region is not bounded (larger than both a disc ``MAX_AREA_DIAMETERS`` typical
    diameters across and ``LARGEST_FACTOR`` x the plane's largest object) or too small to be an
    object. ``largest_area``: that object's pixels when the caller has counted them (None: counted
    here). Existing objects keep their interior seeds; the rim of one that bled into the new
    object goes to it (at most ``MAX_TAKEN`` of the neighbour), except for ``protected`` ids.
    """
    y, x = plane_point(labels, point)
    if labels[y, x] != 0:
        raise ProofreadError(
            f"object {int(labels[y, x])} is already at ({y}, {x}): delete or split it instead"
        )
    d = max(float(diameter), 4.0)
    if largest_area is None:
        largest_area = float(object_areas(labels).max(initial=0))
    max_area = max(math.pi / 4 * (MAX_AREA_DIAMETERS * d) ** 2, LARGEST_FACTOR * largest_area)
    # the window holds a disc of max_area around the click (WINDOW_DIAMETERS typical diameters at least)
    reach = max(WINDOW_DIAMETERS * d, math.sqrt(max_area / math.pi) * 2)
    box = _window(labels.shape, (y, x), max(16, math.ceil(reach)))
    lab = labels[box]
    fg = evidence.foreground[box]
    interior = evidence.interior[box]
    free = lab == 0
    cy, cx = y - box[0].start, x - box[1].start
    lowest = ADD_THRESHOLD_FACTORS[-1] * params.threshold
    # the click may sit a little off the object: take the best-supported free pixel near it
    r = max(1, round(CLICK_TOLERANCE * d))
    near = _window(lab.shape, (cy, cx), r)
    yy, xx = np.ogrid[near[0], near[1]]
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    score = np.where(disc & free[near], fg[near], -1.0)
    iy, ix = np.unravel_index(int(np.argmax(score)), score.shape)
    if score[iy, ix] < lowest:
        raise ProofreadError(
            f"no object here: the model's foreground probability at ({y}, {x}) is "
            f"{float(fg[cy, cx]):.2f} (an added object needs {lowest:.2f})"
        )
    click = (int(iy + near[0].start), int(ix + near[1].start))
    typical = math.pi / 4 * d**2
    min_area = max(4, params.min_size // 2)
    best: np.ndarray | None = None
    spread = 0
    core = _cores(lab, interior, params.seed_threshold, protected)
    for factor in ADD_THRESHOLD_FACTORS:
        levels = (factor * params.threshold, factor * params.seed_threshold)
        region = _grow_from_click(fg, interior, lab, core, click, *levels)
        for attempt in range(3):
            greedy = _taken_too_much(labels, lab, region)
            if not greedy:
                break
            # those neighbours stay whole (a region eating half of one is not its rim)
            core = core | (lab > 0) if attempt == 2 else core | np.isin(lab, greedy)
            region = _grow_from_click(fg, interior, lab, core, click, *levels)
        area = int(region.sum())
        if area > max_area or _runs_on(region, box, labels.shape):
            spread = max(spread, area)
            break  # lower cuts only spread further
        if area >= min_area:
            best = region
            if area >= ACCEPT_AREA * typical:
                break
    if best is None:
        if spread:
            raise ProofreadError(
                f"no bounded object at ({y}, {x}): the supported region spreads over {spread} px or more "
                f"(objects here, ~{d:.0f} px across, are at most {max_area:.0f} px); paint it instead"
            )
        raise ProofreadError(
            f"too little support at ({y}, {x}) for an object of {min_area} px; paint it instead"
        )
    area = int(best.sum())
    sub = bounding_box(best)
    assert sub is not None  # area >= 4
    before = lab[sub]
    after = before.copy()
    after[best[sub]] = new_id
    region_box = tuple(slice(b.start + s.start, b.start + s.stop) for b, s in zip(box, sub, strict=True))
    taken_px = best[sub] & (before > 0)
    trimmed = np.unique(before[taken_px]).tolist()
    message = f"added object {new_id} ({area} px"
    if trimmed:
        taken = int(np.count_nonzero(taken_px))
        message += f", {taken} of them from object{'s' * (len(trimmed) > 1)} {', '.join(map(str, trimmed))}"
    ids = (int(new_id), *(int(i) for i in trimmed))
    return Edit(region_box, before.copy(), after, ids, message + ")")


def split_object(
    labels: np.ndarray,
    evidence: PlaneEvidence,
    points: Sequence[Sequence[float]],
    first_new_id: int,
    diameter: float,
) -> Edit:
    """The object under ``points`` (2 or more, one object, a 2D plane) cut into one part per point.

    The first point's part keeps the id; the others get ``first_new_id``, ``first_new_id + 1``...
    """
    if len(points) < 2:
        raise ProofreadError("split needs two or more points inside one object")
    pts = [plane_point(labels, p) for p in points]
    if len(set(pts)) < len(pts):
        raise ProofreadError("two split points fall on the same pixel: place them apart")
    ids = {int(labels[p]) for p in pts}
    if 0 in ids:
        bg = next(p for p in pts if labels[p] == 0)
        raise ProofreadError(f"the point {bg} is on background: split points must lie inside the object")
    if len(ids) > 1:
        raise ProofreadError(
            f"the points lie on different objects ({', '.join(map(str, sorted(ids)))}): "
            "split works inside one object"
        )
    (oid,) = ids
    box = bounding_box(labels == oid, pad=1)
    assert box is not None
    obj = labels[box] == oid
    local = [(p[0] - box[0].start, p[1] - box[1].start) for p in pts]
    markers = np.zeros(obj.shape, np.int32)
    for i, (py, px) in enumerate(local, start=1):
        markers[py, px] = i
    landscape = evidence.boundary[box] - evidence.interior[box]
    parts = watershed(landscape, markers, mask=obj, compactness=SPLIT_COMPACTNESS / max(float(diameter), 4.0))
    before = labels[box]
    after = before.copy()
    new_ids = [oid] + [first_new_id + i for i in range(len(pts) - 1)]
    sizes = []
    for i, nid in enumerate(new_ids, start=1):
        part = parts == i
        after[part] = nid
        sizes.append(int(part.sum()))
    return Edit(
        box,
        before.copy(),
        after,
        tuple(new_ids),
        f"split object {oid} into {len(pts)} ({', '.join(f'{s} px' for s in sizes)})",
    )


def merge_objects(volume: np.ndarray, ids: Sequence[int]) -> Edit:
    """Objects ``ids`` of ``volume`` (a plane or a frame's z-stack) made one, the smallest id kept.

    The background seam between the pieces (up to ``MERGE_CLOSE_PX`` wide) joins the object,
    plane by plane (never across z, where slices may be far apart).
    """
    uniq = sorted({int(i) for i in ids})
    if 0 in uniq:
        raise ProofreadError("a merge point is on background: click inside the objects to merge")
    if len(uniq) < 2:
        raise ProofreadError("merge needs two or more different objects")
    present = np.isin(volume, uniq)
    missing = sorted(set(uniq) - set(np.unique(volume[present]).tolist()))
    if missing:
        raise ProofreadError(f"no object {missing[0]} here to merge")
    box = bounding_box(present, pad=MERGE_CLOSE_PX)
    assert box is not None
    before = volume[box]
    target = uniq[0]
    after = before.copy()
    members = np.isin(before, uniq)
    after[members] = target
    structure = np.zeros((3,) * before.ndim, bool)  # close in y/x only: the middle z of a 3D one
    structure[(1,) * (before.ndim - 2)] = ndi.generate_binary_structure(2, 1)
    closed = ndi.binary_closing(members, structure=structure, iterations=MERGE_CLOSE_PX)
    after[closed & (before == 0)] = target
    return Edit(
        box, before.copy(), after, (target,), f"merged objects {', '.join(map(str, uniq))} into {target}"
    )


def delete_object(volume: np.ndarray, oid: int) -> Edit:
    """Object ``oid`` removed from ``volume`` (a plane or a frame's z-stack: 3D objects go whole)."""
    if oid == 0:
        raise ProofreadError("there is no object here to delete")
    mask = volume == oid
    box = bounding_box(mask)
    if box is None:
        raise ProofreadError(f"no object {oid} here to delete")
    before = volume[box]
    after = np.where(before == oid, 0, before).astype(before.dtype)
    return Edit(box, before.copy(), after, (int(oid),), f"deleted object {oid} ({int(mask.sum())} px)")
