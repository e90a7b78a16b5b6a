"""Argument types and the options every command shares, with one-line errors for bad values.

Nothing here imports torch: the parser is built for ``--help``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeAlias

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # what add_subparsers gives
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")  # devices.DEVICE_CHOICES, without importing torch
AXIS_LETTERS = set("TZCSYX")


def number(
    convert: Callable[[str], Any], ok: Callable[[Any], bool], requirement: str, kind: str = "a number"
) -> Callable[[str], Any]:
    """An argparse ``type`` that parses with ``convert`` and checks ``ok``, with one-line errors.

    Parameters
    ----------
    convert : callable
        Turns the text into a value (``int``, ``float``); a ``ValueError`` means "not ``kind``".
    ok : callable
        True for the values allowed.
    requirement : str
        What the value must be, for the message (``"a positive number"``).
    kind : str
        What the text must parse as, for the message.

    Returns
    -------
    callable
        The ``type=`` for ``add_argument``.
    """

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {kind}: {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, not {text}")
        return value

    return parse


probability = number(float, lambda v: 0.0 < v < 1.0, "between 0 and 1 (exclusive)")
positive_float = number(float, lambda v: 0.0 < v < float("inf"), "a positive number")
fraction = number(float, lambda v: 0.0 <= v <= 0.5, "between 0 and 0.5")
non_negative_int = number(int, lambda v: v >= 0, ">= 0", "an integer")
positive_int = number(int, lambda v: v >= 1, ">= 1", "an integer")


def axes_arg(text: str) -> str:
    """The ``type`` of ``--axes``: T, Z, C (or S), Y, X each at most once, returned upper-case.

    Whether the letters fit an image is checked per file, later: one file's problem is no
    usage error.
    """
    axes = text.strip().upper()
    if not axes or set(axes) - AXIS_LETTERS or len(set(axes)) != len(axes):
        raise argparse.ArgumentTypeError(
            f"{text!r}: use each of the letters T, Z, C (or S), Y, X at most once, e.g. ZYX or YXC"
        )
    return axes


def add_image_options(parser: argparse.ArgumentParser, verb: str) -> None:
    """Add ``--axes``, ``--channel`` and ``--device`` (how to read the images, where to run) to ``parser``.

    ``verb`` says what the command does with the channel, for ``--channel``'s help.
    """
    parser.add_argument(
        "--axes",
        type=axes_arg,
        default=None,
        help="axis order of the images, e.g. YX, ZYX, TZYX, YXC (default: from the file, else guessed)",
    )
    parser.add_argument(
        "--channel", type=non_negative_int, default=None, metavar="N", help=f"channel to {verb} (0-based)"
    )
    parser.add_argument(
        "--device", choices=DEVICE_CHOICES, default="auto", help="compute device (default: auto)"
    )
