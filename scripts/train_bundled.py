"""Train the bundled nuclei model on DSB 2018 (BBBC038) fluorescence nuclei.

Reproduce the shipped weights with:

    python scripts/train_bundled.py --data ../shared/data/dsb2018-train --time-budget 5400 \
        --out src/napari_unet/models/weights/nuclei.pt

The data path may also come from NAPARI_UNET_DSB. The validation split holds out whole
experiments (every image of the size groups 256x320, 260x347, 512x640 and 603x1272),
never random tiles of an experiment seen in training, so the reported F1 is honest.
A checkpoint and its validation F1 are written every ``--val-every`` seconds; the
checkpoint with the best F1 is kept.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import tifffile
import torch
from skimage.io import imread

from napari_unet.engine.metrics import Matching, match
from napari_unet.engine.normalize import normalize
from napari_unet.engine.postprocess import PostprocessParams, instances_from_classes
from napari_unet.models.model_file import Model
from napari_unet.models.unet import UNet, UNetConfig
from napari_unet.training.loop import TrainConfig, iter_train
from napari_unet.training.sample import Sample
from napari_unet.training.targets import TARGET_NAME

VAL_GROUPS = {(256, 320), (260, 347), (512, 640), (603, 1272)}
NORM = (1.0, 99.8)


def load_dsb(
    root: Path,
) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], list[tuple[str, np.ndarray, np.ndarray]]]:
    train, val = [], []
    with open(root / "index.csv") as fh:
        for row in csv.DictReader(fh):
            img = imread(root / "images" / f"{row['id']}.png")
            if img.ndim == 3:
                img = img[..., 0]
            lab = tifffile.imread(root / "masks" / f"{row['id']}.tif").astype(np.int32)
            group = (int(row["height"]), int(row["width"]))
            (val if group in VAL_GROUPS else train).append((row["id"], img, lab))
    return train, val


@torch.inference_mode()
def predict_whole(net: UNet, image: np.ndarray) -> np.ndarray:
    """Softmax probabilities of a whole normalised 2D image (mirror-padded to the net's multiple)."""
    m = net.multiple
    h, w = image.shape
    ph, pw = (-h) % m, (-w) % m
    x = np.pad(image, ((0, ph), (0, pw)), mode="reflect")
    t = torch.from_numpy(x)[None, None].contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(t)
    return torch.softmax(out.float(), 1)[0, :, :h, :w].numpy()


def evaluate(net: UNet, data, params: PostprocessParams = PostprocessParams()) -> tuple[float, dict]:
    net.eval()
    total = Matching(0, 0, 0)
    per_group: dict[str, Matching] = {}
    for _, img, lab in data:
        probs = predict_whole(net, normalize(img, *NORM))
        pred = instances_from_classes(probs, params)
        m = match(lab, pred, 0.5)
        total = total + m
        key = f"{lab.shape[0]}x{lab.shape[1]}"
        per_group[key] = per_group.get(key, Matching(0, 0, 0)) + m
    return total.f1, {k: round(v.f1, 4) for k, v in per_group.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("NAPARI_UNET_DSB"), help="dsb2018-train folder")
    ap.add_argument("--out", default="src/napari_unet/models/weights/nuclei.pt")
    ap.add_argument("--time-budget", type=float, default=5400.0)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--val-every", type=float, default=600.0, help="seconds between validations")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if not args.data or not Path(args.data, "index.csv").is_file():
        print("error: give --data or NAPARI_UNET_DSB: the dsb2018-train folder", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train, val = load_dsb(Path(args.data))
    print(f"train {len(train)} images, validation {len(val)} images", flush=True)
    groups: dict[tuple[int, int], int] = {}
    for _, img, _ in train:
        groups[img.shape[:2]] = groups.get(img.shape[:2], 0) + 1
    samples = [
        Sample(normalize(img, *NORM), lab, weight=1.0 / np.sqrt(groups[img.shape[:2]]) / lab.size)
        for _, img, lab in train
    ]
    config = UNetConfig(in_channels=1, out_channels=3, base=args.base, depth=args.depth)
    model = Model(UNet(config))
    cfg = TrainConfig(
        steps=args.steps,
        time_budget=args.time_budget,
        batch_size=args.batch_size,
        crop=args.crop,
        lr=args.lr,
        warmup=100,
        seed=args.seed,
    )
    out = Path(args.out)
    log = out.with_suffix(".log.jsonl")
    log.parent.mkdir(parents=True, exist_ok=True)
    best_f1, best_state, best_groups, best_step = -1.0, None, {}, 0
    next_val = args.val_every
    losses: list[float] = []
    t0 = time.perf_counter()
    last = None
    with open(log, "w") as logfh:
        gen = iter_train(model, samples, cfg, device="cpu")
        for st in gen:
            last = st
            losses.append(st.loss)
            if st.step % 50 == 0:
                print(
                    f"step {st.step} loss {np.mean(losses[-50:]):.4f} lr {st.lr:.2e} "
                    f"{st.steps_per_second:.2f} steps/s {st.elapsed:.0f}s",
                    flush=True,
                )
            if st.elapsed >= next_val:
                next_val += args.val_every
                f1, per = evaluate(model.net, val)
                model.net.train()
                rec = {
                    "step": st.step,
                    "elapsed": round(st.elapsed),
                    "loss": float(np.mean(losses[-100:])),
                    "val_f1": round(f1, 4),
                    "groups": per,
                }
                print(json.dumps(rec), flush=True)
                logfh.write(json.dumps(rec) + "\n")
                logfh.flush()
                if f1 > best_f1:
                    best_f1, best_groups, best_step = f1, per, st.step
                    best_state = {k: v.detach().clone() for k, v in model.net.state_dict().items()}
                    _save(
                        model,
                        best_state,
                        out.with_suffix(".best.pt"),
                        args,
                        best_f1,
                        best_groups,
                        best_step,
                        st.elapsed,
                        len(train),
                        len(val),
                    )
        f1, per = evaluate(model.net, val)
        rec = {
            "step": last.step,
            "elapsed": round(last.elapsed),
            "val_f1": round(f1, 4),
            "groups": per,
            "final": True,
        }
        print(json.dumps(rec), flush=True)
        logfh.write(json.dumps(rec) + "\n")
    last_state = {k: v.detach().clone() for k, v in model.net.state_dict().items()}
    seconds = time.perf_counter() - t0
    # the last weights too: they may generalise better than the best-on-validation ones
    _save(
        model,
        last_state,
        out.with_suffix(".last.pt"),
        args,
        f1,
        per,
        last.step,
        seconds,
        len(train),
        len(val),
    )
    if f1 >= best_f1:
        best_f1, best_groups, best_step = f1, per, last.step
        best_state = {k: v.detach().clone() for k, v in model.net.state_dict().items()}
    _save(
        model,
        best_state,
        out,
        args,
        best_f1,
        best_groups,
        best_step,
        time.perf_counter() - t0,
        len(train),
        len(val),
    )
    print(f"saved {out} (validation F1@0.5 {best_f1:.4f} at step {best_step})")
    return 0


def _save(model, state, path, args, f1, groups, step, seconds, n_train, n_val) -> None:
    net = UNet(model.config)
    net.load_state_dict(state)
    card = {
        "name": "nuclei",
        "description": "Fluorescence nuclei (2D), U-Net with background/interior/boundary output.",
        "architecture": "U-Net (Ronneberger et al. 2015) with batch norm, 'same' padding",
        "target": TARGET_NAME,
        "normalization": {"method": "percentile", "low": NORM[0], "high": NORM[1]},
        "postprocess": {"threshold": 0.5, "seed_threshold": 0.5, "min_size": 15},
        "training": {
            "command": "python scripts/train_bundled.py " + " ".join(sys.argv[1:]),
            "data": "DSB 2018 stage-1 (BBBC038v1) grayscale fluorescence nuclei, CC0, "
            f"{n_train} training images",
            "validation": f"{n_val} held-out images of unseen experiments (size groups "
            + ", ".join(f"{h}x{w}" for h, w in sorted(VAL_GROUPS))
            + ")",
            "steps": step,
            "seconds": round(seconds),
            "batch_size": args.batch_size,
            "crop": args.crop,
            "lr": args.lr,
            "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}",
        },
        "metrics": {"val_f1_iou50": round(f1, 4), "val_f1_iou50_by_group": groups},
        "parent": None,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    Model(net, card).save(path, half=True)


if __name__ == "__main__":
    raise SystemExit(main())
