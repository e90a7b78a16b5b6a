"""Training as a generator: one yield per optimisation step, a stop predicate, no Qt.

The same loop trains the bundled model (``scripts/train_bundled.py``) and, through
:mod:`napari_unet.training.finetune`, fine-tunes a model on a user's corrections. Each step draws
augmented crops from the samples (:mod:`napari_unet.training.augment`), encodes the labels as
background / interior / boundary (:mod:`napari_unet.training.targets`) and minimises a weighted
cross-entropy. Pixels outside a sample's ``mask`` get weight 0: they are "not annotated", never
learned as background.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from napari_unet.engine.devices import autocast_dtype, select_device
from napari_unet.models.model_file import Model
from napari_unet.training.augment import AugmentParams, jitter_intensity, random_crop
from napari_unet.training.sample import NoAnnotationError, Sample, annotation_summary
from napari_unet.training.targets import encode_classes, weight_map

__all__ = [
    "NoAnnotationError",
    "Sample",
    "TrainConfig",
    "TrainStep",
    "annotation_summary",
    "iter_train",
    "make_batch",
    "weighted_loss",
]


@dataclass(frozen=True)
class TrainConfig:
    """How to train: length (steps and/or seconds), crops, optimiser, schedule, loss weights."""

    steps: int | None = 1000
    time_budget: float | None = None  # seconds of training; whichever of steps/time ends first
    batch_size: int = 8
    crop: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    schedule: str = "cosine"  # "cosine" over ``steps``, or "constant"
    boundary_weight: float = 2.0
    touch_weight: float = 6.0
    augment: AugmentParams = field(default_factory=AugmentParams)
    amp: bool | None = None  # None: bf16 where the hardware has it
    seed: int = 0
    freeze_batchnorm: bool = False  # keep running statistics (fine-tuning on few images)
    # fine-tuning only (napari_unet.training.working_scale):
    working_scale: bool = False  # resize the images so objects have the parent's trained size
    adapt_batchnorm: bool = False  # re-estimate BatchNorm statistics on the new images first
    calibrate_postprocess: bool = False  # fit the instance thresholds on the held-back annotation
    start: str = "parent"  # "parent", "scratch" (random weights) or "auto" (finetune.start_from_scratch)
    # each step pulls every weight towards its value at the start by lr * anchor_decay of the gap
    # (decoupled L2-SP, Li et al. 2018), so a fine-tune on a few images cannot drift far from the
    # parent; 0 = off. Like AdamW's decay, decoupled from Adam's gradient normalisation.
    anchor_decay: float = 0.0


@dataclass(frozen=True)
class TrainStep:
    """What one optimisation step reports: its number, loss, learning rate and pace."""

    step: int
    loss: float
    lr: float
    elapsed: float
    steps_per_second: float


def make_batch(
    samples: Sequence[Sample],
    cfg: TrainConfig,
    rng: np.random.Generator,
    probabilities: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images N,C,H,W float32; classes N,H,W int64; weights N,H,W float32)."""
    imgs, classes, weights = [], [], []
    for _ in range(cfg.batch_size):
        s = samples[rng.choice(len(samples), p=probabilities)]
        img, lab, msk = random_crop(s.image, s.labels, s.mask, cfg.crop, rng, cfg.augment, s.centers)
        img = jitter_intensity(img, rng, cfg.augment)
        cls = encode_classes(lab)
        w = weight_map(lab, cfg.boundary_weight, cfg.touch_weight, classes=cls)
        if msk is not None:
            w[~msk] = 0.0
        imgs.append(img)
        classes.append(cls)
        weights.append(w)
    return (
        torch.from_numpy(np.stack(imgs)),
        torch.from_numpy(np.stack(classes).astype(np.int64)),
        torch.from_numpy(np.stack(weights)),
    )


def weighted_loss(logits: torch.Tensor, classes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted cross-entropy; pixels of weight 0 contribute nothing, not even to the mean."""
    ce = nn.functional.cross_entropy(logits.float(), classes, reduction="none")
    return (ce * weights).sum() / weights.sum().clamp_min(1.0)


def _lr_at(step: int, elapsed: float, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay over the steps or the time budget (whichever ends first)."""
    warm = min(1.0, (step + 1) / max(cfg.warmup, 1))
    if cfg.schedule != "cosine":
        return cfg.lr * warm
    fracs = []
    if cfg.steps:
        fracs.append(step / cfg.steps)
    if cfg.time_budget:
        fracs.append(elapsed / cfg.time_budget)
    frac = min(max(fracs, default=0.0), 1.0)
    return cfg.lr * warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))


def iter_train(
    model: Model,
    samples: Sequence[Sample],
    cfg: TrainConfig = TrainConfig(),
    stop: Callable[[], bool] = lambda: False,
    device: str | torch.device = "auto",
) -> Generator[TrainStep, None, Model]:
    """Train ``model.net`` in place; yield after every step; return the model.

    Ends after ``cfg.steps`` steps, ``cfg.time_budget`` seconds, or when ``stop()`` is true.
    """
    if not samples:
        raise NoAnnotationError("no training images given")
    if sum(s.annotated_pixels for s in samples) == 0:
        raise NoAnnotationError("no annotated pixels: paint labels or mark reviewed regions first")
    if cfg.steps is None and cfg.time_budget is None:
        raise ValueError("give a number of steps or a time budget")
    dev = device if isinstance(device, torch.device) else select_device(device)
    amp_dtype = autocast_dtype(dev) if cfg.amp in (None, True) else None
    net = model.net.to(dev).to(memory_format=torch.channels_last)
    net.train()
    if cfg.freeze_batchnorm:
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    params = [p for p in net.parameters() if p.requires_grad]
    anchors = [p.detach().clone() for p in params] if cfg.anchor_decay > 0 else []
    rng = np.random.default_rng(cfg.seed)
    weights = np.array([s.weight * s.annotated_pixels for s in samples], np.float64)
    probs = weights / weights.sum()
    start = time.perf_counter()
    step = 0
    try:
        while not stop():
            if cfg.steps is not None and step >= cfg.steps:
                break
            if cfg.time_budget is not None and time.perf_counter() - start >= cfg.time_budget:
                break
            lr = _lr_at(step, time.perf_counter() - start, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            x, y, w = make_batch(samples, cfg, rng, probs)
            x = x.to(dev).contiguous(memory_format=torch.channels_last)
            y, w = y.to(dev), w.to(dev)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = net(x)
            loss = weighted_loss(logits, y, w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if anchors:
                pull = min(1.0, lr * cfg.anchor_decay)
                with torch.no_grad():
                    for p, a in zip(params, anchors, strict=True):
                        p.lerp_(a, pull)
            step += 1
            elapsed = time.perf_counter() - start
            yield TrainStep(step, float(loss.detach()), lr, elapsed, step / elapsed)
    finally:
        net.eval()
    return model
