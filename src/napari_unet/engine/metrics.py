"""Instance segmentation metrics: object matching at an IoU threshold (2D or 3D)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class Matching:
    """True positives, false positives and false negatives of a matching, and the scores from them."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        """Precision, tp / (tp + fp); 1 when nothing was predicted."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        """Recall, tp / (tp + fn); 1 when there was nothing to find."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        """F1 score, 2 tp / (2 tp + fp + fn); 1 when both are empty."""
        denom = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denom if denom else 1.0

    def __add__(self, other: Matching) -> Matching:
        return Matching(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)


def iou_matrix(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU between every true object (rows) and predicted object (cols), ids relabelled 1..n."""
    truth = np.asarray(truth).ravel()
    pred = np.asarray(pred).ravel()
    if truth.shape != pred.shape:
        raise ValueError(f"shapes differ: {truth.shape} vs {pred.shape}")
    _, t = np.unique(truth, return_inverse=True)
    _, p = np.unique(pred, return_inverse=True)
    t = t.reshape(-1) + (0 if truth.min(initial=0) == 0 else 1)
    p = p.reshape(-1) + (0 if pred.min(initial=0) == 0 else 1)
    nt, np_ = int(t.max(initial=0)) + 1, int(p.max(initial=0)) + 1
    overlap = np.bincount(t * np_ + p, minlength=nt * np_).reshape(nt, np_).astype(np.float64)
    area_t = overlap.sum(1, keepdims=True)
    area_p = overlap.sum(0, keepdims=True)
    union = area_t + area_p - overlap
    iou = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
    return iou[1:, 1:]


def match(truth: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> Matching:
    """Count matched objects; at IoU > 0.5 each object can match at most one other."""
    iou = iou_matrix(truth, pred)
    nt, np_ = iou.shape
    if threshold >= 0.5:
        tp = int((iou > threshold).sum())
    else:
        r, c = linear_sum_assignment(-iou)
        tp = int((iou[r, c] > threshold).sum())
    return Matching(tp, np_ - tp, nt - tp)


def f1_score(truth: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> float:
    """F1 of the object matching of ``pred`` to ``truth`` at IoU ``threshold``."""
    return match(truth, pred, threshold).f1


def _distinct_ids(labels: Any) -> int:
    """Distinct non-zero ids of one array.

    Numpy in one bincount pass (a sort only for ids above the pixel count), dask one chunk
    at a time (it may not fit in memory).
    """
    if isinstance(labels, np.ndarray):
        flat = labels.ravel()
        if flat.size == 0 or int(flat.max()) == 0:
            return 0
        if int(flat.max()) <= flat.size:
            return int(np.count_nonzero(np.bincount(flat.astype(np.int64, copy=False))[1:]))
        return int(np.count_nonzero(np.unique(flat)))
    ids: set[int] = set()
    for block in labels.to_delayed().ravel():
        ids.update(int(v) for v in np.unique(block.compute(scheduler="synchronous")))
    ids.discard(0)
    return len(ids)


def count_objects(labels: Any, axes: str | None = None) -> int:
    """Objects in instance labels: distinct non-zero ids.

    Counted per time point when ``axes`` (the labels' own, no C) has a T axis, since frames
    segmented independently restart their ids. ``labels``: numpy, or a zarr / dask array
    read chunk by chunk.
    """
    if not hasattr(labels, "chunks"):
        labels = np.asarray(labels)
    elif not hasattr(labels, "to_delayed"):  # zarr: through dask, so a frame is never read whole
        labels = da.from_array(labels, chunks=labels.chunks)
    if axes is None or "T" not in axes:
        return _distinct_ids(labels)
    t = axes.index("T")
    frame = [slice(None)] * len(labels.shape)
    total = 0
    for i in range(int(labels.shape[t])):
        frame[t] = i
        total += _distinct_ids(labels[tuple(frame)])
    return total
