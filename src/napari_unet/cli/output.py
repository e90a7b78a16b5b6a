"""What the command says when something fails: exit codes and one-line ``error:`` messages.

A batch should survive its bad files, so every problem is one line on stderr, never a
traceback; the exit code tells a script what kind of problem it was.
"""

from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_INPUT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class InputError(Exception):
    """One input cannot be processed; the message is the one line shown to the user."""


def one_line(text: str) -> str:
    """The first line of ``text``, whitespace collapsed (``"unknown error"`` if empty)."""
    text = str(text).strip()
    return " ".join(text.split("\n")[0].split()) if text else "unknown error"


def error(subject: object, problem: str) -> None:
    """Print ``error: <subject>: <problem>`` on stderr; the subject is a file or an option."""
    print(f"error: {subject}: {one_line(problem)}", file=sys.stderr, flush=True)


def strip_prefix(msg: str, *prefixes: object) -> str:
    """``msg`` without a leading ``"<prefix>: "``: the ``error:`` line names the subject already.

    Errors from the core often start with the path they concern; the first of ``prefixes``
    (None ones skipped) that starts ``msg`` is removed.
    """
    for prefix in prefixes:
        p = f"{prefix}: "
        if prefix is not None and msg.startswith(p):
            return msg[len(p) :]
    return msg
