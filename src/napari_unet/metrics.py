"""Instance segmentation metrics: object matching at an IoU threshold (2D or 3D)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Matching:
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
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
        from scipy.optimize import linear_sum_assignment

        r, c = linear_sum_assignment(-iou)
        tp = int((iou[r, c] > threshold).sum())
    return Matching(tp, np_ - tp, nt - tp)


def f1_score(truth: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> float:
    return match(truth, pred, threshold).f1
