"""Does bf16 (the default on CPUs with native bf16) segment as well as fp32? And do tile seams cost F1?

    python benchmarks/eval_bf16.py [--model nuclei] [--data ../shared/data/dsb2018-train]

Segments the DSB 2018 validation images (the held-out experiments of
``scripts/train_bundled.py``: size groups ``VAL_GROUPS``) through the public ``segment``
API in fp32, in bf16, and in bf16 with small tiles (many seams), and prints F1 at IoU 0.5
for each, per size group, with the time taken and how far the probabilities move.
Exits cleanly (status 0, a note) when the data folder or the model is absent.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_unet.engine.config import PredictConfig
from napari_unet.engine.devices import autocast_dtype
from napari_unet.engine.inference import iter_probabilities
from napari_unet.engine.metrics import Matching, match
from napari_unet.engine.normalize import normalize
from napari_unet.engine.predict import segment
from napari_unet.engine.setup import as_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from train_bundled import VAL_GROUPS, load_dsb  # noqa: E402

CONFIGS = {
    "fp32": PredictConfig(amp=False),
    "bf16": PredictConfig(amp=True),
    "bf16, 128-px tiles": PredictConfig(amp=True, tile=128, overlap=64),
    "bf16, 128-px tiles, overlap 32": PredictConfig(amp=True, tile=128, overlap=32),
}


def probabilities(model, image: np.ndarray, config: PredictConfig) -> np.ndarray:
    gen = iter_probabilities(model, normalize(image, *model.normalization)[None], config)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("NAPARI_UNET_DSB") or str(ROOT.parent / "shared" / "data" / "dsb2018-train")
    ap.add_argument("--data", default=default_data)
    ap.add_argument("--model", default=None, help="model name or path (default: the bundled model)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not Path(args.data, "index.csv").is_file():
        print(f"skipped: no DSB data folder at {args.data} (give --data or NAPARI_UNET_DSB)")
        return 0
    try:
        model = as_model(args.model)
    except (OSError, ValueError) as exc:
        print(f"skipped: no model ({exc})")
        return 0
    if autocast_dtype(torch.device("cpu")) is None:
        print("note: this CPU has no native bf16; the default here is fp32, bf16 below is emulated")
    _, val = load_dsb(Path(args.data))
    groups = ", ".join(f"{h}x{w}" for h, w in sorted(VAL_GROUPS))
    print(f"model {model.name} ({model.source}); card F1 {model.card.get('metrics', {}).get('val_f1_iou50')}")
    print(f"{len(val)} validation images (groups {groups}); {torch.get_num_threads()} threads")

    results: dict[str, tuple[Matching, dict[str, Matching], float]] = {}
    for name, config in CONFIGS.items():
        total, per_group, seconds = Matching(0, 0, 0), {}, 0.0
        for _, img, lab in val:
            t = time.perf_counter()
            pred = segment(img, model=model, config=config)
            seconds += time.perf_counter() - t
            m = match(lab, pred, 0.5)
            total = total + m
            key = f"{lab.shape[0]}x{lab.shape[1]}"
            per_group[key] = per_group.get(key, Matching(0, 0, 0)) + m
        results[name] = (total, per_group, seconds)
        by_group = ", ".join(f"{k} {v.f1:.4f}" for k, v in sorted(per_group.items()))
        print(
            f"{name:32s} F1@0.5 {total.f1:.4f} (tp {total.tp}, fp {total.fp}, fn {total.fn}) "
            f"in {seconds:.1f} s; by group: {by_group}"
        )

    diffs = []
    for _, img, _ in val:
        a = probabilities(model, img, CONFIGS["fp32"])
        b = probabilities(model, img, CONFIGS["bf16"])
        diffs.append((np.abs(a - b).mean(), np.abs(a - b).max()))
    d = np.array(diffs)
    print(f"bf16 vs fp32 probabilities: mean |diff| {d[:, 0].mean():.4f}, max |diff| {d[:, 1].max():.3f}")
    f32, b16 = results["fp32"][0].f1, results["bf16"][0].f1
    print(f"bf16 - fp32 F1: {b16 - f32:+.4f}; speed-up {results['fp32'][2] / results['bf16'][2]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
