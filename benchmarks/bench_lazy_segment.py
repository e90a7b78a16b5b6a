"""Peak memory and throughput of chunked (lazy) segmentation against in-memory segmentation.

    nice python benchmarks/bench_lazy_segment.py [--axes ZYX] [--small 2,2048] [--large 8,4096]

Writes two uint16 OME-Zarr stacks into a temp folder (default 2x2048x2048 and 8x4096x4096, 16x
larger; planes are mosaics of synthetic nuclei), then in a fresh subprocess each:

* ``lazy``: ``io.open_image`` (a dask array over the store) -> ``chunked.segment_to_zarr``
  with the bundled model (labels to OME-Zarr, atomically), as the batch CLI does;
* ``in-memory`` (small stack only): the whole stack read into numpy -> ``predict.segment``.

The small stack's in-memory and lazy runs alternate ``--repeats`` times and the best time of
each is reported (a shared machine makes single timings unreliable); every run is printed.

Prints per run the peak RSS (``ru_maxrss`` of the subprocess, which includes Python, torch and
the model: ``baseline`` is that after loading the model, before any pixel), the wall time and
MPix/s (voxels / s), and the machine's load before and after. The targets of issue 4: peak RSS
under 2 GB, the 16x stack adding well under 150 MB over the small one, lazy throughput close
to in-memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from host import load_avg as load


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def write_stack(path: Path, n: int, side: int, axes: str) -> None:
    """An OME-Zarr (n, side, side) uint16 stack whose planes are mosaics of 1024-px tiles of
    synthetic nuclei (rolled per plane), written one plane at a time."""
    from napari_unet.io.omezarr import ome_zarr_writer
    from napari_unet.samples.synthetic import nuclei_2d

    tiles = [nuclei_2d((1024, 1024), n_nuclei=900, radius=(6.0, 14.0), seed=s).image for s in range(4)]
    with ome_zarr_writer(path, (n, side, side), np.uint16, axes) as arr:
        for z in range(n):
            plane = np.empty((side, side), np.uint16)
            for i in range(0, side, 1024):
                for j in range(0, side, 1024):
                    tile = tiles[(z + i // 1024 + 2 * (j // 1024)) % 4]
                    plane[i : i + 1024, j : j + 1024] = np.roll(tile, 37 * z, axis=1)[: side - i, : side - j]
            arr[z] = plane


def worker(mode: str, src: str, dst: str, axes: str) -> None:
    """Runs in the subprocess; prints one JSON line."""
    import torch

    import napari_unet
    from napari_unet.engine.predict import segment
    from napari_unet.io import images as io
    from napari_unet.scale.chunked import segment_to_zarr

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    model = napari_unet.load_model()
    data, _, meta = io.open_image(src)
    base = rss_mb()
    n_vox = int(np.prod(data.shape))
    t0 = time.perf_counter()
    if mode == "lazy":
        segment_to_zarr(data, dst, model, axes=axes, pixel_size=meta.get("pixel_size"), overwrite=True)
    else:
        image = np.asarray(data)
        segment(image, model=model, axes=axes)
    dt = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "mode": mode,
                "shape": list(data.shape),
                "seconds": dt,
                "mpix_s": n_vox / dt / 1e6,
                "baseline_mb": base,
                "peak_mb": rss_mb(),
            }
        )
    )


def run(mode: str, src: Path, dst: Path, axes: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--src", str(src), "--dst", str(dst), "--axes", axes]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(f"{mode} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--axes", default="ZYX", help="axes of the stacks: ZYX (a z-stack) or TYX (frames)")
    ap.add_argument("--small", default="2,2048", help="planes,side of the small stack")
    ap.add_argument("--large", default="8,4096", help="planes,side of the large stack")
    ap.add_argument("--keep", help="folder for the stacks (kept; reused when present)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs of the small stack (best kept)")
    ap.add_argument("--large-repeats", type=int, default=1, help="runs of the large stack (best kept)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    ap.add_argument("--dst", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.src, args.dst, args.axes)
        return
    import torch

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores,"
        f" torch {torch.__version__}, load before {load()}"
    )
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-lazy-"))
    folder.mkdir(parents=True, exist_ok=True)
    stacks = {}
    for name, spec in (("small", args.small), ("large", args.large)):
        n, side = (int(v) for v in spec.split(","))
        src = folder / f"{name}_{n}x{side}x{side}.ome.zarr"
        if not src.exists():
            t0 = time.perf_counter()
            write_stack(src, n, side, args.axes)
            print(f"wrote {src.name} in {time.perf_counter() - t0:.1f} s")
        stacks[name] = src
    # the machine may be shared: the small runs alternate, each best-of-N is kept (all printed)
    runs: dict[tuple[str, str], list[dict]] = {}
    plan = [("small", "memory"), ("small", "lazy")] * args.repeats + [("large", "lazy")] * args.large_repeats
    for name, mode in plan:
        r = run(mode, stacks[name], folder / f"{name}_labels.ome.zarr", args.axes)
        runs.setdefault((name, mode), []).append(r)
        print(f"  {name} {mode}: {r['seconds']:.1f} s, peak {r['peak_mb']:.0f} MB (load {load()})")

    def best(rs: list[dict]) -> dict:
        return {**min(rs, key=lambda r: r["seconds"]), "peak_mb": max(r["peak_mb"] for r in rs)}

    results = [(k[0], best(v)) for k, v in runs.items()]
    print(f"\naxes {args.axes}; best time of the runs, highest peak RSS (includes Python + torch + model)")
    print(f"{'stack':>16} {'mode':>7} {'baseline MB':>11} {'peak MB':>8} {'seconds':>8} {'MPix/s':>7}")
    for _, r in results:
        shape = "x".join(str(s) for s in r["shape"])
        print(
            f"{shape:>16} {r['mode']:>7} {r['baseline_mb']:11.0f} {r['peak_mb']:8.0f} {r['seconds']:8.1f}"
            f" {r['mpix_s']:7.2f}"
        )
    small, large = results[1][1], results[2][1]
    print(
        f"\nlarge - small peak RSS (lazy): {large['peak_mb'] - small['peak_mb']:+.0f} MB;"
        f" lazy / in-memory throughput (small): {small['mpix_s'] / results[0][1]['mpix_s']:.2f}"
    )
    print(f"load after: {load()}")
    if not args.keep:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
