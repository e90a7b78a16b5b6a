"""Train the bundled nuclei model on DSB 2018 (BBBC038) fluorescence nuclei.

Reproduce the shipped weights with the command recorded in the model card (``training.command``;
its ``parent`` names the weights a warm start began from), e.g.

    python scripts/train_bundled.py --data ../shared/data/dsb2018-train --time-budget 5400 \
        --out src/napari_unet/models/weights/nuclei.pt

The data path may also come from NAPARI_UNET_DSB. Three splits, by image, never by tile:
- training: every image is resized so that its nuclei's median diameter is 20 px (the scale the
  object-size estimate brings any image to at inference; ``--native-scale`` turns this off);
- tuning: a tenth of each training size group, held back: the checkpoint and the
  post-processing defaults are chosen on it;
- held-out experiments (every image of the size groups 256x320, 260x347, 512x640, 603x1272):
  logged at every validation (to see why a run plateaus) but never used for a choice, so the
  figures reported on them are honest.
"""

from __future__ import annotations

import argparse
import csv
import itertools
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

from napari_unet.engine.devices import autocast_dtype
from napari_unet.engine.metrics import Matching, match
from napari_unet.engine.normalize import normalize
from napari_unet.engine.object_size import equivalent_diameters
from napari_unet.engine.postprocess import PostprocessParams, instances_from_classes
from napari_unet.models.model_file import Model
from napari_unet.models.unet import UNet, UNetConfig
from napari_unet.training.loop import TrainConfig, iter_train
from napari_unet.training.sample import Sample
from napari_unet.training.targets import TARGET_NAME
from napari_unet.training.working_scale import rescale_samples

VAL_GROUPS = {(256, 320), (260, 347), (512, 640), (603, 1272)}
NORM = (1.0, 99.8)
REFERENCE_DIAMETER = 20.0  # px: every training image is brought to nuclei of this median diameter
ZOOM_LIMITS = (0.4, 2.5)  # a mask's median size outside these zooms is more likely an odd mask
TUNE_FRACTION = 0.1  # of each training size group: checkpoint and post-processing choice
POSTPROCESS_GRID = {
    "threshold": (0.4, 0.5, 0.6),
    "seed_threshold": (0.5, 0.6, 0.7, 0.8),
    "min_size": (15, 30, 60),
    "split_depth": (0.0, 0.5, 1.0, 1.5, 2.0),
}


def postprocess_grid() -> list[PostprocessParams]:
    """Every post-processing candidate of ``POSTPROCESS_GRID`` (the order ties are broken in)."""
    names = list(POSTPROCESS_GRID)
    return [
        PostprocessParams(**dict(zip(names, values, strict=True)))
        for values in itertools.product(*POSTPROCESS_GRID.values())
    ]


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
    dtype = autocast_dtype(torch.device("cpu"))
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        out = net(t)
    return torch.softmax(out.float(), 1)[0, :, :h, :w].numpy()


def split_tuning(
    train: list[tuple[str, np.ndarray, np.ndarray]], fraction: float, seed: int
) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], list[tuple[str, np.ndarray, np.ndarray]]]:
    """Hold back ``fraction`` of each training size group (whole images) for the choices.

    The checkpoint and the post-processing defaults are chosen on these images, so the held-out
    experiments (``VAL_GROUPS``) play no part in any choice and their figures stay honest.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (_, img, _) in enumerate(train):
        groups.setdefault(img.shape[:2], []).append(i)
    rng = np.random.default_rng(seed)
    held: set[int] = set()
    for idx in groups.values():
        k = max(1, round(fraction * len(idx))) if fraction > 0 else 0
        held.update(rng.permutation(idx)[:k].tolist())
    keep = [t for i, t in enumerate(train) if i not in held]
    return keep, [t for i, t in enumerate(train) if i in held]


def median_diameter(labels: np.ndarray) -> float | None:
    """Median equivalent diameter (px) of the objects in ``labels``; None without objects."""
    diameters = equivalent_diameters(labels)
    return float(np.median(diameters)) if diameters.size else None


def to_reference(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """An image and its labels resized so that its nuclei have ``REFERENCE_DIAMETER``.

    The training images hold nuclei of 8-60 px; at inference the object-size estimate brings
    every image to the model's scale, so the net's capacity is better spent on one scale (plus
    the zoom augmentation around it) than on the data's accidental spread. Returns the zoom.
    """
    d = median_diameter(labels)
    if d is None:
        return image, labels, 1.0
    zoom = float(np.clip(REFERENCE_DIAMETER / d, *ZOOM_LIMITS))
    if abs(zoom - 1.0) < 0.05:
        return image, labels, 1.0
    (s,) = rescale_samples([Sample(image.astype(np.float32), labels)], zoom)
    return s.image[0], s.labels, zoom


def evaluate(
    net: UNet, data, params: PostprocessParams = PostprocessParams(), keep_probs: bool = False
) -> tuple[float, dict, list[np.ndarray]]:
    """F1@0.5 over ``data`` (and per size group); the probabilities too when asked (grid scans)."""
    net.eval()
    total = Matching(0, 0, 0)
    per_group: dict[str, Matching] = {}
    kept = []
    for _, img, lab, group in data:
        probs = predict_whole(net, normalize(img, *NORM))
        if keep_probs:
            kept.append(probs)
        pred = instances_from_classes(probs, params)
        m = match(lab, pred, 0.5)
        total = total + m
        key = f"{group[0]}x{group[1]}"
        per_group[key] = per_group.get(key, Matching(0, 0, 0)) + m
    return total.f1, {k: round(v.f1, 4) for k, v in per_group.items()}, kept


def choose_postprocess(probs: list[np.ndarray], data) -> tuple[PostprocessParams, float]:
    """The grid point with the best F1@0.5 on the tuning images (ties: the first in grid order)."""
    best, best_f1 = PostprocessParams(), -1.0
    for pp in postprocess_grid():
        m = Matching(0, 0, 0)
        for p, (_, _, lab, _) in zip(probs, data, strict=True):
            m = m + match(lab, instances_from_classes(p, pp))
        if m.f1 > best_f1:
            best, best_f1 = pp, m.f1
    return best, best_f1


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
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--val-every", type=float, default=600.0, help="seconds between validations")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--init", default=None, help="start from this model file's weights (a warm start)")
    ap.add_argument(
        "--native-scale",
        action="store_true",
        help="train on the images as they are (default: each brought to nuclei of 20 px)",
    )
    ap.add_argument("--tune-fraction", type=float, default=TUNE_FRACTION)
    args = ap.parse_args(argv)
    if not args.data or not Path(args.data, "index.csv").is_file():
        print("error: give --data or NAPARI_UNET_DSB: the dsb2018-train folder", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train, val = load_dsb(Path(args.data))
    train, tune = split_tuning(train, args.tune_fraction, args.seed)
    print(f"train {len(train)} images, tuning {len(tune)}, held-out experiments {len(val)}", flush=True)

    def prepared(data):
        out = []
        for name, img, lab in data:
            group = img.shape[:2]
            if not args.native_scale:
                img, lab, _ = to_reference(img, lab)
            out.append((name, img, lab, group))
        return out

    train_s, tune_s, val_s = prepared(train), prepared(tune), prepared(val)
    groups: dict[tuple[int, int], int] = {}
    for *_, group in train_s:
        groups[group] = groups.get(group, 0) + 1
    samples = [
        Sample(normalize(img, *NORM), lab, weight=1.0 / np.sqrt(groups[group]) / lab.size)
        for _, img, lab, group in train_s
    ]
    if args.init:
        model = Model.load(args.init)
        parent = f"{model.name} ({Path(args.init).name}, created {model.card.get('created')})"
    else:
        model = Model(UNet(UNetConfig(in_channels=1, out_channels=3, base=args.base, depth=args.depth)))
        parent = None
    cfg = TrainConfig(
        steps=args.steps,
        time_budget=args.time_budget,
        batch_size=args.batch_size,
        crop=args.crop,
        lr=args.lr,
        warmup=args.warmup,
        seed=args.seed,
    )
    out = Path(args.out)
    log = out.with_suffix(".log.jsonl")
    log.parent.mkdir(parents=True, exist_ok=True)
    losses: list[float] = []
    t0 = time.perf_counter()
    best = {"f1": -1.0, "state": None, "step": 0, "groups": {}}

    def validate(step: int, elapsed: float, logfh, final: bool = False) -> None:
        # the tuning images choose; the held-out experiments are only logged (why a run plateaus)
        tune_f1, tune_groups, _ = evaluate(model.net, tune_s)
        val_f1, val_groups, _ = evaluate(model.net, val_s)
        model.net.train()
        rec = {
            "step": step,
            "elapsed": round(elapsed),
            "loss": float(np.mean(losses[-100:])) if losses else None,
            "tune_f1": round(tune_f1, 4),
            "tune_groups": tune_groups,
            "heldout_f1": round(val_f1, 4),
            "heldout_groups": val_groups,
        }
        if final:
            rec["final"] = True
        print(json.dumps(rec), flush=True)
        logfh.write(json.dumps(rec) + "\n")
        logfh.flush()
        if tune_f1 >= best["f1"]:
            best.update(
                f1=tune_f1,
                step=step,
                groups=tune_groups,
                state={k: v.detach().clone() for k, v in model.net.state_dict().items()},
            )

    last = None
    with open(log, "w") as logfh:
        validate(0, 0.0, logfh)
        next_val = args.val_every
        for st in iter_train(model, samples, cfg, device="cpu"):
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
                validate(st.step, st.elapsed, logfh)
        validate(last.step, last.elapsed, logfh, final=True)
    model.net.load_state_dict(best["state"])
    _, _, probs = evaluate(model.net, tune_s, keep_probs=True)
    params, tuned_f1 = choose_postprocess(probs, tune_s)
    heldout_f1, heldout_groups, _ = evaluate(model.net, val_s, params)
    print(f"post-processing chosen on the tuning images: {params} (tuning F1@0.5 {tuned_f1:.4f})")
    card = {
        "name": "nuclei",
        "description": "Fluorescence nuclei (2D), U-Net with background/interior/boundary output.",
        "architecture": "U-Net (Ronneberger et al. 2015) with batch norm, 'same' padding",
        "target": TARGET_NAME,
        "normalization": {"method": "percentile", "low": NORM[0], "high": NORM[1]},
        "postprocess": {
            "threshold": params.threshold,
            "seed_threshold": params.seed_threshold,
            "min_size": params.min_size,
            "split_depth": params.split_depth,
        },
        "postprocess_note": "chosen by a grid scan on the tuning images (a tenth of each training "
        "size group, never trained on); the held-out experiments played no part in any choice",
        "object_diameter": REFERENCE_DIAMETER if not args.native_scale else None,
        "object_diameter_note": "median equivalent diameter (px) the training nuclei were brought to; "
        "PredictConfig.diameter and the size estimate rescale images to it",
        "training": {
            "command": "python scripts/train_bundled.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "data": "DSB 2018 stage-1 (BBBC038v1) grayscale fluorescence nuclei, CC0, "
            f"{len(train)} training images" + ("" if args.native_scale else ", each resized to 20 px nuclei"),
            "tuning": f"{len(tune)} images held back from the training size groups (checkpoint and "
            "post-processing choice)",
            "validation": f"{len(val)} held-out images of unseen experiments (size groups "
            + ", ".join(f"{h}x{w}" for h, w in sorted(VAL_GROUPS))
            + "), never used for a choice",
            "steps": best["step"],
            "total_steps": last.step,
            "seconds": round(time.perf_counter() - t0),
            "batch_size": args.batch_size,
            "crop": args.crop,
            "lr": args.lr,
            "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}",
        },
        "metrics": {
            "tune_f1_iou50": round(tuned_f1, 4),
            "val_f1_iou50": round(heldout_f1, 4),
            "val_f1_iou50_by_group": heldout_groups,
            "val_note": "held-out images at 20 px nuclei (their true size given); "
            "benchmarks/bench_object_size.py gives native / rescaled / size-estimated figures",
        },
        "parent": parent,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if card["object_diameter"] is None:
        del card["object_diameter"], card["object_diameter_note"]
    net = UNet(model.config)
    net.load_state_dict(best["state"])
    Model(net, card).save(out, half=True)
    print(
        f"saved {out} (step {best['step']}: tuning F1@0.5 {tuned_f1:.4f}, "
        f"held-out {heldout_f1:.4f} {heldout_groups})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
