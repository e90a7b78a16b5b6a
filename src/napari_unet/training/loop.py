"""Training as a generator: one yield per optimisation step, a stop predicate, no Qt.

The same loop trains the bundled model (``scripts/train_bundled.py``) and fine-tunes a
model on a user's corrections. Each step draws augmented crops from the samples
(:mod:`napari_unet.training.augment`), encodes the labels as background / interior / boundary
(:mod:`napari_unet.training.targets`) and minimises a weighted cross-entropy. Pixels outside a
sample's ``mask`` get weight 0: they are "not annotated", never learned as background.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_unet.common.generators import drain
from napari_unet.engine.devices import autocast_dtype, select_device
from napari_unet.models.model_file import Model
from napari_unet.training.augment import AugmentParams, jitter_intensity, random_crop
from napari_unet.training.targets import encode_classes, weight_map


class NoAnnotationError(ValueError):
    """Nothing to learn from: no annotated pixels in any sample."""


@dataclass
class Sample:
    """One training image: ``image`` (C, H, W) normalised float32, ``labels`` (H, W) instance
    ids (0 = background), ``mask`` (H, W) bool of the pixels that count (None = all).
    """

    image: np.ndarray
    labels: np.ndarray
    mask: np.ndarray | None = None
    weight: float = 1.0
    centers: np.ndarray | None = field(default=None, repr=False)
    source: str = ""  # which image it comes from (model cards count images)
    plane: str = ""  # which slice / frame of it, e.g. "z=3"

    def __post_init__(self) -> None:
        if self.image.ndim == 2:
            self.image = self.image[None]
        if self.image.ndim != 3:
            raise ValueError(f"sample image must be (C, H, W) or (H, W), got {self.image.shape}")
        if self.image.shape[1:] != self.labels.shape:
            raise ValueError(f"image {self.image.shape[1:]} and labels {self.labels.shape} differ in shape")
        if self.labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be integers, not {self.labels.dtype}")
        if self.mask is not None:
            if self.mask.shape != self.labels.shape:
                raise ValueError("mask and labels differ in shape")
            if self.centers is None:
                pts = np.argwhere(self.mask)
                step = max(1, len(pts) // 20000)
                self.centers = pts[::step]

    @property
    def annotated_pixels(self) -> int:
        return int(self.labels.size if self.mask is None else self.mask.sum())


@dataclass(frozen=True)
class TrainConfig:
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


@dataclass(frozen=True)
class TrainStep:
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
        w = weight_map(lab, cfg.boundary_weight, cfg.touch_weight)
        if msk is not None:
            w[~msk] = 0.0
        imgs.append(img)
        classes.append(encode_classes(lab))
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
            step += 1
            elapsed = time.perf_counter() - start
            yield TrainStep(step, float(loss.detach()), lr, elapsed, step / elapsed)
    finally:
        net.eval()
    return model


# --------------------------------------------------------------------------- fine-tuning

# Fine-tuning defaults, chosen for "two corrected images, two minutes on a laptop CPU":
# * crop 128 (not 256): four times as many steps in the same time; a nucleus or a cell is
#   far smaller than 128 px, and a short budget is limited by the number of updates.
# * lr 1e-3 with a 10-step warm-up: a 50-step warm-up (the from-scratch default) spends a
#   two-minute CPU budget (50-100 steps of 256 crops) entirely at a fraction of the rate.
#   With BatchNorm frozen (below) 1e-3 beat 5e-4 on both membrane cases (F1 0.976 vs 0.970
#   and 0.952 vs 0.923): the high rate did not destroy the pretrained features.
# * BatchNorm is frozen: eval mode, the parent's running statistics; its scale and shift still
#   learn. In training mode the net being trained is not the net that predicts: batch statistics
#   of the new images replace the running ones within ~15 steps (momentum 0.1) while the weights,
#   tuned to the old statistics, barely move in a short budget. Measured with
#   benchmarks/bench_finetune.py (membrane images, 60 s, 2-core CPU): the plain recipe took a
#   nuclei model from F1 0.91 to 0.38; frozen, the training loss starts at the parent's own loss
#   and falls (F1 0.91 -> 0.98), and a step is faster. A net that has never seen data (no
#   running statistics yet) trains its BatchNorm normally.
# * The best weights by held-out loss are kept (the parent's included), so a fine-tune never
#   returns something worse on the held-out annotation than what it started from.
FINETUNE_DEFAULTS = TrainConfig(
    steps=None,
    time_budget=120.0,
    batch_size=8,
    crop=128,
    lr=1e-3,
    warmup=10,
    schedule="cosine",
    freeze_batchnorm=True,
)
MIN_HOLDOUT_PIXELS = 4096  # a held-out part smaller than this (64x64) gives a meaningless score
MAX_HOLDOUT_PIXELS = 512 * 512  # bounds the cost of one held-out evaluation
HOLDOUT_CONTEXT = 32  # px of image around the held-out part the net sees when scoring it


@dataclass(frozen=True)
class HeldOutScore:
    """Held-out weighted cross-entropy (what is minimised) and object F1 at IoU 0.5."""

    loss: float
    f1: float
    objects: int  # true objects in the held-out part


@dataclass(frozen=True)
class FinetuneStep:
    step: int
    loss: float
    lr: float
    elapsed: float
    steps_per_second: float
    heldout: HeldOutScore | None = None  # set on the steps where the held-out part was scored
    best_step: int = 0  # step of the best weights so far (0 = the parent's)
    preview: Any = None  # what ``iter_finetune``'s ``preview`` hook returned on this step, if it ran


@dataclass
class HeldOut:
    """A held-back part of one sample, with ``HOLDOUT_CONTEXT`` px of image around it."""

    image: np.ndarray  # (C, h, w) normalised
    labels: np.ndarray  # (h, w)
    mask: np.ndarray  # (h, w) bool: the held-out pixels (the context does not count)


def annotation_summary(samples: Sequence[Sample]) -> dict[str, int]:
    """Images, planes, annotated pixels and objects: what a model card records about its data."""
    objects = 0
    for s in samples:
        lab = s.labels if s.mask is None else s.labels[s.mask]
        objects += int(np.count_nonzero(np.unique(lab)))
    return {
        "images": len({s.source for s in samples}),
        "planes": len(samples),
        "annotated_pixels": int(sum(s.annotated_pixels for s in samples)),
        "annotated_objects": objects,
    }


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
    from napari_unet.engine.metrics import Matching, match
    from napari_unet.engine.postprocess import instances_from_classes
    from napari_unet.engine.predict import PredictConfig, default_params, iter_probabilities

    pcfg = PredictConfig(device=device.type, tile=1024, overlap=32, amp=cfg.amp)
    params = default_params(model)
    loss_sum, weight_sum = 0.0, 0.0
    matched = Matching(0, 0, 0)
    objects = 0
    for part in held:
        probs = drain(iter_probabilities(model, part.image, pcfg))
        cls = encode_classes(part.labels).astype(np.intp)
        w = weight_map(part.labels, cfg.boundary_weight, cfg.touch_weight) * part.mask
        p = np.take_along_axis(probs, cls[None], 0)[0]
        loss_sum += float((-np.log(np.clip(p, 1e-7, 1.0)) * w).sum())
        weight_sum += float(w.sum())
        truth = np.where(part.mask, part.labels, 0)
        pred = np.where(part.mask, instances_from_classes(probs, params), 0)
        matched = matched + match(truth, pred, 0.5)
        objects += int(np.count_nonzero(np.unique(truth)))
    return HeldOutScore(loss_sum / max(weight_sum, 1e-9), matched.f1, objects)


def _untrained_batchnorm(net: nn.Module) -> bool:
    """True for a net whose BatchNorm layers never saw a batch (running statistics are defaults)."""
    return any(
        isinstance(m, nn.BatchNorm2d)
        and m.num_batches_tracked is not None
        and int(m.num_batches_tracked) == 0
        for m in net.modules()
    )


def _snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


def iter_finetune(
    model: Model,
    samples: Sequence[Sample],
    config: TrainConfig = FINETUNE_DEFAULTS,
    stop: Callable[[], bool] = lambda: False,
    device: str | torch.device = "auto",
    holdout: float = 0.2,
    eval_every: float | None = None,
    preview: Callable[[Model], Any] | None = None,
    preview_every: float = 3.0,
) -> Generator[FinetuneStep, None, Model]:
    """Fine-tune a copy of ``model`` on ``samples``; yield per step; return the best copy.

    ``model`` itself is never changed (a segmentation may be running with it). Part of the
    annotation (``holdout``) is held back and scored before training, every ``eval_every``
    seconds (default: a tenth of the time budget, at least 5 s; or a tenth of the steps) and
    at the end; the weights with the lowest held-out loss are returned, so stopping early
    keeps the best. The returned model's card records parent, data, steps, time and the
    before/after held-out scores (``card["finetune"]["holdout"]`` says if nothing was held back).

    ``preview(model)`` (optional) is called with the model being trained (eval mode, weights
    of that step) at most every ``preview_every`` seconds, counted from the end of the
    previous call, in this generator's thread; its result rides on that step's
    :attr:`FinetuneStep.preview`. A GUI uses it to re-predict what the user is looking at
    without ever running the net on its own thread.
    """
    if model.config.out_channels != 3:
        raise ValueError(f"fine-tuning needs a 3-class model, this one has {model.config.out_channels}")
    if not samples:
        raise NoAnnotationError("no training images given")
    if sum(s.annotated_pixels for s in samples) == 0:
        raise NoAnnotationError("no annotated pixels: paint labels or mark reviewed regions first")
    bad = [s.image.shape[0] for s in samples if s.image.shape[0] != model.config.in_channels]
    if bad:
        raise ValueError(f"model takes {model.config.in_channels} channel(s), a sample has {bad[0]}")
    if config.steps is None and config.time_budget is None:
        raise ValueError("give a number of steps or a time budget")
    t0 = time.perf_counter()
    dev = device if isinstance(device, torch.device) else select_device(device)
    if config.freeze_batchnorm and _untrained_batchnorm(model.net):
        config = replace(config, freeze_batchnorm=False)  # no statistics to keep yet
    work = model.copy()
    work.net.to(dev)
    train_samples, held, note = split_holdout(samples, holdout)
    before = evaluate_heldout(work, held, config, dev) if held else None
    best_state, best, best_step = _snapshot(work.net), before, 0
    every_s, every_steps = eval_every, None
    if every_s is None:
        if config.time_budget:
            every_s = max(5.0, config.time_budget / 10)
        else:
            every_steps = max(1, (config.steps or 10) // 10)
    next_eval = every_s or 0.0
    last: TrainStep | None = None
    scored_at = 0
    stopped = False
    next_preview = time.perf_counter() + preview_every

    def stop_asked() -> bool:
        nonlocal stopped
        stopped = stopped or bool(stop())
        return stopped

    gen = iter_train(work, train_samples, config, stop_asked, dev)
    try:
        for st in gen:
            last, score = st, None
            due = (every_s is not None and st.elapsed >= next_eval) or (
                every_steps is not None and st.step % every_steps == 0
            )
            if held and due:
                score, scored_at = evaluate_heldout(work, held, config, dev), st.step
                next_eval = st.elapsed + (every_s or 0.0)
                if best is None or score.loss < best.loss:
                    best_state, best, best_step = _snapshot(work.net), score, st.step
            shown = None
            if preview is not None and time.perf_counter() >= next_preview and not stopped:
                shown = _run_preview(preview, work)
                next_preview = time.perf_counter() + preview_every
            yield FinetuneStep(
                st.step, st.loss, st.lr, st.elapsed, st.steps_per_second, score, best_step, shown
            )
    finally:
        gen.close()  # puts the net back in eval mode
    if held and last is not None and scored_at != last.step:
        score = evaluate_heldout(work, held, config, dev)
        if best is None or score.loss < best.loss:
            best_state, best, best_step = _snapshot(work.net), score, last.step
    if held or last is None:
        work.net.load_state_dict(best_state)
    work.net.eval()
    steps = last.step if last is not None else 0
    work.card = _finetuned_card(
        model,
        samples,
        config,
        dev,
        note,
        before,
        best,
        steps=steps,
        best_step=best_step if held else steps,
        seconds=time.perf_counter() - t0,
        stopped=stopped,
    )
    return work


def _run_preview(preview: Callable[[Model], Any], work: Model) -> Any:
    """Call ``preview`` on the net in eval mode (as prediction runs it), then resume training.

    Frozen BatchNorm layers stay in eval mode, as :func:`iter_train` set them.
    """
    net = work.net
    modes = {m: m.training for m in net.modules()}
    net.eval()
    try:
        return preview(work)
    finally:
        for m, mode in modes.items():
            m.training = mode


MIN_OBJECTS_FOR_DIAMETER = 5


def median_object_diameter(samples: Sequence[Sample]) -> float | None:
    """Median equivalent diameter (px) of the annotated objects; None with fewer than 5.

    A fine-tuned model learns objects at the size they have in its training images, which may
    not be the parent's: its card records that size, so that Segment's *diameter* rescales an
    image relative to what this model saw (and 3D seed erosion and chunk halos scale with it).
    """
    areas: list[np.ndarray] = []
    for s in samples:
        lab = s.labels if s.mask is None else np.where(s.mask, s.labels, 0)
        counts = np.bincount(lab.ravel().astype(np.int64))[1:]
        areas.append(counts[counts > 0])
    all_areas = np.concatenate(areas) if areas else np.zeros(0)
    if all_areas.size < MIN_OBJECTS_FOR_DIAMETER:
        return None
    return float(np.median(2.0 * np.sqrt(all_areas / np.pi)))


def _finetuned_card(
    parent: Model,
    samples: Sequence[Sample],
    cfg: TrainConfig,
    device: torch.device,
    note: str,
    before: HeldOutScore | None,
    after: HeldOutScore | None,
    **run: Any,
) -> dict[str, Any]:
    """The parent's card (normalisation, target, post-processing) plus where this model comes from."""
    from datetime import datetime

    pc = parent.card
    card = {
        k: v for k, v in pc.items() if k not in {"metrics", "training", "parent", "created", "description"}
    }
    data = annotation_summary(samples)
    card["name"] = f"{parent.name}-ft"
    card["description"] = (
        f"{parent.name} fine-tuned on {data['annotated_objects']} annotated object(s) in "
        f"{data['images']} image(s)"
    )
    card["parent"] = {
        "name": parent.name,
        "source": parent.source,
        "created": pc.get("created"),
        "metrics": pc.get("metrics"),
        "parent": pc.get("parent"),
    }
    card["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    diameter = median_object_diameter(samples)
    if diameter is not None:
        card["object_diameter"] = round(diameter, 1)
    card["finetune"] = {
        **data,
        "planes_used": [f"{s.source} {s.plane}".strip() for s in samples[:50]],
        "steps": run["steps"],
        "best_step": run["best_step"],
        "seconds": round(run["seconds"], 1),
        "stopped_early": run["stopped"],
        "lr": cfg.lr,
        "crop": cfg.crop,
        "batch_size": cfg.batch_size,
        "device": str(device),
        "holdout": note,
    }
    metrics: dict[str, Any] = {}
    if before is not None and after is not None:
        metrics = {
            "heldout_f1_before": round(before.f1, 4),
            "heldout_f1_after": round(after.f1, 4),
            "heldout_loss_before": round(before.loss, 4),
            "heldout_loss_after": round(after.loss, 4),
            "heldout_objects": after.objects,
        }
    card["metrics"] = metrics
    return card


def _as_list(x: Any) -> list[Any]:
    if isinstance(x, np.ndarray) or (hasattr(x, "shape") and hasattr(x, "dtype")):
        return [x]
    return list(x)


def finetune(
    model: Model | str | None,
    images: Any,
    labels: Any,
    *,
    time_budget: float | None = 120.0,
    steps: int | None = None,
    ignore_label: int | None = None,
    axes: str | None = None,
    channel: int | None = None,
    reviewed: Any = None,
    slices: Sequence[Any] | None = None,
    lr: float | None = None,
    holdout: float = 0.2,
    device: str = "auto",
    seed: int = 0,
    config: TrainConfig | None = None,
    progress: Callable[[FinetuneStep], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> Model:
    """Fine-tune ``model`` (a Model, a model name or file; None = bundled) on corrected labels.

    ``images`` / ``labels``: one array each or equal-length lists; ``axes``, ``channel``,
    ``ignore_label``, ``reviewed`` and ``slices`` apply to every image (see
    :func:`napari_unet.training.annotations.samples_from_arrays`). Training ends after ``time_budget``
    seconds or ``steps`` steps, whichever comes first. Returns a new Model; ``model`` is
    unchanged. ``progress`` is called with every :class:`FinetuneStep`.
    """
    from napari_unet.models.registry import load_model
    from napari_unet.training.annotations import samples_from_arrays

    base = load_model(model)
    imgs, labs = _as_list(images), _as_list(labels)
    if len(imgs) != len(labs):
        raise ValueError(f"{len(imgs)} image(s) but {len(labs)} label image(s)")
    samples: list[Sample] = []
    for i, (img, lab) in enumerate(zip(imgs, labs, strict=True)):
        samples += samples_from_arrays(
            img,
            lab,
            base,
            axes=axes,
            channel=channel,
            ignore_label=ignore_label,
            reviewed=reviewed,
            slices=slices,
            source=f"image {i}",
        )
    cfg = config or FINETUNE_DEFAULTS
    cfg = replace(cfg, time_budget=time_budget, steps=steps, seed=seed, lr=lr if lr is not None else cfg.lr)
    return drain(iter_finetune(base, samples, cfg, stop=stop, device=device, holdout=holdout), progress)
