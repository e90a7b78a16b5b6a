"""Checks of the whole call, made before any work: the model, the device, the output folder.

Each says what is wrong in one ``error:`` line and lets the command stop with exit code 2,
before minutes are spent on files whose results could not be used or written.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from napari_unet.cli.output import error, one_line, strip_prefix

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from napari_unet.models.model_file import Model


def prepare_output_dir(outdir: Path) -> str | None:
    """Make sure files can be written in ``outdir`` (created if needed); None or the problem."""
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


def usable_model(spec: str | None) -> Model | None:
    """The model named by ``--model`` (None: nuclei), or None after one line on stderr saying why not."""
    from napari_unet.models.model_file import Model  # local: keeps torch out of --help
    from napari_unet.models.registry import resolve_model_path  # local: keeps torch out of --help

    try:
        return Model.load(resolve_model_path(spec))
    except Exception as exc:  # noqa: BLE001 - any failure means "this model cannot be used"
        msg = one_line(str(exc))
        label = spec if spec is not None else "nuclei"
        error(label, strip_prefix(msg, getattr(exc, "filename", None), *_model_prefixes(spec)))
        return None


def usable_device(name: str) -> torch.device | None:
    """The ``--device`` asked for, or None after one line on stderr saying why it is unavailable."""
    from napari_unet.engine.devices import select_device  # local: keeps torch out of --help

    try:
        return select_device(name)
    except ValueError as exc:
        error(f"--device {name}", str(exc))
        return None


def _model_prefixes(spec: str | None) -> list[str]:
    """The forms in which a model error message may start with the model's own path or name."""
    from napari_unet.models.registry import resolve_model_path  # local: keeps torch out of --help

    out: list[str] = []
    if spec is not None:
        out += [spec, str(Path(spec).expanduser())]
    with contextlib.suppress(Exception):  # only used to tidy a message
        out.append(str(resolve_model_path(spec)))
    return out
