"""Post-processing fitted to a fine-tuned model on the user's held-back annotation.

The instance step (foreground threshold, seed threshold, waist cutting) comes with the parent's
card, chosen for the parent's nuclei. A model fine-tuned on another kind of object can learn a good
foreground and still yield no objects when its interior probabilities stay under the parent's
seed threshold (large, low-contrast cells). The held-back part of the annotation is exactly a
validation set: the thresholds that give it the best object F1 are taken, but only when it holds
enough objects to say so and they beat the parent's thresholds by a clear margin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from napari_unet.common.generators import drain
from napari_unet.engine.config import PredictConfig
from napari_unet.engine.inference import iter_probabilities
from napari_unet.engine.metrics import Matching, match
from napari_unet.engine.postprocess import PostprocessParams, instances_from_classes
from napari_unet.engine.setup import default_params
from napari_unet.models.model_file import Model
from napari_unet.training.holdout import HeldOut
from napari_unet.training.loop import TrainConfig

__all__ = ["MIN_OBJECTS", "Calibration", "calibrate_postprocess"]

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
SEED_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
MIN_OBJECTS = 10  # fewer held-back objects say too little to move thresholds
MIN_GAIN = 0.02  # F1 the new thresholds must add over the parent's on the held-back part


@dataclass(frozen=True)
class Calibration:
    """The thresholds chosen and the held-back F1 with the parent's and with them."""

    params: PostprocessParams
    f1_parent: float
    f1_chosen: float
    objects: int
    adopted: bool


def calibrate_postprocess(
    model: Model, held: Sequence[HeldOut], cfg: TrainConfig, device: torch.device
) -> Calibration | None:
    """Best (threshold, seed threshold, split depth) on ``held``; None when nothing is held back."""
    if not held:
        return None
    pcfg = PredictConfig(device=device.type, tile=1024, overlap=32, amp=cfg.amp)
    parts = []
    objects = 0
    for part in held:
        probs = drain(iter_probabilities(model, part.image, pcfg))
        truth = np.where(part.mask, part.labels, 0)
        objects += int(np.count_nonzero(np.unique(truth)))
        parts.append((probs, truth, part.mask))
    parent = default_params(model)

    def f1(params: PostprocessParams) -> float:
        total = Matching(0, 0, 0)
        for probs, truth, mask in parts:
            total = total + match(truth, np.where(mask, instances_from_classes(probs, params), 0), 0.5)
        return total.f1

    base = f1(parent)
    best, best_f1 = parent, base
    # the parent's waist cutting (nuclei) is tried off too: cells with lobes or dents have waists
    depths = (parent.split_depth, 0.0) if parent.split_depth > 0 else (0.0,)
    for depth in depths:
        for threshold in THRESHOLDS:
            for seed in SEED_THRESHOLDS:
                params = replace(parent, threshold=threshold, seed_threshold=seed, split_depth=depth)
                score = f1(params)
                if score > best_f1 + 1e-9:
                    best, best_f1 = params, score
    adopted = objects >= MIN_OBJECTS and best_f1 >= base + MIN_GAIN
    return Calibration(best if adopted else parent, base, best_f1, objects, adopted)
