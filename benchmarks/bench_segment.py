"""How fast is ``segment`` on a 2048x2048 image, end to end, compared with the machine's matmul?

    python benchmarks/bench_segment.py [--size 2048] [--model nuclei] [--repeats 3] [--variants]

Prints the machine, the network's FLOPs for the image (counted with
``torch.utils.flop_counter``: FLOPs a whole-image pass would need, so compute spent on tile
overlaps counts against us), the wall time of ``segment(image)`` (API call in, labels out),
the achieved network-FLOP/s, the fp32 matmul GFLOP/s measured in the same run, their ratio,
and a breakdown by stage. ``--variants`` also times the network alone with the speed-ups
switched off one by one. The image is a mosaic of DSB 2018 images when the data folder is
there (``NAPARI_UNET_DSB`` or ../shared/data/dsb2018-train), else synthetic nuclei. Without
the bundled weights a random net of the same architecture is timed (post-processing time
is then not representative).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from host import cpu_name, load_avg
from napari_unet.engine import inference, normalize, predict, setup
from napari_unet.engine.config import PredictConfig
from napari_unet.engine.devices import cpu_has_native_bf16
from napari_unet.engine.object_size import estimate_size
from napari_unet.engine.predict import segment
from napari_unet.models.model_file import Model
from napari_unet.models.registry import bundled_model_path
from napari_unet.models.unet import UNet, UNetConfig

ROOT = Path(__file__).resolve().parents[1]


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    """fp32 matmul throughput: the machine's dense-compute yardstick."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def flops_per_pixel(net: UNet) -> float:
    """Network FLOPs per output pixel ('same' nets: exact for any multiple-of-16 size)."""
    side = net.valid_input_size(256) if net.config.padding == "valid" else 256
    x = torch.zeros(1, net.config.in_channels, side, side)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        out = net.eval()(x)
    return fc.get_total_flops() / (out.shape[-1] * out.shape[-2])


def dsb_folder() -> Path | None:
    for cand in (os.environ.get("NAPARI_UNET_DSB"), ROOT.parent / "shared" / "data" / "dsb2018-train"):
        if cand and Path(cand, "index.csv").is_file():
            return Path(cand)
    return None


def mosaic(size: int, folder: Path) -> np.ndarray:
    """A size x size uint8 mosaic of 256x256 crops of DSB images (real nuclei density)."""
    from skimage.io import imread

    files = sorted((folder / "images").glob("*.png"))
    canvas = np.zeros((size, size), np.uint8)
    k = 0
    for y in range(0, size, 256):
        for x in range(0, size, 256):
            img = imread(files[k % len(files)])
            img = img[..., 0] if img.ndim == 3 else img
            k += 7
            h, w = min(256, size - y, img.shape[0]), min(256, size - x, img.shape[1])
            canvas[y : y + h, x : x + w] = img[:h, :w]
    return canvas


def synthetic(size: int, seed: int = 0) -> np.ndarray:
    """Blurred, noisy discs of nucleus size, some touching (uint16)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    img = np.zeros((size, size), np.float32)
    n = size * size // 2500
    yy, xx = rng.uniform(0, size, n), rng.uniform(0, size, n)
    rr = rng.uniform(5, 13, n)
    for y, x, r in zip(yy, xx, rr, strict=True):
        y0, y1, x0, x1 = (
            int(max(y - r, 0)),
            int(min(y + r + 1, size)),
            int(max(x - r, 0)),
            int(min(x + r + 1, size)),
        )
        gy, gx = np.ogrid[y0:y1, x0:x1]
        img[y0:y1, x0:x1][(gy - y) ** 2 + (gx - x) ** 2 <= r * r] = rng.uniform(0.5, 1.0)
    img = ndi.gaussian_filter(img, 1.5) * 2000 + 100
    return rng.poisson(img).astype(np.uint16)


def timed_segment(
    image: np.ndarray, model_arg: Model | str | None, config: PredictConfig, repeats: int
) -> tuple[float, list[tuple[float, float]], np.ndarray]:
    """First call, then (seconds, fp32 matmul GFLOP/s around that call) per repeat.

    The matmul is measured right before and after each call, so a ratio compares the two
    under the same load (this machine may be shared)."""
    t = time.perf_counter()
    labels = segment(image, model=model_arg, config=config)
    cold = time.perf_counter() - t
    warm = []
    for _ in range(repeats):
        before = matmul_gflops()
        t = time.perf_counter()
        labels = segment(image, model=model_arg, config=config)
        sec = time.perf_counter() - t
        warm.append((sec, (before + matmul_gflops()) / 2))
    return cold, warm, labels


def size_cost(model: Model, image: np.ndarray, config: PredictConfig, default_s: float, repeats: int) -> None:
    """What the automatic object size costs: the estimate alone, and the default call against
    one with the estimate switched off (the same image, warm)."""
    params = predict.default_params(model)
    est, secs = None, []
    for _ in range(max(repeats, 1)):
        t = time.perf_counter()
        est = estimate_size(model, image[None], params, config)
        secs.append(time.perf_counter() - t)
    off = []
    for _ in range(max(repeats, 1)):
        t = time.perf_counter()
        segment(image, model=model, config=replace(config, estimate_size=False))
        off.append(time.perf_counter() - t)
    off_s, est_s = statistics.median(off), statistics.median(secs)
    print(
        f"size estimate: {est_s:.2f} s ({100 * est_s / off_s:.0f}% of a call without it, {off_s:.2f} s; "
        f"the default call {default_s:.2f} s); {est.describe() if est else ''}"
    )
    print(
        f"  end to end: {image.size / default_s / 1e6:.2f} MPix/s with the estimate, "
        f"{image.size / off_s / 1e6:.2f} without"
    )
    t = time.perf_counter()
    segment(image, model=model, config=replace(config, accurate=True))
    acc = time.perf_counter() - t
    print(
        f"accurate mode (mirror images averaged): {acc:.2f} s, {acc / default_s:.1f}x the default call, "
        f"{image.size / acc / 1e6:.2f} MPix/s (one call)"
    )


def breakdown(model: Model, image: np.ndarray, config: PredictConfig) -> dict[str, float]:
    """The steps of ``iter_segment`` for a 2-D image, timed one by one."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times = dict.fromkeys(("normalise", "pad+tiles", "network", "stitch", "postprocess"), 0.0)
    runner = inference.make_runner(model, config)
    grid = inference.tile_grid(model, image.shape, config)
    t = time.perf_counter()
    bounds = [normalize.channel_bounds(image, *model.normalization)]
    plane = normalize.apply_bounds(image[None], bounds)
    times["normalise"] = time.perf_counter() - t
    probs = np.empty((model.config.out_channels, *image.shape), np.float32)
    target = torch.from_numpy(probs)
    tiles = grid.tiles
    t = time.perf_counter()
    padded = grid.pad(plane)
    times["pad+tiles"] += time.perf_counter() - t
    per_batch = inference.tiles_per_batch(config, grid)
    for i in range(0, len(tiles), per_batch):
        chunk = tiles[i : i + per_batch]
        t = time.perf_counter()
        batch = np.ascontiguousarray(np.stack([padded[(..., *tl.source)] for tl in chunk]))
        times["pad+tiles"] += time.perf_counter() - t
        t = time.perf_counter()
        logits = runner(batch)
        sync()
        times["network"] += time.perf_counter() - t
        t = time.perf_counter()
        with torch.inference_mode():
            for tl, lg in zip(chunk, logits, strict=True):
                inference.softmax_into(target[(slice(None), *tl.target)], lg[(..., *tl.crop)])
        sync()
        times["stitch"] += time.perf_counter() - t
    params = predict.default_params(model)
    t = time.perf_counter()
    predict.instances(probs, params)
    times["postprocess"] = time.perf_counter() - t
    if params.split_depth > 0:  # what the waist cut of merged seeds costs (not part of the sum)
        t = time.perf_counter()
        predict.instances(probs, replace(params, split_depth=0.0))
        times["of which waist cut"] = times["postprocess"] - (time.perf_counter() - t)
    return times


def network_pass(
    model: Model, image_shape: tuple[int, int], config: PredictConfig, engine: bool
) -> tuple[Callable[[], None], str]:
    """A closure running the net over all tiles of an image once (warmed up), and the tiling.

    ``engine`` False: the plain training module (BatchNorm not folded) under autocast.
    """
    grid = inference.tile_grid(model, image_shape, config)
    n = len(grid)
    per_batch = min(inference.tiles_per_batch(config, grid), n)
    shape = (per_batch, model.config.in_channels, *grid.input_shape)
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    batches = -(-n // per_batch)
    if not engine:
        net = copy.deepcopy(model.net).eval().to(memory_format=torch.channels_last)
        xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
        dtype = inference.amp_dtype(torch.device("cpu"), config.amp)

        def run() -> None:
            with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                for _ in range(batches):
                    net(xt)

    else:
        runner = inference.make_runner(model, config)

        def run() -> None:
            for _ in range(batches):
                runner(x)

    run()
    return run, f"{n} x {grid.input_shape}, batch {per_batch}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--model", default=None, help="model name or path (default: the bundled model)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tile", type=int, default=PredictConfig.tile)
    ap.add_argument("--overlap", type=int, default=PredictConfig.overlap)
    ap.add_argument("--batch-size", type=int, default=PredictConfig.batch_size)
    ap.add_argument("--variants", action="store_true", help="also time the net with speed-ups switched off")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds for --variants")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(
        f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, native bf16: {cpu_has_native_bf16()}, "
        f"CUDA: {torch.cuda.is_available()}"
    )
    print(f"load average at start: {load_avg()} (other jobs on the machine slow every figure below)")

    if args.model is None and not bundled_model_path().is_file():
        model_arg: Model | str | None = Model(UNet(UNetConfig()), {"name": "random"})
        print(
            "model: RANDOM weights, bundled architecture (no bundled weights yet): post-processing "
            "time is not representative"
        )
    else:
        model_arg = args.model
    model = setup.as_model(model_arg)
    print(f"model: {model.name} ({model.source or 'in memory'}), {model.config}")

    folder = dsb_folder()
    if folder is not None:
        image = mosaic(args.size, folder)
        what = f"mosaic of DSB 2018 images from {folder}"
    else:
        image = synthetic(args.size)
        what = "synthetic nuclei (no DSB data folder)"
    print(f"image: {image.shape} {image.dtype}, {what}")

    config = PredictConfig(tile=args.tile, overlap=args.overlap, batch_size=args.batch_size)
    fpp = flops_per_pixel(model.net)
    grid = inference.tile_grid(model, image.shape, config)
    ih, iw = grid.input_shape
    net_flops = fpp * image.size
    done_flops = fpp * len(grid) * grid.output_shape[0] * grid.output_shape[1]
    print(
        f"network FLOPs for the image: {net_flops / 1e9:.1f} GFLOP ({fpp / 1e3:.1f} kFLOP/px); "
        f"executed with {len(grid)} tile(s) of {ih}x{iw}: {done_flops / 1e9:.1f} GFLOP "
        f"({done_flops / net_flops:.3f}x)"
    )

    cold, warm, labels = timed_segment(image, model_arg, config, args.repeats)
    print(
        f"segment() {args.size}x{args.size}: first call {cold:.2f} s (loads and prepares the model); "
        f"{int(labels.max())} objects"
    )
    ratios = []
    for i, (sec, mm) in enumerate(warm, 1):
        rate = net_flops / sec / 1e9
        ratios.append(rate / mm)
        print(
            f"  call {i}: {sec:.2f} s -> {rate:.0f} network-GFLOP/s; fp32 matmul around it {mm:.0f} GFLOP/s; "
            f"ratio {rate / mm:.2f}"
        )
    print(f"  ratio median {statistics.median(ratios):.2f} (best {max(ratios):.2f})")
    mm = statistics.median(m for _, m in warm)
    size_cost(model, image, config, statistics.median(sec for sec, _ in warm), args.repeats)

    runs = [breakdown(model, image, config) for _ in range(max(args.repeats, 1))]
    parts = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    total = sum(v for k, v in parts.items() if not k.startswith("of which"))
    print(
        f"breakdown (median of {len(runs)} warm passes): "
        + ", ".join(f"{k} {v:.3f} s" for k, v in parts.items())
        + f"; sum {total:.2f} s"
    )
    print(
        f"  network alone: {net_flops / parts['network'] / 1e9:.0f} GFLOP/s "
        f"(ratio {net_flops / parts['network'] / 1e9 / mm:.2f})"
    )

    if args.variants:
        print(
            f"variants, network only over the whole image (warm; median of {args.rounds} interleaved rounds):"
        )
        rows = [
            ("as configured", config, True),
            ("tile 1024", replace(config, tile=1024), True),
            ("tile 512, batch 1", replace(config, tile=512, batch_size=1), True),
            ("tile 512, batch 4", replace(config, tile=512, batch_size=4), True),
            ("plain module, BN not folded (autocast)", config, False),
            ("fp32", replace(config, amp=False), True),
        ]
        passes = [(name, *network_pass(model, image.shape, cfg, engine)) for name, cfg, engine in rows]
        times: dict[str, list[float]] = {name: [] for name, _, _ in passes}
        mms = []
        for _ in range(args.rounds):
            mms.append(matmul_gflops())
            for name, run, _ in passes:
                t = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t)
        mm_med = statistics.median(mms)
        for name, _, what in passes:
            sec = statistics.median(times[name])
            rate = net_flops / sec / 1e9
            print(f"  {name:48s} {sec:6.2f} s {rate:5.0f} GFLOP/s ratio {rate / mm_med:4.2f}  ({what})")
        print(f"  fp32 matmul in those rounds: {', '.join(f'{m:.0f}' for m in mms)} GFLOP/s")
    print(f"load average at end: {load_avg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
