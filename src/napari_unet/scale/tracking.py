"""Tracking over time in the chunked engine: an object keeps its id from frame to frame.

With ``track=True`` each frame's objects take the id of the previous frame's object they
overlap with IoU > 0.5, else a new id, so ids stay unique and consistent over time. The
overlaps are counted block by block, so a frame never has to fit in memory.
"""

from __future__ import annotations

import numpy as np

from napari_unet.scale.blocks import Block, LabelsOut
from napari_unet.scale.stitching import relabel

__all__ = ["track_frame"]


def track_frame(store: LabelsOut, t: int, blocks: list[Block], next_id: int) -> int:
    """Give frame ``t``'s objects the id of the frame ``t - 1`` object they overlap with IoU > 0.5.

    Objects without such a partner get new ids from ``next_id``; returns the next free id.
    """
    pairs: dict[tuple[int, int], int] = {}
    size_cur: dict[int, int] = {}
    size_prev: dict[int, int] = {}
    for b in blocks:
        cur = store.read(t, b.core).ravel().astype(np.int64)
        prv = store.read(t - 1, b.core).ravel().astype(np.int64)
        for ids, sizes in ((cur, size_cur), (prv, size_prev)):
            u, c = np.unique(ids[ids > 0], return_counts=True)
            for i, n in zip(u.tolist(), c.tolist(), strict=True):
                sizes[i] = sizes.get(i, 0) + n
        both = (cur > 0) & (prv > 0)
        keys, c = np.unique(np.stack([cur[both], prv[both]], 1), axis=0, return_counts=True)
        for (a, p), n in zip(keys.tolist(), c.tolist(), strict=True):
            pairs[(a, p)] = pairs.get((a, p), 0) + n
    mapping: dict[int, int] = {}
    for (a, p), n in pairs.items():
        if n / (size_cur[a] + size_prev[p] - n) > 0.5:
            mapping[a] = p
    for a in sorted(size_cur):
        if a not in mapping:
            mapping[a] = next_id
            next_id += 1
    top = max(size_cur, default=0)
    lut = np.zeros(top + 1, np.int64)
    for a, v in mapping.items():
        lut[a] = v
    if next_id - 1 > np.iinfo(np.dtype(store.out.dtype)).max:
        raise OverflowError("more tracked objects than the labels' dtype holds; use uint32 or uint64")
    relabel(store, t, blocks, lut)
    return next_id
