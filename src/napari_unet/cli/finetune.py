"""``napari-unet finetune``: fine-tune a model on corrected labels and write the new model file.

All pairs are read before any training, so one bad file (one ``error:`` line each) stops the
call at once instead of after the time budget. The training is
:func:`napari_unet.training.finetune.iter_finetune`, driven to its end with a progress line at
most every few seconds. Minutes of training are never thrown away for a failed write: when the
output cannot be written (a full disk), the model goes to the model folder or, failing that,
to a temporary folder, and the one ``error:`` line says where (the exit code is still 1).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_unet.cli.arguments import (
    SubParsers,
    add_image_options,
    fraction,
    positive_float,
    positive_int,
)
from napari_unet.cli.output import EXIT_INPUT_FAILED, EXIT_OK, EXIT_USAGE, InputError, error, one_line
from napari_unet.cli.preflight import prepare_output_dir, usable_device, usable_model
from napari_unet.common.axes import AxesError, decide_axes
from napari_unet.common.generators import drain
from napari_unet.engine.normalize import BadImageError
from napari_unet.io.errors import ImageReadError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from napari_unet.models.model_file import Model

_PRINT_EVERY = 5.0  # seconds between progress lines (held-out evaluations are always printed)


def add_parser(sub: SubParsers) -> argparse.ArgumentParser:
    """Add the ``finetune`` command to ``sub`` (the main parser's subparsers) and return its parser."""
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
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="wall-clock training time (default: 120 unless --steps is given)",
    )
    ft.add_argument("--steps", type=positive_int, default=None, metavar="N", help="training steps at most")
    ft.add_argument(
        "--ignore-label", type=int, default=None, metavar="V", help="label value meaning 'not annotated'"
    )
    add_image_options(ft, "train on")
    ft.add_argument("--lr", type=positive_float, default=None, help="peak learning rate (default: 3e-3)")
    ft.add_argument(
        "--holdout",
        type=fraction,
        default=0.2,
        metavar="F",
        help="fraction of the annotation held back for the before/after F1 (default 0.2; 0: none)",
    )
    ft.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ft.add_argument("--overwrite", action="store_true", help="replace an existing MODEL_FILE")
    return ft


class _FileError(InputError):
    """An input problem to report against a given file (the image or its labels)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(problem)
        self.path = path


def _training_samples(image_path: Path, labels_path: Path, model: Model, args: argparse.Namespace) -> list:
    """Samples of one image/labels pair; raises _FileError naming the file at fault."""
    from napari_unet.io.images import read_image  # local: keeps zarr and dask.array (~1 s) out of --help
    from napari_unet.training.annotations import samples_from_arrays  # local: keeps torch out of --help

    user_channel_axis = args.axes is not None and bool(set(args.axes) & {"C", "S"})
    wants_channels = args.channel is not None or user_channel_axis
    try:
        data, file_axes, _ = read_image(image_path, collapse_gray_rgb=not wants_channels)
        axes = decide_axes(data, file_axes, args.axes)
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


def _all_samples(model: Model, args: argparse.Namespace) -> list | None:
    """The samples of every pair, or None after one ``error:`` line per bad file."""
    samples: list = []
    failed = 0
    for image_text, labels_text in zip(args.images, args.labels, strict=True):
        try:
            samples += _training_samples(Path(image_text), Path(labels_text), model, args)
        except _FileError as exc:
            error(exc.path, str(exc))
            failed += 1
    if failed:
        print("nothing trained: fix the inputs above", file=sys.stderr, flush=True)
        return None
    return samples


def _check_model_output(path: Path, overwrite: bool) -> str | None:
    """Can the model file be written? None or the problem (checked before any training)."""
    if path.suffix.lower() != ".pt":
        return "a model file name must end in .pt"
    if path.is_dir():
        return "is a folder; give a file name such as my-model.pt"
    if path.exists() and not overwrite:
        return "exists (use --overwrite to replace it)"
    return prepare_output_dir(path.parent if str(path.parent) else Path("."))


def _step_printer() -> Callable[[Any], None]:
    """A progress callback for ``iter_finetune``: the first step, held-out results, and every few seconds."""
    last_print = -1e9

    def on_step(st: Any) -> None:
        nonlocal last_print
        now = time.perf_counter()
        if st.heldout is not None or now - last_print >= _PRINT_EVERY or st.step == 1:
            line = (
                f"step {st.step}  loss {st.loss:.4f}  {st.steps_per_second:.2f} steps/s  {st.elapsed:.0f} s"
            )
            if st.heldout is not None:
                line += f"  held-out loss {st.heldout.loss:.4f} F1 {st.heldout.f1:.3f}"
            print(line, flush=True)
            last_print = now

    return on_step


def _train(model: Model, samples: list, device: torch.device, args: argparse.Namespace) -> Model:
    """Fine-tune with the command's budget, steps, seed and learning rate; the tuned model."""
    import torch  # local: keeps torch out of --help

    from napari_unet.training.finetune import (  # local: keeps torch out of --help
        FINETUNE_DEFAULTS,
        iter_finetune,
    )

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
    torch.manual_seed(args.seed)
    gen = iter_finetune(model, samples, cfg, device=device, holdout=args.holdout)
    return drain(gen, _step_printer())


def _print_result(tuned: Model) -> None:
    """The held-out F1 before and after (or why there was none), the working scale, the verdict."""
    from napari_unet.training.card import (  # local: keeps torch out of --help
        finetune_advice,
        fitted_thresholds,
    )

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
    if info.get("start"):
        print(f"trained from {info['start']}", flush=True)
    zoom = float(tuned.card.get("working_zoom", 1.0))
    if zoom != 1.0:
        diameter = float(tuned.card.get("object_diameter", 0.0))
        print(
            f"working scale: objects of ~{diameter:.0f} px learnt resized {zoom:.3f}x (to "
            f"~{diameter * zoom:.0f} px); segment applies the same zoom by itself",
            flush=True,
        )
    post = fitted_thresholds(tuned.card)
    if post is not None:
        print(
            "instance thresholds fitted on the held-back part: F1 "
            f"{post['heldout_f1_parent_thresholds']:.3f} with the parent's -> "
            f"{post['heldout_f1_best_thresholds']:.3f}",
            flush=True,
        )
    advice = finetune_advice(tuned.card)
    if advice:
        print(f"warning: {advice}", file=sys.stderr, flush=True)


def _rescue(tuned: Model, output: Path) -> Path | None:
    """Write a model that could not be written to ``output`` somewhere else; where, or None.

    First the user's model folder, as a saved version named after ``output`` (``--model NAME``
    then finds it, and ``napari-unet models`` lists it), then a temporary folder; each write is
    atomic, so a place without room is left as it was.
    """
    from napari_unet.models.registry import save_version  # local: keeps torch out of --help

    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", output.stem).strip("-.") or "model"
    for name in (stem, None):  # None: a fresh "<parent>-ft-<time>" name when the stem is taken
        try:
            return save_version(tuned, name).path
        except ValueError:  # the name is taken, or not a valid version name
            continue
        except OSError:  # no room (or no right) in the model folder either
            break
    tmp = Path(tempfile.gettempdir()) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.pt"
    try:
        return tuned.save(tmp)
    except OSError:
        return None


def _save(tuned: Model, output: Path) -> int:
    """Write the tuned model to ``output``, else rescue it; one line either way, the exit code."""
    try:
        tuned.save(output)
    except OSError as exc:  # Model.save raises ModelSaveError for every failure, torch's included
        reason = exc.strerror or one_line(str(exc))
        rescued = _rescue(tuned, output)
        if rescued is None:
            where = f"the model folder or {tempfile.gettempdir()}"
            error(output, f"cannot write the model ({reason}); no room in {where} either: it is lost")
        else:
            error(output, f"cannot write the model ({reason}); it was saved to {rescued} instead")
        return EXIT_INPUT_FAILED
    print(f"saved {output}", flush=True)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Fine-tune and write ``args.output``; the exit code (0 ok, 1 a bad input or a failed write, 2 usage)."""
    if len(args.images) != len(args.labels):
        error("--labels", f"{len(args.labels)} label file(s) for {len(args.images)} image(s); give one each")
        return EXIT_USAGE
    problem = _check_model_output(args.output, args.overwrite)
    if problem:
        error(args.output, problem)
        return EXIT_USAGE
    model = usable_model(args.model)
    if model is None:
        return EXIT_USAGE
    device = usable_device(args.device)
    if device is None:
        return EXIT_USAGE

    samples = _all_samples(model, args)
    if samples is None:
        return EXIT_INPUT_FAILED
    tuned = _train(model, samples, device, args)
    _print_result(tuned)
    tuned.card["name"] = args.output.stem
    return _save(tuned, args.output)
