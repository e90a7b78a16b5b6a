"""The automatic object size: how close the estimate is, and what it does to F1, at several zooms.

    python benchmarks/bench_object_size.py [--data ../shared/data/dsb2018-train] [--model nuclei]
        [--zooms 0.6,1,2.5] [--limit N] [--threads 2] [--cross-validate]

On the DSB held-out experiments (whole experiments the bundled model never saw in training;
``scripts/train_bundled.py``'s validation split), each image is rescaled by each zoom (image
bilinear, masks nearest) and segmented through the public ``segment`` three ways: the model's
own scale (``estimate_size=False``), the default (the size estimate), and the true median
diameter of the rescaled masks given by hand. Prints, per zoom and experiment, the estimate's
error (median and worst |log ratio| as a factor), F1@0.5 and AP@0.5 = TP / (TP + FP + FN) of
the three, the mean AP over IoU 0.5-0.95, and the estimate's time against that of a full
segmentation.

``--cross-validate``: the card's post-processing was chosen on these same experiments, so its
figures are optimistic. With this flag each experiment is segmented with the post-processing
chosen on the *other three* (``eval_model.py``'s leave-one-experiment-out: the grid of
``scripts/train_bundled.py`` scored at native size and the model's scale), at every zoom and in
all three columns: no figure comes from parameters chosen on its own images.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from skimage.transform import rescale

from napari_unet.engine.config import PredictConfig
from napari_unet.engine.metrics import Matching, iou_matrix, match
from napari_unet.engine.object_size import SizeEstimate, equivalent_diameters
from napari_unet.engine.postprocess import PostprocessParams
from napari_unet.engine.predict import iter_segment, segment
from napari_unet.models.model_file import Model
from napari_unet.models.registry import load_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from train_bundled import load_dsb  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from eval_model import experiment, fold_choices, grid_matches, heldout_probabilities  # noqa: E402


def median_diameter(labels: np.ndarray) -> float:
    return float(np.median(equivalent_diameters(labels)))


def zoomed(img: np.ndarray, lab: np.ndarray, zoom: float) -> tuple[np.ndarray, np.ndarray]:
    if zoom == 1.0:
        return img, lab
    im = rescale(img.astype(np.float32), zoom, order=1, anti_aliasing=zoom < 1, preserve_range=True)
    lb = rescale(lab, zoom, order=0, anti_aliasing=False, preserve_range=True).astype(np.int32)
    return im.astype(np.float32), lb


def segment_reporting_size(
    img: np.ndarray, model: Model, params: PostprocessParams | None
) -> tuple[np.ndarray, SizeEstimate]:
    """The default segmentation (size estimated) and the estimate, as ``iter_segment`` reports it."""
    gen = iter_segment(img, model, axes="YX", config=PredictConfig(), params=params)
    size = None
    while True:
        try:
            step = next(gen)
        except StopIteration as done:
            return done.value, size
        if step.stage == "size":
            size = step.detail


def ap(m: Matching) -> float:
    return m.tp / max(m.tp + m.fp + m.fn, 1)


THRESHOLDS = np.arange(0.5, 0.96, 0.05)


def counts(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(tp, fp, fn) at each IoU threshold 0.5, 0.55, ..., 0.95 (for the mean AP)."""
    iou = iou_matrix(truth, pred)
    tp = np.array([(iou > t).sum() for t in THRESHOLDS])
    return np.stack([tp, iou.shape[1] - tp, iou.shape[0] - tp], 1)


def mean_ap(c: np.ndarray) -> float:
    return float(np.mean(c[:, 0] / np.maximum(c.sum(1), 1)))


def row(r: dict) -> str:
    """F1, AP@0.5 and mean AP@0.5:0.95 of the model's scale / the estimate / the true diameter."""
    f1 = " / ".join(f"{r[k].f1:.3f}" for k in "mat")
    ap5 = " / ".join(f"{ap(r[k]):.3f}" for k in "mat")
    return f"{f1}      | {ap5} | " + " / ".join(f"{mean_ap(r['c' + k]):.3f}" for k in "mat")


def main(argv: list[str] | None = None) -> int:
    ap_ = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap_.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dsb2018-train")
    ap_.add_argument("--model", default=None)
    ap_.add_argument("--zooms", default="0.6,1,2.5")
    ap_.add_argument("--limit", type=int, default=0, help="images per experiment (0: all)")
    ap_.add_argument("--threads", type=int, default=2)
    ap_.add_argument(
        "--cross-validate",
        action="store_true",
        help="each experiment with the post-processing chosen on the other ones (honest figures)",
    )
    args = ap_.parse_args(argv)
    if not args.data.is_dir():
        print(f"no data at {args.data}: nothing to measure")
        return 0
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    _, val = load_dsb(args.data)
    if args.limit:
        seen: dict[tuple[int, int], int] = {}
        keep = []
        for item in val:
            g = item[2].shape
            seen[g] = seen.get(g, 0) + 1
            if seen[g] <= args.limit:
                keep.append(item)
        val = keep
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} threads"
    )
    print(f"model {args.model or 'nuclei (bundled)'}; {len(val)} held-out images")
    folds: dict[str, PostprocessParams | None] = {}
    if args.cross_validate:
        folds.update(fold_choices(grid_matches(heldout_probabilities(model, val), val), val))
        for group, chosen in folds.items():
            print(f"post-processing for {group}, chosen on the other experiments: {chosen}")
    print(
        "zoom  experiment   n  | est. error med/worst | F1 model / auto / true diam "
        "| AP@0.5 model / auto / true | mAP@.5:.95 model / auto / true | estimate s / segment s"
    )
    for zoom in (float(z) for z in args.zooms.split(",")):
        rows: dict[str, dict[str, object]] = {}
        for _, img0, lab0 in val:
            group = experiment(lab0)
            img, lab = zoomed(img0, lab0, zoom)
            truth = median_diameter(lab)
            r = rows.setdefault(
                group,
                {
                    "n": 0,
                    "err": [],
                    "m": Matching(0, 0, 0),
                    "a": Matching(0, 0, 0),
                    "t": Matching(0, 0, 0),
                    "te": 0.0,
                    "ts": 0.0,
                },
            )
            r["n"] += 1
            t0 = time.perf_counter()
            params = folds.get(group)  # None: the card's
            own = segment(img, model=model, axes="YX", estimate_size=False, params=params)
            t1 = time.perf_counter()
            auto, size = segment_reporting_size(img, model, params)
            given = segment(img, model=model, axes="YX", diameter=truth, params=params)
            r["m"] = r["m"] + match(lab, own)
            r["a"] = r["a"] + match(lab, auto)
            r["t"] = r["t"] + match(lab, given)
            for k, pred in zip("mat", (own, auto, given), strict=True):
                r["c" + k] = r.get("c" + k, 0) + counts(lab, pred)
            if size.diameter is not None:
                r["err"].append(abs(math.log(size.diameter / truth)))
            r["te"] += size.seconds
            r["ts"] += t1 - t0
        total: dict[str, object] = {k: Matching(0, 0, 0) for k in "mat"}
        for group, r in sorted(rows.items()):
            for k in "mat":
                total[k] = total[k] + r[k]
                total["c" + k] = total.get("c" + k, 0) + r["c" + k]
            err = r["err"]
            e = f"{math.exp(np.median(err)):.2f}x / {math.exp(max(err)):.2f}x" if err else "none"
            print(
                f"{zoom:4.1f}  {group:10s} {r['n']:3d}  | {e:>20s} | {row(r)} | {r['te']:.1f} / {r['ts']:.1f}"
            )
        print(f"{zoom:4.1f}  {'all':10s}      | {'':20s} | {row(total)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
