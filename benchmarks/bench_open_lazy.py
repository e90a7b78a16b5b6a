"""Open a stack 4x larger than the memory it may use: time to open, time to first picture, peak RSS.

A uint16 ZYX stack (default 2 GiB: 1024 planes of 1024x1024) is written into a temporary folder
as an ImageJ TIFF (an OME BigTIFF beyond 4 GB) and as an OME-Zarr, then each is opened in a fresh
subprocess through the plugin's reader (``napari_unet.io.napari_reader``), shown in a napari viewer (under
``xvfb-run -a`` when there is no display) and the time until the first screenshot of the canvas
returns is taken as time to first picture. Peak RSS (``ru_maxrss``) is reported absolute and
above the baseline of a process that has imported napari and created its viewer; the budget
(default 512 MiB, a quarter of the stack) applies to that increase. The temporary files are
deleted at the end.

    python benchmarks/bench_open_lazy.py [--gib 2] [--cap-mib 512] [--formats tiff,zarr] [--dir D]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PLANE = 1024


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _planes(n: int):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 3000, (PLANE, PLANE), dtype=np.uint16)
    for z in range(n):
        yield np.roll(base, z * 7, axis=1) + np.uint16(z % 100)


def write_inputs(folder: Path, n_planes: int, formats: list[str]) -> dict[str, Path]:
    import tifffile

    from napari_unet.io.omezarr import ome_zarr_writer

    paths: dict[str, Path] = {}
    if "tiff" in formats:
        t = time.perf_counter()
        shape = (n_planes, PLANE, PLANE)
        if n_planes * PLANE * PLANE * 2 < 2**32 - 2**25:  # ImageJ hyperstack, one IFD per plane
            p = folder / "big.tif"
            meta = {"axes": "ZYX", "spacing": 2.0, "unit": "um"}
            kwargs = {"imagej": True, "resolution": (2.0, 2.0), "metadata": meta}
        else:  # beyond 4 GB ImageJ keeps one IFD only: write an OME BigTIFF (one IFD per plane)
            p = folder / "big.ome.tif"
            meta = {"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeZ": 2.0}
            kwargs = {"ome": True, "bigtiff": True, "metadata": meta}
        tifffile.imwrite(p, _planes(n_planes), shape=shape, dtype=np.uint16, **kwargs)
        print(f"wrote {p.name}: {p.stat().st_size / 2**30:.2f} GiB in {time.perf_counter() - t:.1f} s")
        paths["tiff"] = p
    if "zarr" in formats:
        p = folder / "big.ome.zarr"
        t = time.perf_counter()
        shape = (n_planes, PLANE, PLANE)
        with ome_zarr_writer(p, shape, np.uint16, "ZYX", (1, PLANE, PLANE), pixel_size={"Z": 2.0}) as arr:
            for z, plane in enumerate(_planes(n_planes)):
                arr[z] = plane
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        print(f"wrote {p.name}: {size / 2**30:.2f} GiB on disk in {time.perf_counter() - t:.1f} s")
        paths["zarr"] = p
    return paths


def child(path: str, cap_mib: float) -> None:
    """Runs in a fresh process: import, viewer, then open and draw the stack."""
    t0 = time.perf_counter()
    import napari

    from napari_unet.io.napari_reader import get_reader

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(800, 600)
    napari.qt.get_qapp().processEvents()
    viewer.screenshot(canvas_only=True)  # GL context up before timing
    t_setup = time.perf_counter() - t0
    base = _rss_mib()

    t = time.perf_counter()
    layers = get_reader(path)(path)
    t_open = time.perf_counter() - t
    t = time.perf_counter()
    get_reader(path)(path)  # again: the file's own cost, without first-use imports
    t_reopen = time.perf_counter() - t
    t = time.perf_counter()
    for data, kwargs, kind in layers:
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    shot = viewer.screenshot(canvas_only=True)
    t_first = time.perf_counter() - t + t_open
    drawn = bool(np.asarray(shot)[..., :3].std() > 0)

    # step through a few planes: each must be read on demand, memory must stay flat
    nz = int(viewer.dims.nsteps[0])
    t = time.perf_counter()
    steps = [nz // 4, nz // 2, 3 * nz // 4, nz - 1]
    for z in steps:
        viewer.dims.set_point(0, z * viewer.layers[0].scale[0])
        viewer.screenshot(canvas_only=True)
    t_step = (time.perf_counter() - t) / len(steps)
    peak = _rss_mib()
    layer = viewer.layers[0]
    out = {
        "lazy": type(layer.data).__module__.split(".")[0],
        "shape": list(layer.data.shape),
        "scale": [float(s) for s in layer.scale],
        "setup_s": t_setup,
        "open_s": t_open,
        "reopen_s": t_reopen,
        "first_picture_s": t_first,
        "drawn": drawn,
        "per_plane_step_s": t_step,
        "rss_baseline_mib": base,
        "rss_peak_mib": peak,
        "rss_increase_mib": peak - base,
        "within_cap": peak - base <= cap_mib,
    }
    viewer.close()
    print("RESULT " + json.dumps(out))


def _machine() -> str:
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    import napari
    import tifffile
    import zarr

    return (
        f"{platform.node()} {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, "
        f"{mem:.0f} GiB RAM, Python {platform.python_version()}, napari {napari.__version__}, "
        f"tifffile {tifffile.__version__}, zarr {zarr.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0, help="stack size in GiB (uint16)")
    parser.add_argument("--cap-mib", type=float, default=512.0, help="memory the opening may add")
    parser.add_argument("--formats", default="tiff,zarr")
    parser.add_argument("--dir", default=None, help="where to write the temporary stacks")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.cap_mib)
        return

    n_planes = max(1, int(args.gib * 2**30 / (PLANE * PLANE * 2)))
    print(f"machine: {_machine()}")
    print(
        f"stack: {n_planes}x{PLANE}x{PLANE} uint16 = {n_planes * PLANE * PLANE * 2 / 2**30:.2f} GiB, "
        f"memory cap for opening {args.cap_mib:.0f} MiB"
    )
    folder = Path(tempfile.mkdtemp(prefix="napari-unet-bench-", dir=args.dir))
    try:
        paths = write_inputs(folder, n_planes, args.formats.split(","))
        prefix = [] if os.environ.get("DISPLAY") or not shutil.which("xvfb-run") else ["xvfb-run", "-a"]
        for fmt, path in paths.items():
            cmd = [*prefix, sys.executable, __file__, "--child", str(path), "--cap-mib", str(args.cap_mib)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(f"{fmt}: child failed (rc {proc.returncode}): {proc.stderr.strip()[-800:]}")
                continue
            r = json.loads(line[len("RESULT ") :])
            print(
                f"{fmt:>4}: open {r['open_s'] * 1000:.0f} ms (again {r['reopen_s'] * 1000:.0f} ms), "
                f"first picture {r['first_picture_s']:.2f} s "
                f"(drawn={r['drawn']}), next planes {r['per_plane_step_s'] * 1000:.0f} ms each, "
                f"data {r['lazy']} {r['shape']} scale {r['scale']}; RSS baseline {r['rss_baseline_mib']:.0f} "
                f"MiB (napari+viewer, {r['setup_s']:.1f} s), peak {r['rss_peak_mib']:.0f} MiB, "
                f"+{r['rss_increase_mib']:.0f} MiB for the stack (cap {args.cap_mib:.0f}: "
                f"{'ok' if r['within_cap'] else 'EXCEEDED'})"
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
