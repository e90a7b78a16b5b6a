"""``napari-unet models``: list the models, delete a saved version, export one, import a file.

Each action prints one line on success or one ``error:`` line on failure (exit code 1); the
work is done by :mod:`napari_unet.models.registry`, and for bioimage.io packages (export to a
``.zip``, import of one) by :mod:`napari_unet.exchange`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_unet.cli.arguments import SubParsers
from napari_unet.cli.output import EXIT_INPUT_FAILED, EXIT_OK, error, one_line, strip_prefix

if TYPE_CHECKING:
    from napari_unet.models.registry import ModelInfo


def add_parser(sub: SubParsers) -> argparse.ArgumentParser:
    """Add the ``models`` command and its actions to ``sub``; return the command's parser."""
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
    ex = msub.add_parser(
        "export",
        help="write a model to a file to share it (.pt, or a bioimage.io package .zip)",
        description="Write a model to a file: napari-unet's own .pt, or a bioimage.io model package "
        "(.zip) that Fiji/deepImageJ, ilastik, QuPath and bioimageio.core run without napari-unet.",
    )
    ex.add_argument("name", metavar="NAME", help="model name (bundled or saved)")
    ex.add_argument("path", type=Path, metavar="PATH", help="a .pt or .zip file, or a folder to put it in")
    ex.add_argument(
        "--format",
        choices=("pt", "bioimageio"),
        default=None,
        help="pt: napari-unet's model file; bioimageio: a bioimage.io package (default: bioimageio "
        "for a .zip PATH, else pt)",
    )
    ex.add_argument(
        "--no-check",
        action="store_true",
        help="bioimageio: skip bioimage.io's own model test (run when bioimageio.core is installed)",
    )
    im = msub.add_parser("import", help="add a model file or a package it exported to the saved models")
    im.add_argument("path", type=Path, metavar="FILE", help="a .pt model file or a .zip napari-unet exported")
    im.add_argument("--name", default=None, help="name to save it under (default: the file's or model's)")
    return models


def _metric_text(card: dict[str, Any]) -> str:
    """Up to three of the card's scalar metrics, ``name=value``."""
    metrics = card.get("metrics")
    if not isinstance(metrics, dict):
        return ""
    scalars = [f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float))]
    return ", ".join(scalars[:3])


def _print_models() -> int:
    """List every model with its kind, card name, metrics, description and file; exit code 0.

    A missing or unreadable file is listed as such, with its reason, and the listing goes on:
    it is how the user finds a broken file, and every good model after it must still show.
    Files are checked before any network is built (:meth:`Model.load`), so a file asking for
    an absurd net costs a line, not gigabytes.
    """
    from napari_unet.models.model_file import Model, ModelFileError  # local: keeps torch out of --help
    from napari_unet.models.registry import list_models  # local: keeps torch out of --help

    for info in list_models():
        kind = "bundled" if info.bundled else "saved"
        if not info.path.exists():
            print(f"{info.name}  [{kind}]  (not installed: {info.path} is missing)")
            continue
        try:
            card = Model.load(info.path).card
        except (ModelFileError, OSError, MemoryError) as exc:
            print(f"{info.name}  [{kind}]  (unreadable: {strip_prefix(one_line(str(exc)), info.path)})")
            continue
        except Exception as exc:  # noqa: BLE001 - one broken file must not hide the models after it
            print(f"{info.name}  [{kind}]  (unreadable: {type(exc).__name__}: {one_line(str(exc))})")
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
            print(f"    {one_line(str(description))}")
        print(f"    {info.path}")
    return EXIT_OK


def _export_format(args: argparse.Namespace) -> str:
    """``--format``, else bioimageio for a ``.zip`` path, else pt."""
    if args.format:
        return args.format
    return "bioimageio" if Path(args.path).suffix.lower() == ".zip" else "pt"


def _export_bioimageio(args: argparse.Namespace) -> int:
    """Write a bioimage.io package; bioimage.io's model test runs first when bioimageio.core is installed."""
    from napari_unet.exchange.bioimageio_check import INSTALL_HINT, is_available  # local: light, no torch
    from napari_unet.exchange.bioimageio_export import export_bioimageio  # local: keeps torch out of --help

    checked = is_available() and not args.no_check
    dest = export_bioimageio(args.name, args.path, check=checked)
    size = f"{dest.stat().st_size / 1e6:.1f} MB"
    if checked:
        print(f"exported {args.name} to {dest} (bioimage.io package, {size}; bioimage.io model test passed)")
    else:
        print(f"exported {args.name} to {dest} (bioimage.io package, {size}; not tested)")
        if not args.no_check:
            print(f"note: bioimage.io's model test needs bioimageio.core: {INSTALL_HINT}", file=sys.stderr)
    return EXIT_OK


def _import(path: Path, name: str | None) -> ModelInfo:
    """Import a .pt model file, or a bioimage.io package napari-unet exported; the saved version's info."""
    from napari_unet.exchange.bioimageio_import import import_package, is_package  # local: keeps torch out
    from napari_unet.models.registry import import_model  # local: keeps torch out of --help

    return import_package(path, name) if is_package(path) else import_model(path, name)


def run(args: argparse.Namespace) -> int:
    """Run ``models [list|delete|export|import]``: one line on success, one ``error:`` line on failure."""
    from napari_unet.models.model_file import ModelFileError  # local: keeps torch out of --help
    from napari_unet.models.registry import delete_model, export_model  # local: keeps torch out of --help

    action = getattr(args, "models_command", None)
    if action in (None, "list"):
        return _print_models()
    try:
        if action == "delete":
            delete_model(args.name)
            print(f"deleted {args.name}")
        elif action == "export" and _export_format(args) == "bioimageio":
            return _export_bioimageio(args)
        elif action == "export":
            print(f"exported {args.name} to {export_model(args.name, args.path)}")
        elif action == "import":
            info = _import(args.path, args.name)
            print(f"imported {args.path} as {info.name} ({info.path})")
    except (ModelFileError, OSError, ValueError) as exc:
        subject = getattr(args, "name", None) if action != "import" else args.path
        error(subject, strip_prefix(one_line(str(exc)), subject))
        return EXIT_INPUT_FAILED
    return EXIT_OK
