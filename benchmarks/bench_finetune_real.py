"""Fine-tuning on real images of several kinds: the default recipe against training from scratch.

    python benchmarks/bench_finetune_real.py --data ../shared/data \\
        [--datasets phase,em,nuclei] [--budgets 30,60,120,300] [--starts bundled,scratch] \\
        [--annotations dense,half] [--seeds 0,1] [--train 2] [--test 4] [--threads 2]

For every dataset x time budget x start x annotation x seed, the public ``finetune`` runs with
the defaults on the first ``--train`` images and the result segments the next ``--test`` images
of the same set through the public ``segment`` (no diameter given: the card's working scale
applies by itself). It prints F1@0.5 and the pixel IoU of the labels (foreground vs foreground)
per run and one table of means over the seeds.

* ``start``: ``bundled`` fine-tunes the bundled nuclei model (``start="parent"``); ``scratch``
  trains the same architecture from random weights with the same recipe (``start="scratch"``).
  The default, ``start="auto"``, picks one of the two by the rule of
  :func:`napari_unet.training.finetune.start_from_scratch` (the parent's held-out F1 before
  training and the number of steps the budget allows); each run's line says which it would pick.
* ``annotation``: ``dense`` gives whole corrected images; ``half`` labels only the top half of
  every training image and marks the bottom half with the ignore label.
* datasets (folders under ``--data``, not part of the repository): ``phase`` =
  ``usiigaci-phase-dev`` (phase-contrast cells, ~70 px), ``em`` = ``isbi2012-em-dev`` (EM cell
  profiles), ``nuclei`` = the 512x640 experiment of ``dsb2018-train``, one of the bundled model's
  held-out validation experiments and the one with the largest nuclei (~40 px; the bundled
  model's validation F1 there is 0.65).

Budgets are seconds of wall-clock training, as a user waits them: run it on an otherwise idle
machine. ``--steps`` replaces them with step counts for a reproducible comparison.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile
import torch

import napari_unet
from napari_unet.engine.metrics import Matching, match
from napari_unet.models.model_file import Model
from napari_unet.models.registry import load_model
from napari_unet.training.finetune import FINETUNE_DEFAULTS, start_from_scratch
from napari_unet.training.holdout import HeldOutScore

DATASETS = {
    "phase": ("usiigaci-phase-dev", None),
    "em": ("isbi2012-em-dev", None),
    "nuclei": ("dsb2018-train", (512, 640)),
}


def read(path: Path) -> np.ndarray:
    return tifffile.imread(path) if path.suffix.lower() in (".tif", ".tiff") else iio.imread(path)


def load(folder: Path, group: tuple[int, int] | None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, 2D image, instance labels) for every image of ``folder`` (of one HxW if given)."""
    out = []
    for img_path in sorted((folder / "images").iterdir()):
        img = read(img_path)
        if img.ndim == 3:
            img = img[..., 0] if img.shape[-1] in (3, 4) else img[0]
        if group is not None and img.shape != group:
            continue
        mask = next((folder / "masks").glob(img_path.stem + ".*"))
        out.append((img_path.stem, img, read(mask).astype(np.int32)))
    return out


def half_annotated(labels: np.ndarray, ignore: int) -> np.ndarray:
    """The labels with the bottom half marked as not annotated."""
    out = labels.copy()
    out[labels.shape[0] // 2 :] = ignore
    return out


def score(model: Model, test: list) -> tuple[float, float]:
    """Object F1@0.5 and pixel IoU of the foreground over all ``test`` images."""
    total = Matching(0, 0, 0)
    inter = union = 0
    for _, img, lab in test:
        pred = napari_unet.segment(img, model=model, axes="YX", device="cpu")
        total = total + match(lab, pred, 0.5)
        inter += int(np.sum((pred > 0) & (lab > 0)))
        union += int(np.sum((pred > 0) | (lab > 0)))
    return total.f1, inter / max(union, 1)


@dataclass
class Run:
    dataset: str
    budget: float
    start: str
    annotation: str
    seed: int
    f1: float
    iou: float
    steps: int
    best_step: int
    heldout: str
    seconds: float
    default_picks: str


def one_run(
    parent: Model,
    name: str,
    train: list,
    test: list,
    budget: float,
    start: str,
    annotation: str,
    seed: int,
    by_steps: bool,
) -> Run:
    config = replace(FINETUNE_DEFAULTS, start="scratch" if start == "scratch" else "parent")
    images = [img for _, img, _ in train]
    ignore = None
    labels = [lab for _, _, lab in train]
    if annotation == "half":
        ignore = int(max(lab.max() for lab in labels)) + 1
        labels = [half_annotated(lab, ignore) for lab in labels]
    t0 = time.perf_counter()
    tuned = napari_unet.finetune(
        parent,
        images,
        labels,
        axes="YX",
        ignore_label=ignore,
        device="cpu",
        seed=seed,
        config=config,
        time_budget=None if by_steps else budget,
        steps=int(budget) if by_steps else None,
    )
    seconds = time.perf_counter() - t0
    ft = tuned.card.get("finetune", {})
    metrics = tuned.card.get("metrics", {})
    nan = float("nan")
    heldout = f"{metrics.get('heldout_f1_before', nan):.2f}->{metrics.get('heldout_f1_after', nan):.2f}"
    f1, iou = score(tuned, test)
    picks = ""
    if "heldout_f1_before" in metrics:  # what the default (start="auto") does with this parent
        before = HeldOutScore(
            metrics["heldout_loss_before"], metrics["heldout_f1_before"], metrics["heldout_objects"]
        )
        steps = int(ft.get("steps", 0))  # the run's own pace stands for the default's estimate
        picks = "scratch" if start_from_scratch(FINETUNE_DEFAULTS, before, steps) else "bundled"
    return Run(
        name,
        budget,
        start,
        annotation,
        seed,
        f1,
        iou,
        int(ft.get("steps", 0)),
        int(ft.get("best_step", 0)),
        heldout,
        seconds,
        picks,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder holding the dev sets")
    ap.add_argument("--datasets", default="phase,em,nuclei")
    ap.add_argument("--budgets", default="30,60,120,300")
    ap.add_argument("--steps", action="store_true", help="budgets are step counts, not seconds")
    ap.add_argument("--starts", default="bundled,scratch")
    ap.add_argument("--annotations", default="dense,half")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--train", type=int, default=2)
    ap.add_argument("--test", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    parent = load_model()
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} threads; napari-unet {napari_unet.__version__}"
    )
    runs: list[Run] = []
    for name in args.datasets.split(","):
        folder, group = DATASETS[name]
        data = load(args.data / folder, group)
        train, test = data[: args.train], data[args.train : args.train + args.test]
        f1, iou = score(parent, test)
        print(
            f"\n{name}: train {[n for n, *_ in train]}, test {[n for n, *_ in test]}; "
            f"bundled model, no training: F1 {f1:.3f} IoU {iou:.3f}",
            flush=True,
        )
        for budget in (float(b) for b in args.budgets.split(",")):
            for start in args.starts.split(","):
                for annotation in args.annotations.split(","):
                    for seed in (int(s) for s in args.seeds.split(",")):
                        r = one_run(parent, name, train, test, budget, start, annotation, seed, args.steps)
                        runs.append(r)
                        print(
                            f"  {name:6s} {budget:5.0f} {start:8s} {annotation:5s} seed {seed}: "
                            f"F1 {r.f1:.3f} IoU {r.iou:.3f}  steps {r.steps} (best {r.best_step}) "
                            f"held-out F1 {r.heldout}  {r.seconds:.0f} s",
                            flush=True,
                        )
    unit = "steps" if args.steps else "s"
    print(f"\n| dataset | budget ({unit}) | start | annotation | F1@0.5 | pixel IoU | seeds |")
    print("|---|---|---|---|---|---|---|")
    keys = sorted(
        {(r.dataset, r.budget, r.start, r.annotation) for r in runs},
        key=lambda k: (list(DATASETS).index(k[0]), k[1], k[2], k[3]),
    )
    for key in keys:
        sel = [r for r in runs if (r.dataset, r.budget, r.start, r.annotation) == key]
        f1s, ious = [r.f1 for r in sel], [r.iou for r in sel]
        spread = f" (±{statistics.pstdev(f1s):.3f})" if len(sel) > 1 else ""
        print(
            f"| {key[0]} | {key[1]:.0f} | {key[2]} | {key[3]} | {np.mean(f1s):.3f}{spread} | "
            f"{np.mean(ious):.3f} | {len(sel)} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
