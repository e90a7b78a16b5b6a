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

This module builds the parser and dispatches; each command lives in its own module
(:mod:`~napari_unet.cli.segment`, :mod:`~napari_unet.cli.finetune`,
:mod:`~napari_unet.cli.models`). torch is imported only once a model is needed, so
``--help`` and ``--version`` are quick.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from napari_unet import __version__
from napari_unet.cli import finetune, models, segment
from napari_unet.cli.output import EXIT_INTERRUPTED, EXIT_USAGE

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "segment": segment.run,
    "finetune": finetune.run,
    "models": models.run,
}


def build_parser() -> argparse.ArgumentParser:
    """The ``napari-unet`` parser with its commands; building it imports no torch."""
    parser = argparse.ArgumentParser(
        prog="napari-unet",
        description="U-Net segmentation of microscopy images (the napari-unet plugin, from the shell).",
    )
    parser.add_argument("--version", action="version", version=f"napari-unet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    seg = segment.add_parser(sub)
    finetune.add_parser(sub)
    models.add_parser(sub)
    parser.set_defaults(_segment_parser=seg)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``, letting ``segment`` take its inputs anywhere among its options.

    ``segment a.tif -o out b.tif`` and ``segment -o out 'data/*.tif'`` both work through
    argparse's intermixed parsing, which works on the subcommand's own parser only.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["segment"]:
        seg = parser.get_default("_segment_parser")
        args = seg.parse_intermixed_args(argv[1:])
        args.command = "segment"
        return args
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-unet`` console script.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name; None reads ``sys.argv``.

    Returns
    -------
    int
        The exit code: 0 done, 1 some input failed, 2 a usage or whole-call problem,
        130 interrupted (Ctrl-C).
    """
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    command = COMMANDS.get(args.command)
    try:
        if command is not None:
            return command(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    parser.print_help(sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
