"""Fine-tuning: a copy of a model learns from a user's corrections, the best weights are kept.

:func:`iter_finetune` drives :func:`~napari_unet.training.loop.iter_train` on a copy of the model
with a held-back part of the annotation (:mod:`napari_unet.training.holdout`) scored along the
way, and returns the copy with the best held-out weights and a card saying where it comes from
(:mod:`napari_unet.training.card`). :func:`finetune` is the one-call API on arrays.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_unet.common.generators import drain
from napari_unet.engine.devices import select_device
from napari_unet.models.model_file import Model
from napari_unet.models.registry import load_model
from napari_unet.training.annotations import samples_from_arrays
from napari_unet.training.calibrate import MIN_OBJECTS, calibrate_postprocess
from napari_unet.training.card import FITTED, STRONG_START, finetuned_card, working_card
from napari_unet.training.holdout import HeldOutScore, evaluate_heldout, split_holdout
from napari_unet.training.loop import TrainConfig, TrainStep, iter_train
from napari_unet.training.sample import NoAnnotationError, Sample
from napari_unet.training.working_scale import (
    BATCHNORM_BATCHES,
    choose_working_zoom,
    reestimate_batchnorm,
    rescale_samples,
)

__all__ = [
    "FINETUNE_DEFAULTS",
    "MIN_SCRATCH_STEPS",
    "SCRATCH_BELOW_F1",
    "STRONG_START_ANCHOR",
    "STRONG_START_STEPS",
    "FinetuneStep",
    "finetune",
    "iter_finetune",
    "planned_steps",
    "start_from_scratch",
    "strong_start",
]

# Fine-tuning defaults, chosen for "two corrected images, two minutes on a laptop CPU", on any
# kind of image (benchmarks/probe_finetune_scale.py, benchmarks/bench_finetune_real.py: phase
# contrast cells, EM, nuclei; figures in benchmarks/README.md):
# * The working scale: the images are resized so the annotated objects get the parent's trained
#   diameter (working_scale.py); prediction applies the same zoom from the card. The parent's
#   filters fit objects of that size, a crop then holds several objects, and the net's receptive
#   field covers an object with its context. Phase-contrast cells of ~70 px (300 steps): F1 0.38
#   at the parent's 20 px against 0.26 at 35 px and ~0 at native size.
# * BatchNorm learns (training mode), after its statistics are re-estimated on the new images.
#   Frozen with the parent's fluorescence statistics, the layers normalise nothing in another
#   intensity world, and training stalls: phase contrast plateaued at loss ~0.5 with F1 0.03
#   (0.26 with re-estimated but frozen statistics) against 0.38 learning. Re-estimating first
#   makes the held-out score "before" and the first previews those of a net that sees the new
#   images as they are.
# * lr 3e-3 (10-step warm-up, cosine): with BatchNorm learning, a higher rate is well conditioned
#   and a two-minute budget is a few hundred steps; phase contrast F1 0.53 against 0.38 at 1e-3.
# * crop 128: four times as many steps as 256 in the same time; at the working scale a crop
#   holds several objects.
# * The best weights by held-out loss are kept (the parent's included), so a fine-tune never
#   returns something worse on the held-out annotation than what it started from.
# * Random weights instead of the parent's when the parent finds none of the user's objects and
#   the run is long enough (start="auto", start_from_scratch): the parent's features then
#   belong to another world and, given a few hundred steps, are a worse start than none; in a
#   short run they still give a head start. Phase contrast (the nuclei model's held-out F1
#   before training 0.00): ~250 steps (120 s) F1 0.43 from the nuclei model against 0.54 from
#   random weights (seed 0; seed 1: 0.30 against 0.29), ~550 steps 0.65 against 0.72;
#   ~50-80 steps (30-60 s) 0.22-0.27 against 0.05-0.08. EM, where the nuclei
#   model finds some profiles (held-out F1 0.36): 0.76 from it against 0.73 from random weights.
# * A parent that already finds most of the user's held-back objects (strong_start) trains a
#   short run held near its own weights (STRONG_START_STEPS, STRONG_START_ANCHOR); any other
#   run trains freely (see the constants).
# * The instance thresholds are fitted on the held-back annotation when it holds enough objects
#   and the gain is clear (calibrate.py): a net that learnt large cells well can still leave
#   their interior under the parent's seed threshold.
FINETUNE_DEFAULTS = TrainConfig(
    steps=None,
    time_budget=120.0,
    batch_size=8,
    crop=128,
    lr=3e-3,
    warmup=10,
    schedule="cosine",
    freeze_batchnorm=False,
    working_scale=True,
    adapt_batchnorm=True,
    calibrate_postprocess=True,
    start="auto",
)

SCRATCH_BELOW_F1 = 0.1  # a parent under this held-out F1 finds (next to) none of the user's objects
MIN_SCRATCH_STEPS = 200  # random weights need this many updates to overtake a mismatched parent
STEP_PER_FORWARD = 3.0  # a training step costs ~3 forward passes of its batch (measured 2.7-3.0)
# A parent that already finds STRONG_START of the held-back objects (MIN_OBJECTS of them at least)
# has little to learn from a few images, and what it learns late is drift that the held-back part
# of the same images cannot see: it trains STRONG_START_STEPS at most, each step pulling the weights
# back towards the parent's by lr x STRONG_START_ANCHOR of the gap (TrainConfig.anchor_decay).
# Bundled model on the DSB 512x640 experiment (2 images trained, 4 others scored, parent F1 0.857,
# held-back 0.96; probe_finetune_scale.py): free, 150 steps 0.883, 300 0.869, 600 0.837 / 0.843 /
# 0.791 (three seeds), 1500 0.813; with the pull (decay 10), 600 steps 0.866 / 0.893 / 0.865,
# 1500 0.810 (decay 3: 0.789 / 0.854; 30: 0.829; 100: 0.790). The default 120 s run, free
# (~900 steps): 0.805 / 0.754; now 0.866 / 0.854. Not for weaker parents: on EM (parent 0.433)
# the pull kept F1 (0.776 / 0.757 against 0.724 / 0.804 free, 120 s) and cost pixel IoU
# (0.849 / 0.824 against 0.875 / 0.876).
STRONG_START_STEPS = 600
STRONG_START_ANCHOR = 10.0


def planned_steps(config: TrainConfig, forward_seconds: float | None) -> float:
    """The number of steps a run will make (0 if unknown).

    That is its step limit, or its time budget divided by the step time estimated from one
    forward pass of a batch (``forward_seconds``), whichever is smaller.
    """
    estimates = [float(config.steps)] if config.steps else []
    if config.time_budget and forward_seconds:
        estimates.append(config.time_budget / (STEP_PER_FORWARD * forward_seconds))
    elif config.time_budget:
        return 0.0  # no pace measured: too little is known to leave the parent
    return min(estimates, default=0.0)


def start_from_scratch(config: TrainConfig, before: HeldOutScore | None, steps: float = math.inf) -> bool:
    """Whether to train random weights rather than the parent's (the rule of ``start="auto"``).

    Only the held-back annotation can tell whether the parent's features fit the user's images.
    When it holds enough objects (``MIN_OBJECTS``) and the parent finds almost none of them
    (F1 under ``SCRATCH_BELOW_F1``, after its BatchNorm statistics were re-estimated on the new
    images), its weights are a worse start than random ones, but only for a run long enough
    for random weights to learn (``steps`` at least ``MIN_SCRATCH_STEPS``): in a short run the
    parent's generic features still give a head start. With too little held back to judge, the
    parent is kept.
    """
    if config.start in ("parent", "scratch"):
        return config.start == "scratch"
    if config.start != "auto":
        raise ValueError(f"start must be 'parent', 'scratch' or 'auto', not {config.start!r}")
    finds_nothing = before is not None and before.objects >= MIN_OBJECTS and before.f1 < SCRATCH_BELOW_F1
    return finds_nothing and steps >= MIN_SCRATCH_STEPS


def strong_start(before: HeldOutScore | None, scratch: bool) -> bool:
    """True when the run starts from a parent that already finds most of the user's objects.

    Such a run trains ``STRONG_START_STEPS`` at most, held near the parent's weights (see the
    constants): ``before`` is the parent's score on the held-back part.
    """
    return not scratch and before is not None and before.objects >= MIN_OBJECTS and before.f1 >= STRONG_START


def _check_length(config: TrainConfig) -> None:
    """Refuse a run that would train nothing (steps 0, a budget of 0 s or less, nan) or never end.

    Such a run would return an untrained copy named and carded like a fine-tuned model.
    """
    steps, budget, lr = config.steps, config.time_budget, config.lr
    if steps is None and budget is None:
        raise ValueError("give a number of steps or a time budget")
    if steps is not None and (
        isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1
    ):
        raise ValueError(f"steps must be an integer >= 1 (None: no step limit), not {steps!r}")
    if budget is not None and not (
        isinstance(budget, (int, float)) and not isinstance(budget, bool) and 0 < budget < math.inf
    ):
        raise ValueError(
            f"time_budget must be a positive number of seconds (None: no time limit), not {budget!r}"
        )
    if not (isinstance(lr, (int, float)) and 0 < lr < math.inf):
        raise ValueError(f"lr must be a positive number, not {lr!r}")


def _reinitialise(net: nn.Module, seed: int) -> None:
    """Random weights of the same architecture, in place (torch's global RNG left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(net)(net.config)
    net.load_state_dict(fresh.state_dict())


@dataclass(frozen=True)
class FinetuneStep:
    """One fine-tuning step: a training step plus the held-out score, best step and preview."""

    step: int
    loss: float
    lr: float
    elapsed: float
    steps_per_second: float
    heldout: HeldOutScore | None = None  # set on the steps where the held-out part was scored
    best_step: int = 0  # step of the best weights so far (0 = the parent's)
    preview: Any = None  # what ``iter_finetune``'s ``preview`` hook returned on this step, if it ran


def _untrained_batchnorm(net: nn.Module) -> bool:
    """True for a net whose BatchNorm layers never saw a batch (running statistics are defaults)."""
    return any(
        isinstance(m, nn.BatchNorm2d)
        and m.num_batches_tracked is not None
        and int(m.num_batches_tracked) == 0
        for m in net.modules()
    )


def _snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the weights, to return the best ones later."""
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
    _check_length(config)
    t0 = time.perf_counter()
    dev = device if isinstance(device, torch.device) else select_device(device)
    if config.freeze_batchnorm and _untrained_batchnorm(model.net):
        config = replace(config, freeze_batchnorm=False)  # no statistics to keep yet
    native = list(samples)
    zoom = choose_working_zoom(model, native) if config.working_scale else 1.0
    samples = rescale_samples(native, zoom)
    work = model.copy()
    work.card.update(working_card(model, native, zoom))  # previews during training see the scale
    work.net.to(dev)
    train_samples, held, note = split_holdout(samples, holdout)
    forward_seconds = None
    if config.adapt_batchnorm:
        t_bn = time.perf_counter()
        if reestimate_batchnorm(work.net, train_samples, config, seed=config.seed):
            forward_seconds = (time.perf_counter() - t_bn) / BATCHNORM_BATCHES
    before = evaluate_heldout(work, held, config, dev) if held else None
    best_state, best, best_step = _snapshot(work.net), before, 0  # the parent stays a candidate
    scratch = start_from_scratch(config, before, planned_steps(config, forward_seconds))
    if scratch:
        _reinitialise(work.net, config.seed)
        config = replace(config, freeze_batchnorm=False, anchor_decay=0.0)  # nothing to keep
        if config.adapt_batchnorm:
            reestimate_batchnorm(work.net, train_samples, config, seed=config.seed)
    short = strong_start(before, scratch)
    if short:
        config = replace(
            config,
            steps=min(config.steps or STRONG_START_STEPS, STRONG_START_STEPS),
            anchor_decay=max(config.anchor_decay, STRONG_START_ANCHOR),
        )
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
    calibration = calibrate_postprocess(work, held, config, dev) if config.calibrate_postprocess else None
    steps = last.step if last is not None else 0
    work.card = finetuned_card(
        model,
        native,
        config,
        dev,
        note,
        before,
        best,
        zoom=zoom,
        steps=steps,
        best_step=best_step if held else steps,
        seconds=time.perf_counter() - t0,
        stopped=stopped,
    )
    if calibration is not None:
        work.card["postprocess"] = {**work.card.get("postprocess", {}), **asdict(calibration.params)}
        work.card["finetune"]["postprocess"] = {
            "thresholds": FITTED if calibration.adopted else "parent's",
            "heldout_objects": calibration.objects,
            "heldout_f1_parent_thresholds": round(calibration.f1_parent, 4),
            "heldout_f1_best_thresholds": round(calibration.f1_chosen, 4),
        }
    if scratch:
        why = "asked" if config.start == "scratch" else "the parent found none of your held-back objects"
        work.card["finetune"]["start"] = f"random weights ({why})"
    if short and before is not None:
        work.card["finetune"]["start"] = (
            f"the parent's weights, kept close, {STRONG_START_STEPS} steps at most (it already found "
            f"{before.f1:.2f} of your held-back objects)"
        )
    if zoom != 1.0 or config.adapt_batchnorm:
        work.card["finetune"]["working_zoom"] = round(zoom, 4)
        work.card["finetune"]["batchnorm"] = "re-estimated" if config.adapt_batchnorm else "parent's"
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


def _as_list(x: Any) -> list[Any]:
    """One array (numpy or array-like) -> [it]; a sequence of them -> a list."""
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
    """Fine-tune a copy of ``model`` on corrected labels; return the copy.

    The images are normalised exactly as prediction normalises them; part of the annotation is
    held back to score the model before and after, and the weights with the best held-out loss
    are returned (the parent's, if nothing beats them). ``axes``, ``channel``, ``ignore_label``,
    ``reviewed`` and ``slices`` apply to every image (see
    :func:`napari_unet.training.annotations.samples_from_arrays`).

    Parameters
    ----------
    model : Model, str or None
        The model to start from: a :class:`~napari_unet.models.model_file.Model`, a model name or
        a model file; ``None`` is the bundled nuclei model. It is never changed.
    images : array-like or sequence of array-like
        One image, or a list of images (numpy, dask or zarr arrays).
    labels : array-like or sequence of array-like
        The corrected instance labels of each image (0 = background): the image's shape without
        its C axis, in the image's axis order; as many as ``images``. A bool array is a painted
        mask whose connected components are the objects.
    time_budget : float or None, default 120.0
        Seconds of training. Training ends after ``time_budget`` seconds or ``steps`` steps,
        whichever comes first; at least one of the two must be given.
    steps : int or None, default None
        Number of optimisation steps (None: as many as ``time_budget`` allows).
    ignore_label : int or None, default None
        A label value that means "not annotated": those pixels are never learned, not even as
        background.
    axes : str or None, default None
        The images' axes in the letters TZCYX (e.g. ``"ZYX"``); None guesses them from the shape.
    channel : int or None, default None
        Which image channel a one-channel model trains on (needed when the images have several);
        leave None for a model that takes all channels.
    reviewed : bool, array-like or None, default None
        The pixels the user has checked (a bool mask of the labels' shape, or one (Y, X) plane
        for every slice); only those count. ``True`` means all of them.
    slices : sequence or None, default None
        On a stack, the slices / frames that were edited or reviewed (an index, or (t, z) pairs
        when the image has both T and Z); only those are trained on.
    lr : float or None, default None
        Peak learning rate; None keeps the one of ``config``.
    holdout : float, default 0.2
        Fraction of the annotation held back to score the model (0: nothing held back, no score).
    device : str, default "auto"
        ``"auto"`` picks CUDA, then Apple MPS, then the CPU; ``"cpu"``, ``"cuda"`` or ``"mps"``
        must exist.
    seed : int, default 0
        Seed of the crops and augmentations drawn.
    config : TrainConfig or None, default None
        The training recipe; None uses ``FINETUNE_DEFAULTS``. ``time_budget``, ``steps``,
        ``seed`` and ``lr`` above replace its own.
    progress : callable or None, default None
        Called with every :class:`FinetuneStep` (loss, learning rate, held-out score...).
    stop : callable, default ``lambda: False``
        Asked before every step; training ends (keeping the best weights) once it returns true.

    Returns
    -------
    Model
        A new model: the best weights by held-out loss and a card that records the parent, the
        data, the steps, the time and the before/after held-out scores.

    Raises
    ------
    ValueError
        Unequal numbers of images and labels, a model that is not a 3-class model, an unknown or
        missing ``device``, neither ``time_budget`` nor ``steps``, ``steps`` below 1, or a
        ``time_budget`` or ``lr`` that is not a positive number (a run that would train nothing
        and return an untrained copy named like a fine-tuned model).
    napari_unet.training.annotations.AnnotationError
        Labels that cannot be trained on as given (shape, type, selection).
    napari_unet.training.sample.NoAnnotationError
        No annotated pixels in any image.
    napari_unet.common.axes.AxesError
        ``axes`` that do not fit the image, a shape whose axes cannot be guessed, or a
        ``channel`` that does not exist or is not wanted.
    napari_unet.engine.normalize.BadImageError
        An image that is empty, not numeric, holds NaN/inf, or has a channel count the model does
        not take.
    napari_unet.models.model_file.ModelFileError
        ``model`` names a model that does not exist or cannot be read.

    Examples
    --------
    >>> import napari_unet
    >>> model = napari_unet.finetune(None, image, corrected, axes="YX", time_budget=60)  # doctest: +SKIP
    >>> model.card["metrics"]["heldout_f1_after"]  # doctest: +SKIP
    >>> napari_unet.segment(other_image, model=model, axes="YX")  # doctest: +SKIP
    """
    cfg = config or FINETUNE_DEFAULTS
    cfg = replace(cfg, time_budget=time_budget, steps=steps, seed=seed, lr=lr if lr is not None else cfg.lr)
    _check_length(cfg)  # before reading anything: a run that would train nothing is refused at once
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
    return drain(iter_finetune(base, samples, cfg, stop=stop, device=device, holdout=holdout), progress)
