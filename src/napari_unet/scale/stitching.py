"""Stitching blocks into one id per object: overlap links and a union-find over provisional ids.

Blocks are labelled one by one in raster order; a block's halo overlaps the cores already
written, where its labels are compared with the written ids (:func:`stitch_block`): a label
whose overlap has IoU > 0.5 with a written object takes its id, and written objects lying
mostly inside one label (two arms of one object that meet only in this block) are joined
in a union-find (:class:`Joins`). Other labels get new ids. When objects were joined, a
second pass rewrites the frame through :func:`compact_lut` with :func:`relabel`.
"""

from __future__ import annotations

import bisect
import itertools

import numpy as np

from napari_unet.scale.blocks import Block, LabelsOut

__all__ = ["Joins", "compact_lut", "relabel", "stitch_block"]


class Joins:
    """Union-find over provisional ids; only ids that were joined take memory."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, i: int) -> int:
        """The root id of ``i``."""
        root = i
        while root in self.parent:
            root = self.parent[root]
        while i != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, ids: list[int]) -> int:
        """Join ``ids`` under the smallest root; returns it."""
        roots = sorted({self.find(i) for i in ids})
        for r in roots[1:]:
            self.parent[r] = roots[0]
        return roots[0]

    def roots(self, ids: np.ndarray) -> np.ndarray:
        """``ids`` mapped to their roots (unchanged when nothing was joined)."""
        if not self.parent:
            return ids
        uniq, inv = np.unique(ids, return_inverse=True)
        return np.array([self.find(int(i)) for i in uniq], ids.dtype)[inv].reshape(ids.shape)


def _processed_mask(
    blocks: list[Block], grid: tuple[list[int], list[int], list[int]], b: Block, k: int
) -> np.ndarray:
    """Where the extended block ``b`` (the ``k``-th) overlaps cores already written."""
    mask = np.zeros(b.ext_shape, bool)
    ranges = []
    for d in range(3):
        starts = grid[d]
        lo = max(bisect.bisect_right(starts, b.ext[d].start) - 1, 0)
        hi = bisect.bisect_left(starts, b.ext[d].stop)
        ranges.append(range(lo, hi))
    dims = tuple(len(g) for g in grid)
    for idx in itertools.product(*ranges):
        j = (idx[0] * dims[1] + idx[1]) * dims[2] + idx[2]
        if j >= k:
            continue
        other = blocks[j].core
        box = tuple(
            slice(max(o.start, e.start) - e.start, min(o.stop, e.stop) - e.start)
            for o, e in zip(other, b.ext, strict=True)
        )
        mask[box] = True
    return mask


def _link(lab: np.ndarray, prev: np.ndarray, in_core: np.ndarray, joins: Joins) -> dict[int, int]:
    """Local label -> written id, for the labels of ``lab`` that continue an object in ``prev``.

    ``lab`` and ``prev`` are the block's labels and the written ids (roots) in the overlap,
    flattened. IoU > 0.5 links one pair; written objects mostly inside one label (> half of
    their overlap part, and > 1/5 of the label's) are all joined to it.
    """
    n_l = int(lab.max(initial=0)) + 1
    size_l = np.bincount(lab, minlength=n_l)
    g_ids, g_inv = np.unique(prev, return_inverse=True)
    size_g = np.bincount(g_inv.ravel(), minlength=g_ids.size)
    both = (lab > 0) & (prev > 0)
    keys, ov = np.unique(lab[both].astype(np.int64) * g_ids.size + g_inv.ravel()[both], return_counts=True)
    links: dict[int, int] = {}
    for l_id, group in itertools.groupby(
        zip(keys // g_ids.size, keys % g_ids.size, ov, strict=True), lambda p: p[0]
    ):
        if not in_core[l_id]:
            continue
        primary, partners, covered = None, [], 0
        for _, gi, o in group:
            sl, sg = int(size_l[l_id]), int(size_g[gi])
            if o / (sl + sg - o) > 0.5:
                primary = int(g_ids[gi])
            if o > 0.5 * sg and o > 0.2 * sl:
                partners.append(int(g_ids[gi]))
                covered += int(o)
        if primary is None and covered <= 0.5 * size_l[l_id]:
            continue
        linked = partners + ([primary] if primary is not None else [])
        links[int(l_id)] = joins.union(linked)
    return links


def stitch_block(
    store: LabelsOut,
    t: int,
    blocks: list[Block],
    grid_starts: tuple[list[int], list[int], list[int]],
    b: Block,
    k: int,
    lab: np.ndarray,
    joins: Joins,
    next_id: int,
    max_id: int,
) -> int:
    """Write the core of block ``b`` with ids that continue the objects already written.

    Returns the next free provisional id; raises OverflowError past ``max_id``.
    """
    core = lab[b.inner]
    n_l = int(lab.max(initial=0)) + 1
    in_core = np.bincount(core.ravel(), minlength=n_l) > 0  # O(n); np.unique sorts
    in_core[0] = False
    links: dict[int, int] = {}
    seen = _processed_mask(blocks, grid_starts, b, k)
    if seen.any() and in_core.any():
        prev = store.read(t, b.ext)[seen].astype(np.int64)
        links = _link(lab[seen].astype(np.int64), joins.roots(prev), in_core, joins)
    lut = np.zeros(n_l, np.int64)
    fresh = np.flatnonzero(in_core)
    fresh = fresh[~np.isin(fresh, np.fromiter(links, np.int64, len(links)))]
    lut[fresh] = np.arange(next_id, next_id + fresh.size)
    for l_id, g in links.items():
        lut[l_id] = g
    next_id += fresh.size
    if next_id - 1 > max_id:
        raise OverflowError(f"more objects than the labels' dtype holds ({max_id}); use uint32 or uint64")
    store.write(t, b.core, lut[core].astype(store.out.dtype, copy=False))
    return next_id


def compact_lut(joins: Joins, next_id: int) -> np.ndarray:
    """Provisional id -> final id: joined ids to their root, roots renumbered 1..n."""
    roots = np.arange(next_id, dtype=np.int64)
    for i in list(joins.parent):
        roots[i] = joins.find(i)
    used = np.unique(roots[1:])
    lut = np.zeros(next_id, np.int64)
    lut[1:] = np.searchsorted(used, roots[1:]) + 1
    return lut


def relabel(store: LabelsOut, t: int, blocks: list[Block], lut: np.ndarray) -> None:
    """Rewrite frame ``t`` block by block through the lookup table ``lut``."""
    for b in blocks:
        ids = store.read(t, b.core)
        store.write(t, b.core, lut[ids].astype(ids.dtype, copy=False))
