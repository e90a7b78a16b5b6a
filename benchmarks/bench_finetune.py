"""Fine-tuning on a modality the nuclei model has never seen: before/after F1 for one time budget.

    python benchmarks/bench_finetune.py [--budget 120] [--model nuclei] [--threads 2]
        [--conditions scratch-plain,ft-plain,ft,scratch-ft] [--lrs 5e-4]

The case: synthetic EM-like membrane images (Voronoi cells with dark wavy membranes, granular
cytoplasm, dark mitochondria-like organelles, blur and noise), ground truth = the cells. Two
512x512 images are the "corrected annotation", two others are the test set. For the same
wall-clock budget it compares

* ``scratch-plain``: random weights, the plain from-scratch recipe (Adam(W) 1e-3, 256 crops,
  batch 8, 50-step warm-up, cosine over the budget; ``iter_train``);
* ``ft-plain``: the same plain recipe starting from the nuclei model;
* ``ft``: ``iter_finetune`` with its defaults (``FINETUNE_DEFAULTS``) from the nuclei model;
* ``scratch-ft``: ``iter_finetune``'s defaults from random weights.

Printed per condition: steps, steps/s, the loss curve (mean loss in each tenth of the budget),
and on the test images object F1 at IoU 0.5 and foreground pixel IoU, through the public
``segment`` with the model card's post-processing. Also prints the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import replace

import numpy as np
import torch
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from skimage.segmentation import find_boundaries

from napari_unet.engine.metrics import Matching, match
from napari_unet.engine.predict import segment
from napari_unet.models.model_file import Model
from napari_unet.models.registry import load_model
from napari_unet.models.unet import UNet
from napari_unet.training.annotations import samples_from_arrays
from napari_unet.training.finetune import FINETUNE_DEFAULTS, iter_finetune
from napari_unet.training.loop import TrainConfig, iter_train


def membranes(size: int = 512, cell: float = 44.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An EM-like image (uint8) of cells separated by dark membranes, and the cells' labels."""
    rng = np.random.default_rng(seed)
    n = int(size / cell) + 2
    gy, gx = np.mgrid[-1:n, -1:n].astype(np.float64) * cell
    pts = np.stack([gy.ravel(), gx.ravel()], 1) + rng.uniform(-0.38, 0.38, (gy.size, 2)) * cell
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    warp = [ndi.gaussian_filter(rng.standard_normal((size, size)), 12) for _ in range(2)]
    warp = [w / w.std() * 5.0 for w in warp]
    _, idx = cKDTree(pts).query(np.stack([(yy + warp[0]).ravel(), (xx + warp[1]).ravel()], 1))
    lab = (idx.reshape(size, size) + 1).astype(np.int32)
    membrane = ndi.binary_dilation(find_boundaries(lab, mode="thick"), iterations=1)
    lab[membrane] = 0
    # cytoplasm: per-cell grey level with granular texture
    level = rng.uniform(0.5, 0.75, lab.max() + 1)
    img = level[lab] + 0.07 * ndi.gaussian_filter(rng.standard_normal((size, size)), 1.5) / 0.19
    # organelles: dark mitochondria-like ellipses and small vesicles
    for _ in range(int(size * size / 900)):
        cy, cx = rng.uniform(0, size, 2)
        a, b = rng.uniform(5, 12), rng.uniform(2, 4)
        th = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dy * np.cos(th) + dx * np.sin(th)) / a
        v = (-dy * np.sin(th) + dx * np.cos(th)) / b
        inside = u**2 + v**2 < 1
        img[inside] = np.minimum(img[inside], rng.uniform(0.2, 0.35))
    img[membrane] = rng.uniform(0.05, 0.15)
    img = ndi.gaussian_filter(img, 1.0) + rng.normal(0, 0.05, img.shape)
    return np.clip(img * 255, 0, 255).astype(np.uint8), lab


def scores(model: Model, data: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """(object F1 at IoU 0.5, foreground pixel IoU) over the test images."""
    total, inter, union = Matching(0, 0, 0), 0, 0
    for img, lab in data:
        pred = segment(img, model=model, axes="YX", device="cpu")
        total = total + match(lab, pred, 0.5)
        inter += int(((pred > 0) & (lab > 0)).sum())
        union += int(((pred > 0) | (lab > 0)).sum())
    return total.f1, inter / max(union, 1)


def run(gen) -> tuple[Model, list[tuple[float, float]]]:
    curve = []
    while True:
        try:
            st = next(gen)
        except StopIteration as done:
            return done.value, curve
        curve.append((st.elapsed, st.loss))


def curve_text(curve: list[tuple[float, float]], budget: float) -> str:
    bins: list[list[float]] = [[] for _ in range(10)]
    for t, loss in curve:
        bins[min(9, int(10 * t / budget))].append(loss)
    return " ".join(f"{np.mean(b):.3f}" if b else "-" for b in bins)


def seconds_to(curve: list[tuple[float, float]], target: float, window: int = 10) -> str:
    """When the mean loss over ``window`` steps first fell to ``target`` (the curve is noisy)."""
    for i in range(window, len(curve) + 1):
        if np.mean([loss for _, loss in curve[i - window : i]]) <= target:
            return f"{curve[i - 1][0]:.0f} s"
    return "not reached"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=120.0)
    ap.add_argument("--model", default=None, help="model to fine-tune (default: bundled nuclei)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--conditions", default="scratch-plain,ft-plain,ft,scratch-ft")
    ap.add_argument("--lr", type=float, default=None, help="override the fine-tune default lr")
    ap.add_argument("--crop", type=int, default=None, help="override the fine-tune default crop")
    ap.add_argument("--bn", choices=["default", "train", "frozen"], default="default", help="BatchNorm mode")
    ap.add_argument(
        "--invert", action="store_true", help="bright membranes on dark cells (membrane-stain look)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target-loss", type=float, default=0.3, help="report seconds to this mean loss")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cpus, "
        f"torch {torch.__version__}, {args.threads} threads, budget {args.budget:g} s, "
        f"{'bright' if args.invert else 'dark'} membranes",
        flush=True,
    )
    train = [membranes(seed=s) for s in (1, 2)]
    test = [membranes(seed=s) for s in (11, 12)]
    if args.invert:
        train = [(255 - img, lab) for img, lab in train]
        test = [(255 - img, lab) for img, lab in test]
    parent = load_model(args.model)
    f1, iou = scores(parent, test)
    print(f"{'nuclei, no training':28s} test F1 {f1:.3f}  pixel IoU {iou:.3f}", flush=True)

    samples = []
    for i, (img, lab) in enumerate(train):
        samples += samples_from_arrays(img, lab, parent, source=f"train{i}")
    plain = TrainConfig(steps=None, time_budget=args.budget, lr=1e-3, crop=256, batch_size=8, seed=args.seed)
    ours = replace(FINETUNE_DEFAULTS, time_budget=args.budget, seed=args.seed)
    if args.lr:
        ours = replace(ours, lr=args.lr)
    if args.crop:
        ours = replace(ours, crop=args.crop)
    if args.bn != "default":
        ours = replace(ours, freeze_batchnorm=args.bn == "frozen")

    def scratch() -> Model:
        torch.manual_seed(args.seed)
        return Model(UNet(parent.config), dict(parent.card, name="scratch"))

    for cond in args.conditions.split(","):
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        if cond == "scratch-plain":
            start = scratch()
            model, curve = run(iter_train(start, samples, plain, device="cpu"))
        elif cond == "ft-plain":
            model, curve = run(iter_train(parent.copy(), samples, plain, device="cpu"))
        elif cond == "ft":
            model, curve = run(iter_finetune(parent, samples, ours, device="cpu"))
        elif cond == "scratch-ft":
            model, curve = run(iter_finetune(scratch(), samples, ours, device="cpu"))
        else:
            print(f"unknown condition {cond}", file=sys.stderr)
            return 2
        wall = time.perf_counter() - t0
        f1, iou = scores(model, test)
        steps = len(curve)
        extra = ""
        ft = model.card.get("finetune")
        if ft:
            m = model.card.get("metrics") or {}
            extra = (
                f"  held-out F1 {m.get('heldout_f1_before', float('nan')):.3f} -> "
                f"{m.get('heldout_f1_after', float('nan')):.3f} (best step {ft['best_step']})"
            )
        print(
            f"{cond:28s} test F1 {f1:.3f}  pixel IoU {iou:.3f}  {steps} steps "
            f"{steps / max(curve[-1][0], 1e-9) if curve else 0:.2f} steps/s  wall {wall:.0f} s{extra}",
            flush=True,
        )
        print(f"{'':28s} loss by tenth of the budget: {curve_text(curve, args.budget)}", flush=True)
        reached = seconds_to(curve, args.target_loss)
        print(f"{'':28s} seconds to a mean loss of {args.target_loss:g}: {reached}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
