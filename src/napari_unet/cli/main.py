"""``napari-unet``: the plugin's segmentation, driven from the shell for batches and clusters.

    napari-unet segment INPUT [INPUT ...] -o OUTDIR [--model NAME_OR_PATH] [--axes AXES] ...
        [--recursive] [--format {auto,tif,zarr}] [--scheduler ADDRESS|local[:N]] [--summary FILE]
    napari-unet finetune --images I [I ...] --labels L [L ...] -o MODEL_FILE [--model BASE] ...
    napari-unet models
    napari-unet --version

A batch should survive its bad files: every input that cannot be segmented is reported as
one line ``error: <file>: <problem>`` on stderr (no traceback) and skipped, the others are
written, and the exit code says that something failed (1). Problems that concern the whole
call (unusable model, output folder, device, bad arguments) stop before any work (2).
Ctrl-C exits with 130 and never leaves a partial label file (outputs are written atomically).

torch is imported only once a model is needed, so ``--help`` and ``--version`` are instant.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_unet import __version__

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from napari_unet.models.model_file import Model

EXIT_OK = 0
EXIT_INPUT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")  # devices.DEVICE_CHOICES, without importing torch
AXIS_LETTERS = set("TZCSYX")
_STAGE_UNITS = {"predict": "tile", "postprocess": "frame"}  # what predict.Progress counts
_SCHEDULER_ENV = "NAPARI_UNET_SCHEDULER"  # batch.SCHEDULER_ENV, without importing it for --help


class InputError(Exception):
    """One input cannot be processed; the message is the one line shown to the user."""


def _err(subject: object, problem: str) -> None:
    print(f"error: {subject}: {_one_line(problem)}", file=sys.stderr, flush=True)


def _one_line(text: str) -> str:
    text = str(text).strip()
    return " ".join(text.split("\n")[0].split()) if text else "unknown error"


def _strip_prefix(msg: str, *prefixes: object) -> str:
    """Errors from the core often start with the path; the CLI line names the subject already."""
    for prefix in prefixes:
        p = f"{prefix}: "
        if prefix is not None and msg.startswith(p):
            return msg[len(p) :]
    return msg


def _number(
    convert: Callable[[str], Any], ok: Callable[[Any], bool], requirement: str, kind: str = "a number"
) -> Callable[[str], Any]:
    """An argparse ``type`` that parses with ``convert`` and checks ``ok``, with one-line errors."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {kind}: {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, not {text}")
        return value

    return parse


_probability = _number(float, lambda v: 0.0 < v < 1.0, "between 0 and 1 (exclusive)")
_positive_float = _number(float, lambda v: 0.0 < v < float("inf"), "a positive number")
_fraction = _number(float, lambda v: 0.0 <= v <= 0.5, "between 0 and 0.5")
_non_negative_int = _number(int, lambda v: v >= 0, ">= 0", "an integer")
_positive_int = _number(int, lambda v: v >= 1, ">= 1", "an integer")


def _axes_arg(text: str) -> str:
    axes = text.strip().upper()
    if not axes or set(axes) - AXIS_LETTERS or len(set(axes)) != len(axes):
        raise argparse.ArgumentTypeError(
            f"{text!r}: use each of the letters T, Z, C (or S), Y, X at most once, e.g. ZYX or YXC"
        )
    return axes


def _add_image_options(parser: argparse.ArgumentParser, verb: str) -> None:
    """--axes, --channel and --device: how to read the images and where to run, for every command."""
    parser.add_argument(
        "--axes",
        type=_axes_arg,
        default=None,
        help="axis order of the images, e.g. YX, ZYX, TZYX, YXC (default: from the file, else guessed)",
    )
    parser.add_argument(
        "--channel", type=_non_negative_int, default=None, metavar="N", help=f"channel to {verb} (0-based)"
    )
    parser.add_argument(
        "--device", choices=DEVICE_CHOICES, default="auto", help="compute device (default: auto)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-unet",
        description="U-Net segmentation of microscopy images (the napari-unet plugin, from the shell).",
    )
    parser.add_argument("--version", action="version", version=f"napari-unet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    seg = sub.add_parser(
        "segment",
        help="segment images into instance labels",
        description="Segment images into integer instance labels, written as OUTDIR/<name>_labels.tif "
        "or OUTDIR/<name>_labels.ome.zarr (the input's shape without its channel axis). Bad inputs are "
        "reported and skipped; outputs already complete are skipped, so a re-run resumes a batch. "
        f"--scheduler (or ${_SCHEDULER_ENV}) runs the files on a Dask distributed cluster.",
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
    _add_image_options(seg, "segment")
    seg.add_argument(
        "--threshold",
        type=_probability,
        default=None,
        metavar="F",
        help="foreground probability threshold (default: the model's)",
    )
    seg.add_argument(
        "--min-size",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="drop objects smaller than N pixels/voxels (default: the model's)",
    )
    seg.add_argument(
        "--diameter",
        type=_positive_float,
        default=None,
        metavar="PX",
        help="typical nucleus diameter in pixels; the image is rescaled to the model's training "
        "size (default: as trained, no rescaling)",
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
        f"for N local worker processes (default: ${_SCHEDULER_ENV}, else in this process; 'none' "
        "forces in-process)",
    )
    seg.add_argument(
        "--summary",
        type=Path,
        default=None,
        metavar="FILE",
        help="write per-file status, objects and seconds to FILE (.json, or .csv)",
    )

    ft = sub.add_parser(
        "finetune",
        help="fine-tune a model on corrected labels",
        description="Fine-tune a model on images and their corrected instance labels (0 = background) "
        "and write the new model file. Part of the annotation is held back to report a before/after "
        "F1. The output works with 'napari-unet segment --model MODEL_FILE'.",
    )
    ft.add_argument("--images", nargs="+", required=True, metavar="I", help="images (.tif/.png/...)")
    ft.add_argument(
        "--labels", nargs="+", required=True, metavar="L", help="label images, one per image, same order"
    )
    ft.add_argument("-o", "--output", required=True, type=Path, metavar="MODEL_FILE", help="new .pt file")
    ft.add_argument("--model", default=None, metavar="BASE", help="model to start from (default: nuclei)")
    ft.add_argument(
        "--time-budget",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="wall-clock training time (default: 120 unless --steps is given)",
    )
    ft.add_argument("--steps", type=_positive_int, default=None, metavar="N", help="training steps at most")
    ft.add_argument(
        "--ignore-label", type=int, default=None, metavar="V", help="label value meaning 'not annotated'"
    )
    _add_image_options(ft, "train on")
    ft.add_argument("--lr", type=_positive_float, default=None, help="learning rate (default: 1e-3)")
    ft.add_argument(
        "--holdout",
        type=_fraction,
        default=0.2,
        metavar="F",
        help="fraction of the annotation held back for the before/after F1 (default 0.2; 0: none)",
    )
    ft.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ft.add_argument("--overwrite", action="store_true", help="replace an existing MODEL_FILE")

    models = sub.add_parser(
        "models",
        help="list, delete, export or import models",
        description="Manage models: list (default), delete a saved version (roll back), "
        "export one to a file, import a file as a saved version.",
    )
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")
    msub.add_parser("list", help="list bundled and saved models (the default)")
    rm = msub.add_parser("delete", help="delete a saved version (the bundled model stays)")
    rm.add_argument("name", metavar="NAME", help="saved model name (see `napari-unet models`)")
    ex = msub.add_parser("export", help="write a model to a file to share it")
    ex.add_argument("name", metavar="NAME", help="model name (bundled or saved)")
    ex.add_argument("path", type=Path, metavar="PATH", help="a .pt file, or a folder to put it in")
    im = msub.add_parser("import", help="add a model file to the saved models (checked first)")
    im.add_argument("path", type=Path, metavar="FILE", help="a napari-unet .pt model file")
    im.add_argument("--name", default=None, help="name to save it under (default: the file's stem)")
    parser.set_defaults(_segment_parser=seg)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``segment`` takes its inputs anywhere among its options (``segment a.tif -o out b.tif``,
    ``segment -o out 'data/*.tif'``): argparse's intermixed parsing, which works on the
    subcommand's own parser only.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["segment"]:
        seg = parser.get_default("_segment_parser")
        args = seg.parse_intermixed_args(argv[1:])
        args.command = "segment"
        return args
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-unet`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command == "segment":
            return _segment(args)
        if args.command == "finetune":
            return _finetune(args)
        if args.command == "models":
            return _manage_models(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    parser.print_help(sys.stderr)
    return EXIT_USAGE


# --- napari-unet models ---------------------------------------------------------------------------


def _metric_text(card: dict[str, Any]) -> str:
    metrics = card.get("metrics")
    if not isinstance(metrics, dict):
        return ""
    scalars = [f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float))]
    return ", ".join(scalars[:3])


def _models() -> int:
    from napari_unet.models.model_file import Model, ModelFileError
    from napari_unet.models.registry import list_models

    for info in list_models():
        kind = "bundled" if info.bundled else "saved"
        if not info.path.is_file():
            print(f"{info.name}  [{kind}]  (not installed: {info.path} is missing)")
            continue
        try:
            card = Model.load(info.path).card
        except (ModelFileError, OSError) as exc:
            print(f"{info.name}  [{kind}]  (unreadable: {_strip_prefix(_one_line(str(exc)), info.path)})")
            continue
        head = f"{info.name}  [{kind}]"
        card_name = card.get("name")
        if card_name and card_name != info.name:
            head += f"  (card name: {card_name})"
        metric = _metric_text(card)
        if metric:
            head += f"  {metric}"
        print(head)
        description = card.get("description")
        if description:
            print(f"    {_one_line(str(description))}")
        print(f"    {info.path}")
    return EXIT_OK


def _manage_models(args: argparse.Namespace) -> int:
    """``models delete/export/import``: one line on success, one ``error:`` line on failure."""
    from napari_unet.models.model_file import ModelFileError
    from napari_unet.models.registry import delete_model, export_model, import_model

    action = getattr(args, "models_command", None)
    if action in (None, "list"):
        return _models()
    try:
        if action == "delete":
            delete_model(args.name)
            print(f"deleted {args.name}")
        elif action == "export":
            print(f"exported {args.name} to {export_model(args.name, args.path)}")
        elif action == "import":
            info = import_model(args.path, args.name)
            print(f"imported {args.path} as {info.name} ({info.path})")
    except (ModelFileError, OSError, ValueError) as exc:
        subject = getattr(args, "name", None) if action != "import" else args.path
        _err(subject, _strip_prefix(_one_line(str(exc)), subject))
        return EXIT_INPUT_FAILED
    return EXIT_OK


# --- napari-unet segment --------------------------------------------------------------------------


def _prepare_output_dir(outdir: Path) -> str | None:
    """Make sure labels can be written before spending time on a model; None or the problem."""
    if outdir.exists() and not outdir.is_dir():
        return "exists and is not a folder"
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create output folder ({exc.strerror or exc})"
    probe = outdir / f".napari-unet-write-test-{os.getpid()}"
    try:
        with open(probe, "wb"):
            pass
        probe.unlink()
    except OSError as exc:
        return f"output folder is not writable ({exc.strerror or exc})"
    return None


def _load_model(spec: str | None) -> Model | None:
    """The model named by ``--model``, or None after one line on stderr saying why not."""
    from napari_unet.models.model_file import Model
    from napari_unet.models.registry import resolve_model_path

    try:
        return Model.load(resolve_model_path(spec))
    except Exception as exc:  # noqa: BLE001 - any failure means "this model cannot be used"
        msg = _one_line(str(exc))
        label = spec if spec is not None else "nuclei"
        _err(label, _strip_prefix(msg, getattr(exc, "filename", None), *_model_prefixes(spec)))
        return None


def _device(name: str) -> torch.device | None:
    """The ``--device`` asked for, or None after one line on stderr saying why it is unavailable."""
    from napari_unet.engine.devices import select_device

    try:
        return select_device(name)
    except ValueError as exc:
        _err(f"--device {name}", str(exc))
        return None


def _decide_axes(data: np.ndarray, file_axes: str | None, user_axes: str | None) -> str:
    """--axes, else what the file declares, else a guess (see :func:`napari_unet.scale.batch.decide_axes`)."""
    from napari_unet.scale.batch import decide_axes

    return decide_axes(data, file_axes, user_axes)


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _BatchReport:
    """What the user sees of a batch: one line per finished file, bars on a terminal, the summary.

    Lines go to stdout (errors to stderr, one ``error: <file>: <problem>`` each); on a terminal
    a files bar (for more than one input) and a tile bar per file (in-process) go to stderr and
    the lines are written through tqdm so they do not tear the bars.
    """

    def __init__(self, summary: Path | None, extra: dict[str, Any]) -> None:
        self.tty = _stderr_is_tty()
        self.results: list[Any] = []
        self.summary, self.extra = summary, extra
        self.start = time.perf_counter()
        self._last_save = self.start
        self._files: Any = None
        self._tiles: Any = None
        self._tiles_for: str | None = None
        self._stage: str | None = None

    def started(self, n: int) -> None:
        if self.tty and n > 1:
            from tqdm import tqdm

            self._files = tqdm(total=n, desc="files", unit="file", file=sys.stderr, dynamic_ncols=True)

    def tile(self, path: str, step: Any) -> None:
        if not self.tty:
            return
        if self._tiles_for != path:
            from tqdm import tqdm

            self._close_tiles()
            self._tiles = tqdm(desc=Path(path).name, total=None, unit="tile", leave=False, file=sys.stderr)
            self._tiles_for, self._stage = path, None
        bar = self._tiles
        if bar.total != step.total:
            bar.total = step.total
        if step.stage != self._stage:
            self._stage = step.stage
            bar.unit = _STAGE_UNITS.get(step.stage, "step")
            bar.set_postfix_str(str(step.stage), refresh=False)
        bar.n = step.done
        bar.refresh()

    def file_done(self, result: Any) -> None:
        self.results.append(result)
        if self._tiles_for == result.input:
            self._close_tiles()
        if result.status == "failed":
            self._write(f"error: {result.input}: {_one_line(result.message)}", sys.stderr)
        elif result.status == "skipped":
            self._write(f"{result.input} -> {result.output}: skipped (done)", sys.stdout)
        else:
            n = result.objects or 0
            what = f"{n} object{'s' if n != 1 else ''}, {result.seconds:.1f} s"
            self._write(f"{result.input} -> {result.output} ({what})", sys.stdout)
        if self._files is not None:
            self._files.update(1)
            failed = sum(r.status == "failed" for r in self.results)
            if failed:
                self._files.set_postfix_str(f"{failed} failed")
        if self.summary is not None and time.perf_counter() - self._last_save > 10.0:
            self.save()  # a long batch keeps its summary current, not only at the end

    def _write(self, line: str, stream: Any) -> None:
        if self._files is not None or self._tiles is not None:
            from tqdm import tqdm

            tqdm.write(line, file=stream)
            stream.flush()
        else:
            print(line, file=stream, flush=True)

    def _close_tiles(self) -> None:
        if self._tiles is not None:
            self._tiles.close()
        self._tiles, self._tiles_for = None, None

    def close(self) -> None:
        self._close_tiles()
        if self._files is not None:
            self._files.close()
            self._files = None

    def save(self) -> str | None:
        """Write the summary file; None or the problem."""
        from napari_unet.scale.batch import write_summary

        self._last_save = time.perf_counter()
        try:
            write_summary(self.summary, self.results, self._last_save - self.start, self.extra)
        except OSError as exc:
            return f"cannot write the summary ({exc.strerror or _one_line(str(exc))})"
        return None


def _segment(args: argparse.Namespace) -> int:
    import dataclasses

    from napari_unet.scale import batch

    model = _load_model(args.model)
    if model is None:
        return EXIT_USAGE

    outdir: Path = args.output
    problem = _prepare_output_dir(outdir)
    if problem:
        _err(outdir, problem)
        return EXIT_USAGE

    scheduler = batch.resolve_scheduler(args.scheduler)
    # on a cluster the device is the workers' (a GPU node may be driven from a laptop)
    if scheduler is None and _device(args.device) is None:
        return EXIT_USAGE

    options = batch.BatchOptions(
        model=args.model,
        axes=args.axes,
        channel=args.channel,
        threshold=args.threshold,
        min_size=args.min_size,
        diameter=args.diameter,
        device=args.device,
        format=args.format,
        overwrite=args.overwrite,
        track=args.track,
    )
    extra = {
        "model": str(args.model or "nuclei"),
        "scheduler": scheduler or "in-process",
        "options": dataclasses.asdict(options),
    }
    report = _BatchReport(args.summary, extra)
    try:
        batch.run_batch(
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
    except batch.SchedulerError as exc:
        report.close()
        subject = "--scheduler" if args.scheduler is not None else _SCHEDULER_ENV
        _err(f"{subject} {scheduler}", str(exc))
        return EXIT_USAGE
    finally:
        report.close()
        summary_problem = report.save() if args.summary is not None else None
    if summary_problem:
        _err(args.summary, summary_problem)
    totals = batch.summarize(report.results, time.perf_counter() - report.start)
    print(totals.line(), flush=True)
    return EXIT_INPUT_FAILED if totals.failed or summary_problem else EXIT_OK


# --- napari-unet finetune -------------------------------------------------------------------------


class _FileError(InputError):
    """An input problem to report against a given file (the image or its labels)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(problem)
        self.path = path


def _training_samples(image_path: Path, labels_path: Path, model: Model, args: argparse.Namespace) -> list:
    """Samples of one image/labels pair; raises _FileError naming the file at fault."""
    from napari_unet.common.axes import AxesError
    from napari_unet.engine.normalize import BadImageError
    from napari_unet.io.images import ImageReadError, read_image
    from napari_unet.training.annotations import samples_from_arrays

    user_channel_axis = args.axes is not None and bool(set(args.axes) & {"C", "S"})
    wants_channels = args.channel is not None or user_channel_axis
    try:
        data, file_axes, _ = read_image(image_path, collapse_gray_rgb=not wants_channels)
        axes = _decide_axes(data, file_axes, args.axes)
    except (ImageReadError, BadImageError, AxesError) as exc:
        raise _FileError(image_path, str(exc)) from None
    try:
        labels, _, _ = read_image(labels_path)
    except ImageReadError as exc:
        raise _FileError(labels_path, str(exc)) from None
    try:
        return samples_from_arrays(
            data,
            labels,
            model,
            axes=axes,
            channel=args.channel,
            ignore_label=args.ignore_label,
            source=image_path.name,
        )
    except ValueError as exc:  # AnnotationError, NoAnnotationError, AxesError, BadImageError
        raise _FileError(labels_path, str(exc)) from None
    except MemoryError:
        raise _FileError(image_path, "out of memory") from None


def _check_model_output(path: Path, overwrite: bool) -> str | None:
    """Can the model file be written? None or the problem (checked before any training)."""
    if path.suffix.lower() != ".pt":
        return "a model file name must end in .pt"
    if path.is_dir():
        return "is a folder; give a file name such as my-model.pt"
    if path.exists() and not overwrite:
        return "exists (use --overwrite to replace it)"
    return _prepare_output_dir(path.parent if str(path.parent) else Path("."))


def _finetune(args: argparse.Namespace) -> int:
    import time

    if len(args.images) != len(args.labels):
        _err("--labels", f"{len(args.labels)} label file(s) for {len(args.images)} image(s); give one each")
        return EXIT_USAGE
    problem = _check_model_output(args.output, args.overwrite)
    if problem:
        _err(args.output, problem)
        return EXIT_USAGE
    model = _load_model(args.model)
    if model is None:
        return EXIT_USAGE
    device = _device(args.device)
    if device is None:
        return EXIT_USAGE

    samples: list = []
    failed = 0
    for image_text, labels_text in zip(args.images, args.labels, strict=True):
        try:
            samples += _training_samples(Path(image_text), Path(labels_text), model, args)
        except _FileError as exc:
            _err(exc.path, str(exc))
            failed += 1
    if failed:
        print("nothing trained: fix the inputs above", file=sys.stderr, flush=True)
        return EXIT_INPUT_FAILED

    from dataclasses import replace

    from napari_unet.training.loop import FINETUNE_DEFAULTS, iter_finetune

    budget = args.time_budget if args.time_budget is not None else (None if args.steps else 120.0)
    cfg = replace(FINETUNE_DEFAULTS, time_budget=budget, steps=args.steps, seed=args.seed)
    if args.lr is not None:
        cfg = replace(cfg, lr=args.lr)
    limit = " and ".join(
        x for x in (f"{budget:g} s" if budget else "", f"{args.steps} steps" if args.steps else "") if x
    )
    print(
        f"fine-tuning {model.name} on {len(samples)} plane(s) from {len(args.images)} image(s), "
        f"{limit} on {device}",
        flush=True,
    )
    import torch

    torch.manual_seed(args.seed)
    gen = iter_finetune(model, samples, cfg, device=device, holdout=args.holdout)
    last_print = -1e9
    while True:
        try:
            st = next(gen)
        except StopIteration as done:
            tuned = done.value
            break
        now = time.perf_counter()
        if st.heldout is not None or now - last_print >= 5.0 or st.step == 1:
            line = (
                f"step {st.step}  loss {st.loss:.4f}  {st.steps_per_second:.2f} steps/s  {st.elapsed:.0f} s"
            )
            if st.heldout is not None:
                line += f"  held-out loss {st.heldout.loss:.4f} F1 {st.heldout.f1:.3f}"
            print(line, flush=True)
            last_print = now
    info = tuned.card["finetune"]
    metrics = tuned.card.get("metrics") or {}
    if "heldout_f1_before" in metrics:
        print(
            f"held-out F1 (IoU 0.5, {metrics['heldout_objects']} objects): "
            f"before {metrics['heldout_f1_before']:.3f} -> after {metrics['heldout_f1_after']:.3f} "
            f"(weights of step {info['best_step']} of {info['steps']})",
            flush=True,
        )
    else:
        print(f"note: {info['holdout']}", flush=True)
    tuned.card["name"] = args.output.stem
    try:
        tuned.save(args.output)
    except OSError as exc:
        _err(args.output, f"cannot write the model ({exc.strerror or _one_line(str(exc))})")
        return EXIT_USAGE
    print(f"saved {args.output}", flush=True)
    return EXIT_OK


def _model_prefixes(spec: str | None) -> list[str]:
    """The forms in which a model error message may start with the model's own path or name."""
    out: list[str] = []
    if spec is not None:
        out += [spec, str(Path(spec).expanduser())]
    try:
        from napari_unet.models.registry import resolve_model_path

        out.append(str(resolve_model_path(spec)))
    except Exception:  # noqa: BLE001 - only used to tidy a message
        pass
    return out


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
