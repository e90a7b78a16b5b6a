"""Why fine-tuning fails on large, unfamiliar objects: object scale and BatchNorm statistics, probed.

    python benchmarks/probe_finetune_scale.py --data ../shared/data/usiigaci-phase-dev [--steps 300]
        [--train 2] [--test 4] [--seed 0] [--variants baseline,scale,bn,scale+bn]

Fine-tunes the bundled nuclei model on the first ``--train`` images of a dev set (dense labels)
for a fixed number of steps (not seconds, so a busy machine does not change the result) and
scores F1@0.5 and pixel IoU on the next ``--test`` images through the public ``segment``.
Variants:

* ``baseline``: today's recipe (native scale, BatchNorm frozen with the parent's statistics).
* ``scale``: ``TrainConfig.working_scale``: images and labels resized so the annotated objects'
  median diameter becomes the parent's trained diameter; the card's ``working_zoom`` makes
  prediction zoom the test images the same way, with no ``diameter`` given.
* ``bn``: ``TrainConfig.adapt_batchnorm``: BatchNorm statistics re-estimated on the new images
  (no gradient) before training, then frozen.
* ``scale+bn``: both.
* ``cal``: ``TrainConfig.calibrate_postprocess``: the instance thresholds fitted on the
  held-back annotation (combine with the others: ``scale+bn+cal``).
* ``scratch``, ``scratch+scale``: the same recipe from random weights (BatchNorm learning).
* ``diam=D``: the working scale brings objects to ``D`` px instead of the parent's diameter.
* ``key=value``: any other :class:`TrainConfig` field, e.g. ``scale+freeze_batchnorm=0+lr=3e-3``.
* ``free``: no short run for a strong start (a parent that already finds most held-back objects
  otherwise trains ``finetune.STRONG_START_STEPS`` at most, pulled towards its weights), so
  ``--steps`` is what runs.

Besides object F1 and the pixel IoU of the labels it prints ``fg IoU``: the pixel IoU of the
net's own foreground (P(background) < 0.5), which separates "the net did not learn" from "the
post-processing found no objects in what it learnt".

Data folders hold ``images/*`` and ``masks/*`` (instance ids) as the dev sets do; they are not
part of the repository.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_finetune_real import load  # the dev sets' reader, shared
from napari_unet.common.generators import drain
from napari_unet.engine.config import PredictConfig
from napari_unet.engine.inference import iter_probabilities
from napari_unet.engine.metrics import Matching, match
from napari_unet.engine.normalize import apply_bounds, channel_bounds
from napari_unet.engine.object_scale import net_shape, trained_diameter, unzoom, zoom_factor, zoomed_plane
from napari_unet.engine.predict import segment
from napari_unet.models.model_file import Model
from napari_unet.models.registry import load_model
from napari_unet.models.unet import UNet
from napari_unet.training import finetune as ft
from napari_unet.training import working_scale as ws
from napari_unet.training.annotations import samples_from_arrays
from napari_unet.training.card import median_object_diameter
from napari_unet.training.finetune import FINETUNE_DEFAULTS, iter_finetune


def foreground(model: Model, img: np.ndarray, zoom: float | None) -> np.ndarray:
    """The net's foreground (P(background) < 0.5) at the image's own size."""
    low, high = model.normalization
    x = apply_bounds(img[None].astype(np.float32), [channel_bounds(img, low, high)])
    if zoom:
        x = zoomed_plane(lambda _: x, net_shape(img.shape, zoom), 0)
    probs = drain(iter_probabilities(model, x, PredictConfig(device="cpu")))
    if zoom:
        probs = unzoom(probs[:, None], img.shape)[:, 0]
    return probs[0] < 0.5


def score(model: Model, data: list, diameter: float | None) -> tuple[float, float, float]:
    total = Matching(0, 0, 0)
    inter = union = fg_inter = fg_union = 0
    zoom = zoom_factor(model, diameter)
    for _, img, lab in data:
        pred = segment(img, model=model, axes="YX", device="cpu", diameter=diameter)
        total = total + match(lab, pred, 0.5)
        inter += int(np.sum((pred > 0) & (lab > 0)))
        union += int(np.sum((pred > 0) | (lab > 0)))
        fg = foreground(model, img, zoom)
        fg_inter += int(np.sum(fg & (lab > 0)))
        fg_union += int(np.sum(fg | (lab > 0)))
    return total.f1, inter / max(union, 1), fg_inter / max(fg_union, 1)


def _override(token: str) -> tuple[str, object]:
    """``key=value`` -> a TrainConfig field and its value (ints, floats, 0/1 for flags)."""
    key, value = token.split("=", 1)
    current = getattr(FINETUNE_DEFAULTS, key)
    if isinstance(current, bool):
        return key, value not in ("0", "false", "False")
    if isinstance(current, int) and "." not in value and "e" not in value:
        return key, int(value)
    return key, float(value)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--train", type=int, default=2)
    ap.add_argument("--test", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default="baseline,scale,bn,scale+bn")
    ap.add_argument("--group", default=None, help="only images of this HxW (one DSB experiment)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    group = tuple(int(v) for v in args.group.lower().split("x")) if args.group else None
    data = [(name, img.astype(np.float32), lab) for name, img, lab in load(args.data, group)]
    train, test = data[: args.train], data[args.train : args.train + args.test]
    if len(train) < args.train or not test:
        need = f"not enough for {args.train} to train and one to score"
        print(f"error: {len(data)} images: {need}", file=sys.stderr)
        return 1
    parent = load_model()
    native = [s for _, img, lab in train for s in samples_from_arrays(img, lab, parent, axes="YX")]
    diam = median_object_diameter(native)
    zoom = parent.card.get("object_diameter", 20.0) / diam
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {args.threads}")
    print(f"data {args.data.name}: train {[n for n, *_ in train]}, test {[n for n, *_ in test]}")
    print(f"median object diameter {diam:.1f} px; working-scale zoom {zoom:.3f}")
    f1, iou, fg = score(parent, test, None)
    print(f"{'parent, no training':28s} F1 {f1:.3f}  IoU {iou:.3f}  fg IoU {fg:.3f}")
    strong_steps, strong_anchor = ft.STRONG_START_STEPS, ft.STRONG_START_ANCHOR
    for variant in args.variants.split(","):
        tokens = variant.split("+")
        scaled = "scale" in tokens
        target = next((float(t[5:]) for t in tokens if t.startswith("diam=")), None)
        ws.trained_diameter = (lambda _m, d=target: d) if target else trained_diameter
        overrides = dict(_override(t) for t in tokens if "=" in t and not t.startswith("diam="))
        ft.STRONG_START_STEPS = 10**9 if "free" in tokens else strong_steps
        ft.STRONG_START_ANCHOR = 0.0 if "free" in tokens else strong_anchor
        cfg = replace(
            FINETUNE_DEFAULTS,
            steps=args.steps,
            time_budget=None,
            seed=args.seed,
            working_scale=scaled,
            adapt_batchnorm="bn" in tokens,
            calibrate_postprocess="cal" in tokens,
        )
        cfg = replace(cfg, **overrides)
        start = parent
        if "scratch" in variant:
            torch.manual_seed(args.seed)
            start = Model(UNet(parent.config), dict(parent.card))
            cfg = replace(cfg, freeze_batchnorm=False, **overrides)
        t0 = time.perf_counter()
        gen = iter_finetune(start, native, cfg, device="cpu")
        losses = []
        try:
            while True:
                losses.append(next(gen).loss)
        except StopIteration as done:
            tuned = done.value
        secs = time.perf_counter() - t0
        f1, iou, fg = score(tuned, test, None)  # the card's working scale applies by itself
        tenth = max(1, len(losses) // 10)
        curve = " ".join(f"{np.mean(losses[i : i + tenth]):.3f}" for i in range(0, len(losses), tenth))
        m = tuned.card.get("metrics") or {}
        held = f"held-back F1 {m['heldout_f1_before']:.2f}->{m['heldout_f1_after']:.2f}, " if m else ""
        print(
            f"{variant:28s} F1 {f1:.3f}  IoU {iou:.3f}  fg IoU {fg:.3f}  {secs:.0f} s  "
            f"{held}{len(losses)} steps  loss: {curve}"
        )
        if "cal" in variant:
            print(f"{'':28s} thresholds: {tuned.card['finetune'].get('postprocess')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
