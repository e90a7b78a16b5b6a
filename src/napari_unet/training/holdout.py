"""Hold part of the annotation back, and score a model on it: the before/after of a fine-tune.

The held-back part is a band of whole objects the net never sees as labels; it is scored as
prediction would run the net (eval mode, tiled probabilities, the card's post-processing), by the
loss that training minimises and by object F1 at IoU 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from napari_unet.common.generators import drain
from napari_unet.engine.config import PredictConfig
from napari_unet.engine.inference import iter_probabilities
from napari_unet.engine.metrics import Matching, match
from napari_unet.engine.postprocess import instances_from_classes
from napari_unet.engine.setup import default_params
from napari_unet.models.model_file import Model
from napari_unet.training.loop import TrainConfig
from napari_unet.training.sample import Sample
from napari_unet.training.targets import encode_classes, weight_map

__all__ = [
    "HOLDOUT_CONTEXT",
    "MAX_HOLDOUT_PIXELS",
    "MIN_HOLDOUT_PIXELS",
    "HeldOut",
    "HeldOutScore",
    "evaluate_heldout",
    "split_holdout",
]

MIN_HOLDOUT_PIXELS = 4096  # a held-out part smaller than this (64x64) gives a meaningless score
MAX_HOLDOUT_PIXELS = 512 * 512  # bounds the cost of one held-out evaluation
HOLDOUT_CONTEXT = 32  # px of image around the held-out part the net sees when scoring it


@dataclass(frozen=True)
class HeldOutScore:
    """Held-out weighted cross-entropy (what is minimised) and object F1 at IoU 0.5."""

    loss: float
    f1: float
    objects: int  # true objects in the held-out part


@dataclass
class HeldOut:
    """A held-back part of one sample, with ``HOLDOUT_CONTEXT`` px of image around it."""

    image: np.ndarray  # (C, h, w) normalised
    labels: np.ndarray  # (h, w)
    mask: np.ndarray  # (h, w) bool: the held-out pixels (the context does not count)


def _hold_back(s: Sample, fraction: float, max_pixels: int) -> tuple[Sample, HeldOut | None]:
    """Split one sample: a band at its end holding ~``fraction`` of its annotated pixels.

    A band (not random pixels) so the held-out objects are whole and unseen as labels; along
    the longer side so the band is thick enough to hold objects.
    """
    counted = np.ones(s.labels.shape, bool) if s.mask is None else s.mask
    transpose = s.labels.shape[1] > s.labels.shape[0]
    cnt = counted.T if transpose else counted
    n, m = cnt.shape
    cum = np.cumsum(cnt.sum(axis=1))
    if cum[-1] == 0:
        return s, None
    cut = min(int(np.searchsorted(cum, (1 - fraction) * cum[-1], side="left")) + 1, n - 1)
    cols = np.flatnonzero(cnt[cut:].any(axis=0))
    if cut <= 0 or not len(cols):
        return s, None
    width = max(64, max_pixels // (n - cut))
    c0, c1 = int(cols[0]), min(m, int(cols[0]) + width)
    band = np.zeros((n, m), bool)
    band[cut:, c0:c1] = True
    held = cnt & band
    rest = cnt & ~band
    if held.sum() < 256 or not rest.any():
        return s, None
    r0, q0, q1 = max(0, cut - HOLDOUT_CONTEXT), max(0, c0 - HOLDOUT_CONTEXT), min(m, c1 + HOLDOUT_CONTEXT)
    if transpose:
        held, rest = held.T, rest.T
        window = (slice(q0, q1), slice(r0, None))
    else:
        window = (slice(r0, None), slice(q0, q1))
    part = HeldOut(np.ascontiguousarray(s.image[(slice(None), *window)]), s.labels[window], held[window])
    train = Sample(s.image, s.labels, rest, weight=s.weight, source=s.source, plane=s.plane)
    return train, part


def split_holdout(
    samples: Sequence[Sample], fraction: float = 0.2, min_pixels: int = MIN_HOLDOUT_PIXELS
) -> tuple[list[Sample], list[HeldOut], str]:
    """(training samples, held-out parts, a one-line note saying what was held back)."""
    total = sum(s.annotated_pixels for s in samples)
    if fraction <= 0:
        return list(samples), [], "nothing held back (holdout 0): no before/after score"
    if total * fraction < min_pixels:
        need = math.ceil(min_pixels / fraction)
        return (
            list(samples),
            [],
            f"too little annotation to hold a part back ({total} px annotated, need {need}): "
            "no before/after score",
        )
    per_sample = max(MIN_HOLDOUT_PIXELS, MAX_HOLDOUT_PIXELS // len(samples))
    train, held = [], []
    for s in samples:
        t, h = _hold_back(s, fraction, per_sample)
        train.append(t)
        if h is not None:
            held.append(h)
    n_held = int(sum(h.mask.sum() for h in held))
    if n_held < min_pixels:
        return list(samples), [], f"too little annotation to hold a part back ({n_held} px): no score"
    return train, held, f"{n_held} of {total} annotated px held back to score the model"


def evaluate_heldout(
    model: Model, held: Sequence[HeldOut], cfg: TrainConfig, device: torch.device
) -> HeldOutScore:
    """Score ``model`` on the held-out parts as prediction would run it (eval mode, fused BN)."""
    pcfg = PredictConfig(device=device.type, tile=1024, overlap=32, amp=cfg.amp)
    params = default_params(model)
    loss_sum, weight_sum = 0.0, 0.0
    matched = Matching(0, 0, 0)
    objects = 0
    for part in held:
        probs = drain(iter_probabilities(model, part.image, pcfg))
        cls = encode_classes(part.labels).astype(np.intp)
        w = weight_map(part.labels, cfg.boundary_weight, cfg.touch_weight, classes=cls) * part.mask
        p = np.take_along_axis(probs, cls[None], 0)[0]
        loss_sum += float((-np.log(np.clip(p, 1e-7, 1.0)) * w).sum())
        weight_sum += float(w.sum())
        truth = np.where(part.mask, part.labels, 0)
        pred = np.where(part.mask, instances_from_classes(probs, params), 0)
        matched = matched + match(truth, pred, 0.5)
        objects += int(np.count_nonzero(np.unique(truth)))
    return HeldOutScore(loss_sum / max(weight_sum, 1e-9), matched.f1, objects)
