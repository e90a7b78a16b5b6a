"""``napari-unet models``: list the models, delete a saved version, export one, import a file.

Each action prints one line on success or one ``error:`` line on failure (exit code 1); the
work is done by :mod:`napari_unet.models.registry`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from napari_unet.cli.arguments import SubParsers
from napari_unet.cli.output import EXIT_INPUT_FAILED, EXIT_OK, error, one_line, strip_prefix


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
    ex = msub.add_parser("export", help="write a model to a file to share it")
    ex.add_argument("name", metavar="NAME", help="model name (bundled or saved)")
    ex.add_argument("path", type=Path, metavar="PATH", help="a .pt file, or a folder to put it in")
    im = msub.add_parser("import", help="add a model file to the saved models (checked first)")
    im.add_argument("path", type=Path, metavar="FILE", help="a napari-unet .pt model file")
    im.add_argument("--name", default=None, help="name to save it under (default: the file's stem)")
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

    A missing or unreadable file is listed as such: the listing is how the user finds it.
    """
    from napari_unet.models.model_file import Model, ModelFileError  # local: keeps torch out of --help
    from napari_unet.models.registry import list_models  # local: keeps torch out of --help

    for info in list_models():
        kind = "bundled" if info.bundled else "saved"
        if not info.path.is_file():
            print(f"{info.name}  [{kind}]  (not installed: {info.path} is missing)")
            continue
        try:
            card = Model.load(info.path).card
        except (ModelFileError, OSError) as exc:
            print(f"{info.name}  [{kind}]  (unreadable: {strip_prefix(one_line(str(exc)), info.path)})")
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


def run(args: argparse.Namespace) -> int:
    """Run ``models [list|delete|export|import]``: one line on success, one ``error:`` line on failure."""
    from napari_unet.models.model_file import ModelFileError  # local: keeps torch out of --help
    from napari_unet.models.registry import (  # local: keeps torch out of --help
        delete_model,
        export_model,
        import_model,
    )

    action = getattr(args, "models_command", None)
    if action in (None, "list"):
        return _print_models()
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
        error(subject, strip_prefix(one_line(str(exc)), subject))
        return EXIT_INPUT_FAILED
    return EXIT_OK
