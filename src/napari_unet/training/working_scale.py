"""The working scale of a fine-tune: the user's objects brought to the size the parent knows.

A U-Net learns objects at the size it sees them. The bundled model saw nuclei of ~20 px; phase
contrast cells of ~70 px in 128 px crops are larger than much of what its filters and its
receptive field were shaped for, and a crop holds one cell or part of one. Resizing the training
images so that the annotated objects' median diameter becomes the parent's trained diameter
lets the fine-tune start from features that fit, puts several objects in each crop, and makes a
step cheaper when the images shrink. The model's card records the zoom (``working_zoom``) so
that prediction brings new images of the same kind to that scale by itself.

BatchNorm statistics are the other half of "a different world": the parent's running means and
variances describe fluorescence nuclei. They are re-estimated on the new images (at the working
scale, no gradient) before training, so that the held-out score before training and the first
previews are those of a net that sees the new images as they are; training then lets them learn
(``FINETUNE_DEFAULTS``) or keeps them frozen (``freeze_batchnorm``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_unet.engine.object_scale import MAX_ZOOM, MIN_ZOOM, resize_plane, trained_diameter
from napari_unet.models.model_file import Model
from napari_unet.training.card import median_object_diameter
from napari_unet.training.loop import TrainConfig, make_batch
from napari_unet.training.sample import Sample

__all__ = ["choose_working_zoom", "reestimate_batchnorm", "rescale_samples"]

SKIP_WITHIN = 0.1  # zooms within 10% of 1 are not worth the resampling
BATCHNORM_BATCHES = 8  # batches seen to re-estimate BatchNorm statistics (8 x 8 = 64 crops: a few seconds)


def choose_working_zoom(parent: Model, samples: Sequence[Sample]) -> float:
    """The zoom that gives the annotated objects the parent's trained diameter (1.0 = none).

    With fewer than 5 annotated objects the size is unknown and nothing is rescaled; the zoom is
    clipped to the range prediction allows, so training and prediction always agree.
    """
    diameter = median_object_diameter(samples)
    if diameter is None or diameter <= 0:
        return 1.0
    zoom = min(max(trained_diameter(parent) / diameter, MIN_ZOOM), MAX_ZOOM)
    return 1.0 if abs(zoom - 1.0) < SKIP_WITHIN else zoom


def _nearest(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An (H, W) label or mask array resized to ``shape`` by nearest neighbour (no blended ids)."""
    x = torch.from_numpy(np.ascontiguousarray(a))[None, None]
    return F.interpolate(x.float(), size=shape, mode="nearest-exact")[0, 0].numpy()


def rescale_samples(samples: Sequence[Sample], zoom: float) -> list[Sample]:
    """Every sample resized by ``zoom`` in Y/X: image bilinear, labels and mask nearest."""
    if zoom == 1.0:
        return list(samples)
    out = []
    for s in samples:
        h, w = s.labels.shape
        shape = (max(1, round(h * zoom)), max(1, round(w * zoom)))
        image = resize_plane(s.image, shape)
        labels = _nearest(s.labels, shape).astype(s.labels.dtype)
        mask = None
        if s.mask is not None:
            mask = _nearest(s.mask.astype(np.uint8), shape).astype(bool)
        out.append(Sample(image, labels, mask, s.weight, None, s.source, s.plane))
    return out


def reestimate_batchnorm(net: nn.Module, samples: Sequence[Sample], cfg: TrainConfig, seed: int = 0) -> bool:
    """Recompute every BatchNorm layer's running statistics on crops of ``samples``, in place.

    The crops are drawn (and augmented) as training draws them; no weight changes. Returns
    False, changing nothing, for a net without BatchNorm.
    """
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        return False
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    was_training = net.training
    net.train()
    rng = np.random.default_rng(seed)
    batch_cfg = replace(cfg, batch_size=max(cfg.batch_size, 2))
    weights = np.array([s.weight * s.annotated_pixels for s in samples], np.float64)
    probs = weights / weights.sum()
    device = next(net.parameters()).device
    try:
        with torch.no_grad():
            for _ in range(BATCHNORM_BATCHES):
                x, _, _ = make_batch(samples, batch_cfg, rng, probs)
                net(x.to(device).contiguous(memory_format=torch.channels_last))
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
        net.train(was_training)
    return all(math.isfinite(float(m.running_var.min())) for m in bns)
