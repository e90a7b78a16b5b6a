"""``napari-unet segment``: many images to instance labels, in this process or on a Dask cluster.

Every input that cannot be segmented costs one ``error:`` line and is skipped; the others
are written (atomically, so a re-run resumes the batch) and the exit code says whether any
failed. The files are run by :func:`napari_unet.scale.batch.run_batch`.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from napari_unet.cli.arguments import (
    SubParsers,
    add_image_options,
    non_negative_int,
    positive_float,
    probability,
)
from napari_unet.cli.batch_report import BatchReport
from napari_unet.cli.output import EXIT_INPUT_FAILED, EXIT_OK, EXIT_USAGE, error
from napari_unet.cli.preflight import prepare_output_dir, usable_device, usable_model
from napari_unet.scale.batch_summary import summarize
from napari_unet.scale.batch_types import BatchOptions, SchedulerError
from napari_unet.scale.cluster import SCHEDULER_ENV, resolve_scheduler


def add_parser(sub: SubParsers) -> argparse.ArgumentParser:
    """Add the ``segment`` command to ``sub`` (the main parser's subparsers) and return its parser."""
    seg = sub.add_parser(
        "segment",
        help="segment images into instance labels",
        description="Segment images into integer instance labels, written as OUTDIR/<name>_labels.tif "
        "or OUTDIR/<name>_labels.ome.zarr (the input's shape without its channel axis). Bad inputs are "
        "reported and skipped; outputs already complete are skipped, so a re-run resumes a batch. "
        f"--scheduler (or ${SCHEDULER_ENV}) runs the files on a Dask distributed cluster.",
    )
    seg.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="images (.tif/.tiff/.ome.tif/.png/.jpg, OME-Zarr .zarr folders), folders of them, or "
        "quoted glob patterns ('data/**/*.tif')",
    )
    seg.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="output folder")
    seg.add_argument(
        "--model", default=None, metavar="NAME_OR_PATH", help="model name or .pt file (default: nuclei)"
    )
    add_image_options(seg, "segment")
    seg.add_argument(
        "--threshold",
        type=probability,
        default=None,
        metavar="F",
        help="foreground probability threshold (default: the model's)",
    )
    seg.add_argument(
        "--min-size",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="drop objects smaller than N pixels/voxels at the model's scale (converted when the "
        "image is rescaled for the object size; default: the model's)",
    )
    seg.add_argument(
        "--diameter",
        type=positive_float,
        default=None,
        metavar="PX",
        help="typical object diameter in pixels; the image is rescaled to the model's training "
        "size (default: estimated from each image with the model, printed per file)",
    )
    seg.add_argument(
        "--no-size-estimate",
        action="store_true",
        help="without --diameter, keep the model's own scale instead of estimating the object size",
    )
    seg.add_argument(
        "--measure",
        action="store_true",
        help="also write OUT/<name>_objects.csv: one row per object (area, centroid, bounding box, "
        "intensities, shape; in physical units when the file has a pixel size); lazily read inputs "
        "are measured block by block from their labels, without solidity",
    )
    seg.add_argument(
        "--accurate",
        action="store_true",
        help="test-time augmentation: average the net over each tile and its mirror images (about 4x slower)",
    )
    seg.add_argument(
        "--overwrite", action="store_true", help="segment again and replace existing label files"
    )
    seg.add_argument(
        "--track",
        action="store_true",
        help="time-lapses: an object keeps its id from frame to frame (overlap IoU > 0.5), "
        "new objects get new ids",
    )
    seg.add_argument("--recursive", action="store_true", help="look for images in subfolders of folders")
    seg.add_argument(
        "--format",
        choices=("auto", "tif", "zarr"),
        default="auto",
        help="output format (default auto: OME-Zarr for OME-Zarr inputs, TIFF for the others)",
    )
    seg.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run on a Dask distributed cluster: tcp://HOST:PORT, a scheduler .json file, or local[:N] "
        f"for N local worker processes (default: ${SCHEDULER_ENV}, else in this process; 'none' "
        "forces in-process)",
    )
    seg.add_argument(
        "--summary",
        type=Path,
        default=None,
        metavar="FILE",
        help="write per-file status, objects and seconds to FILE (.json, or .csv)",
    )
    return seg


def _batch_options(args: argparse.Namespace) -> BatchOptions:
    return BatchOptions(
        model=args.model,
        axes=args.axes,
        channel=args.channel,
        threshold=args.threshold,
        min_size=args.min_size,
        diameter=args.diameter,
        estimate_size=not args.no_size_estimate,
        accurate=args.accurate,
        measure=args.measure,
        device=args.device,
        format=args.format,
        overwrite=args.overwrite,
        track=args.track,
    )


def run(args: argparse.Namespace) -> int:
    """Segment ``args.inputs`` into ``args.output``; the exit code (0 ok, 1 some file failed, 2 usage)."""
    model = usable_model(args.model)
    if model is None:
        return EXIT_USAGE

    outdir: Path = args.output
    problem = prepare_output_dir(outdir)
    if problem:
        error(outdir, problem)
        return EXIT_USAGE

    scheduler = resolve_scheduler(args.scheduler)
    # on a cluster the device is the workers' (a GPU node may be driven from a laptop)
    if scheduler is None and usable_device(args.device) is None:
        return EXIT_USAGE

    options = _batch_options(args)
    extra = {
        "model": str(args.model or "nuclei"),
        "scheduler": scheduler or "in-process",
        "options": dataclasses.asdict(options),
    }
    report = BatchReport(args.summary, extra)
    from napari_unet.scale.batch import run_batch  # local: keeps torch out of --help

    finished = False
    try:
        run_batch(
            args.inputs,
            outdir,
            options,
            scheduler=scheduler,
            progress=report.file_done,
            recursive=args.recursive,
            model=model if scheduler is None else None,
            tile_progress=report.tile,
            started=report.started,
        )
        finished = True
    except SchedulerError as exc:
        report.close()
        subject = "--scheduler" if args.scheduler is not None else SCHEDULER_ENV
        error(f"{subject} {scheduler}", str(exc))
        return EXIT_USAGE
    finally:
        report.close()
        summary_problem = report.save(final=finished) if args.summary is not None else None
    if summary_problem:
        error(args.summary, summary_problem)
    totals = summarize(report.results, time.perf_counter() - report.start)
    print(totals.line(), flush=True)
    return EXIT_INPUT_FAILED if totals.failed or summary_problem else EXIT_OK
