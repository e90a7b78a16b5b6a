"""Fine-tuning where the new data resembles the old: real nuclei the bundled model does poorly on.

    python benchmarks/bench_finetune_similar.py --data ../shared/data/dsb2018-train [--group 512x640]
        [--budget 120] [--train 2] [--threads 2]

The DSB 2018 size groups in ``scripts/train_bundled.VAL_GROUPS`` were never trained on. Within one
group (one experiment: same microscope, same kind of nuclei), the first ``--train`` images (by id)
are the user's "corrected annotation" and the others are the test set. For the same wall-clock
budget it compares the bundled model as it is, ``iter_finetune`` from the bundled model and the
same recipe from random weights. Prints object F1 at IoU 0.5 on the test images (through the
public ``segment`` with the model card's post-processing), steps/s, the loss by tenth of the
budget and the machine. The data is not part of the repository (``--data`` or ``NAPARI_UNET_DSB``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_finetune import curve_text, run, seconds_to
from napari_unet.engine.metrics import Matching, match
from napari_unet.engine.predict import segment
from napari_unet.models.model_file import Model
from napari_unet.models.registry import load_model
from napari_unet.models.unet import UNet
from napari_unet.training.annotations import samples_from_arrays
from napari_unet.training.finetune import FINETUNE_DEFAULTS, iter_finetune
from train_bundled import VAL_GROUPS, load_dsb


def f1(model: Model, data: list[tuple[str, np.ndarray, np.ndarray]]) -> float:
    total = Matching(0, 0, 0)
    for _, img, lab in data:
        total = total + match(lab, segment(img, model=model, axes="YX", device="cpu"), 0.5)
    return total.f1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=os.environ.get("NAPARI_UNET_DSB"))
    ap.add_argument("--group", default="512x640", help="held-out size group HxW")
    ap.add_argument("--train", type=int, default=2, help="images of the group used as annotation")
    ap.add_argument("--budget", type=float, default=120.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.data is None or not (args.data / "index.csv").is_file():
        print("give --data DSB_FOLDER (or NAPARI_UNET_DSB); the data is not in the repository")
        return 2
    group = tuple(int(v) for v in args.group.lower().split("x"))
    if group not in VAL_GROUPS:
        print(f"--group must be a held-out group: {sorted(VAL_GROUPS)}")
        return 2
    torch.set_num_threads(args.threads)
    _, val = load_dsb(args.data)
    data = sorted((d for d in val if d[1].shape == group), key=lambda d: d[0])
    train, test = data[: args.train], data[args.train :]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
        f"{args.threads} threads; group {args.group}: {len(train)} annotated, {len(test)} test images; "
        f"budget {args.budget:g} s",
        flush=True,
    )
    parent = load_model()
    print(f"{'bundled, no training':22s} test F1 {f1(parent, test):.3f}", flush=True)
    samples = []
    for name, img, lab in train:
        samples += samples_from_arrays(img, lab, parent, source=name[:8])
    cfg = replace(FINETUNE_DEFAULTS, time_budget=args.budget, seed=args.seed)
    for cond in ("fine-tune", "same recipe, scratch"):
        torch.manual_seed(args.seed)
        start = parent if cond == "fine-tune" else Model(UNet(parent.config), dict(parent.card))
        t0 = time.perf_counter()
        model, curve = run(iter_finetune(start, samples, cfg, device="cpu"))
        wall = time.perf_counter() - t0
        rate = len(curve) / max(curve[-1][0], 1e-9) if curve else 0.0
        print(
            f"{cond:22s} test F1 {f1(model, test):.3f}  {len(curve)} steps {rate:.2f} steps/s  "
            f"wall {wall:.0f} s",
            flush=True,
        )
        print(f"{'':22s} loss by tenth of the budget: {curve_text(curve, args.budget)}")
        print(f"{'':22s} seconds to a mean loss of 0.3: {seconds_to(curve, 0.3)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
