"""Batch throughput: files/s in-process vs on a 2-worker Dask LocalCluster.

    nice .venv/bin/python benchmarks/bench_batch.py [--files 100] [--size 256] [--workers 2]

Writes ``--files`` synthetic nuclei images (``napari_unet.samples.synthetic.nuclei_2d``) to a temporary
folder and segments them with the bundled model through :func:`napari_unet.scale.batch.run_batch`:

* in-process (sequential, torch's default threads, i.e. every core), and again with one torch
  thread, for reference;
* on a ``LocalCluster(n_workers=N, threads_per_worker=1, processes=True)``: Dask's nanny starts
  workers with ``OMP_NUM_THREADS=1``, so one torch thread per worker (checked and printed).
  The cluster's start-up is timed apart from the batch; each worker loads the model once.

Every run writes into a fresh folder (nothing skipped). Prints files/s, the machine, and the
load average before and after (the machine may be shared: a load above the core count means
the figures are pessimistic).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

from host import cpu_name, load_avg


def _machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} logical cores, Python {platform.python_version()}"


def _report(name: str, results: list, seconds: float, extra: str = "") -> float:
    done = sum(r.status == "done" for r in results)
    failed = [r for r in results if r.status != "done"]
    if failed:
        raise SystemExit(f"{name}: {len(failed)} file(s) not done, e.g. {failed[0]}")
    rate = done / seconds
    print(f"{name:<42} {done:4d} files  {seconds:7.2f} s  {rate:6.2f} files/s  {extra}", flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import tifffile
    import torch
    from distributed import Client, LocalCluster

    from napari_unet.samples.synthetic import nuclei_2d
    from napari_unet.scale.batch import run_batch
    from napari_unet.scale.batch_types import BatchOptions

    print(f"machine: {_machine()}")
    print(f"torch {torch.__version__}, default torch threads {torch.get_num_threads()}")
    print(f"load average before: {load_avg()}")
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        root = Path(tmp)
        src = root / "in"
        src.mkdir()
        n_nuclei = max(3, int(15 * (args.size / 256) ** 2))
        for i in range(args.files):
            tifffile.imwrite(
                src / f"img{i:04d}.tif", nuclei_2d((args.size, args.size), n_nuclei, seed=i).image
            )
        inputs = [str(src)]
        opts = BatchOptions(device="cpu")
        print(f"{args.files} files of {args.size}x{args.size} px (~{n_nuclei} nuclei each), bundled model")

        default_threads = torch.get_num_threads()
        run_batch(inputs[:1], root / "warm-up", opts)  # model load and first-call costs, not counted
        t0 = time.perf_counter()
        cluster = LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": ":0"},
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
        startup = time.perf_counter() - t0

        def torch_threads() -> int:
            import torch

            return torch.get_num_threads()

        per_worker = sorted(client.run(torch_threads).values())
        print(f"cluster start {startup:.1f} s (not in the figures); torch threads per worker {per_worker}")
        rates: dict[str, list[float]] = {}
        try:
            for k in range(args.rounds):  # interleaved, so load changes hit every variant alike
                for name, threads, sched in [
                    (f"in-process ({default_threads} torch threads)", default_threads, None),
                    ("in-process (1 torch thread)", 1, None),
                    (f"LocalCluster {args.workers} workers x 1 thread", default_threads, client),
                ]:
                    torch.set_num_threads(threads)
                    t0 = time.perf_counter()
                    # the first cluster round includes each worker loading the model once
                    res = run_batch(
                        inputs,
                        root / f"out-{len(rates)}-{k}-{threads}-{sched is None}",
                        opts,
                        scheduler=sched,
                    )
                    rates.setdefault(name, []).append(
                        _report(f"{name} r{k + 1}", res, time.perf_counter() - t0)
                    )
        finally:
            torch.set_num_threads(default_threads)
            client.close()
            cluster.close()
        print("best of rounds:")
        for name, values in rates.items():
            print(f"  {name:<42} {max(values):6.2f} files/s")
        names = list(rates)
        print(f"cluster / in-process (default threads): {max(rates[names[2]]) / max(rates[names[0]]):.2f}x")
    print(f"load average after: {load_avg()}")


if __name__ == "__main__":
    main()
