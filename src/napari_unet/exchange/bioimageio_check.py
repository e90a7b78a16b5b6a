"""bioimage.io's own model test on a package, through the optional ``bioimageio.core``.

``bioimageio.core`` (and ``bioimageio.spec``, pydantic models of the spec, xarray) is an extra
(``pip install "napari-unet[bioimageio]"``): export and import work without it; with it, a
package is checked the way bioimage.io checks an upload (the description against the spec, the
weights reproducing the test output, other input sizes) before it is written.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field

__all__ = ["INSTALL_HINT", "BioimageioMissingError", "PackageCheck", "check_package", "is_available"]

INSTALL_HINT = 'pip install "napari-unet[bioimageio]"'


class BioimageioMissingError(ImportError):
    """``bioimageio.core`` is needed and not installed; the message says how to get it."""

    def __init__(self) -> None:
        super().__init__(f"bioimageio.core is not installed: {INSTALL_HINT}")


@dataclass(frozen=True)
class PackageCheck:
    """The outcome of bioimage.io's model test.

    Attributes
    ----------
    passed : bool
        Every check passed.
    summary : str
        One line: ``passed (N checks, bioimageio.core X)`` or the first failing check and its error.
    failures : list of str
        One line per failing check.
    """

    passed: bool
    summary: str
    failures: list[str] = field(default_factory=list)


def is_available() -> bool:
    """Whether ``bioimageio.core`` can be imported (without importing it: it is slow to import)."""
    try:
        return importlib.util.find_spec("bioimageio.core") is not None
    except ModuleNotFoundError:  # no ``bioimageio`` namespace at all
        return False


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:300]


def check_package(path: str | os.PathLike) -> PackageCheck:
    """Run ``bioimageio.core.test_model`` on a package (all its weight formats), offline; stop at a failure.

    Parameters
    ----------
    path : str or os.PathLike
        The package (``.zip``) or its ``rdf.yaml``.

    Returns
    -------
    PackageCheck
        Passed or not, with one line per failing check.

    Raises
    ------
    BioimageioMissingError
        When ``bioimageio.core`` is not installed.
    """
    if not is_available():
        raise BioimageioMissingError()
    from bioimageio.core import __version__ as core_version  # local: optional and slow to import
    from bioimageio.core import test_model  # local: optional and slow to import

    summary = test_model(os.fspath(path), stop_early=True)  # a refusal needs only the first failure
    failures = []
    for detail in summary.details:
        if detail.status == "failed":
            first = detail.errors[0] if detail.errors else None
            where = ".".join(str(part) for part in first.loc) if first is not None and first.loc else ""
            why = f": {where + ': ' if where else ''}{_one_line(first.msg)}" if first is not None else ""
            failures.append(f"{_one_line(detail.name)}{why}")
    passed = summary.status == "passed" and not failures
    if passed:
        return PackageCheck(True, f"passed ({len(summary.details)} checks, bioimageio.core {core_version})")
    return PackageCheck(False, failures[0] if failures else f"status {summary.status}", failures)
