"""A batch's inputs: files, folders and glob patterns -> the list of images to segment."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable
from pathlib import Path

from napari_unet.io.images import SUPPORTED_SUFFIXES
from napari_unet.scale.batch_outputs import OUTPUT_SUFFIX, is_zarr_path

__all__ = ["expand_inputs", "is_zarr_path"]

_GLOB_MAGIC = re.compile(r"[*?[]")


def _is_image_file(path: Path) -> bool:
    name = path.name.lower()
    return not name.startswith(".") and name.endswith(SUPPORTED_SUFFIXES) and path.is_file()


def _is_input(path: Path) -> bool:
    if is_zarr_path(path):
        return path.is_dir() and not path.name.startswith(".")
    return _is_image_file(path)


def _inside_zarr(path: str) -> bool:
    """``**`` also walks into OME-Zarr stores; what lies inside one is never an input."""
    return any(is_zarr_path(part) for part in Path(path).parent.parts)


def _is_our_output(path: Path, outdir: Path | None) -> bool:
    """Labels we wrote earlier into OUTDIR must not become inputs when OUTDIR is inside the input."""
    if outdir is None or not path.name.lower().endswith(tuple(OUTPUT_SUFFIX.values())):
        return False
    try:
        return path.parent.resolve() == outdir.resolve()
    except OSError:
        return False


def _folder_inputs(folder: Path, recursive: bool) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        keep = []
        for d in sorted(dirs):
            if d.startswith("."):
                continue
            if is_zarr_path(d):
                found.append(here / d)  # an input, not a folder to walk into
            elif recursive:
                keep.append(d)
        dirs[:] = keep
        found += [here / f for f in files if _is_image_file(here / f)]
        if not recursive:
            break
    return sorted(found)


def expand_inputs(
    specs: Iterable[str | os.PathLike], recursive: bool = False, outdir: str | os.PathLike | None = None
) -> tuple[list[str], list[tuple[str, str]]]:
    """Files, folders and glob patterns -> (input paths, [(spec, problem)] for specs giving none).

    A folder gives its supported images (and ``*.zarr`` stores), sorted, non-recursive unless
    ``recursive``. A pattern (``*``, ``?``, ``[``; ``**`` spans folders) is expanded here, so it
    works quoted and on any shell; its matches are sorted and filtered to supported inputs. A
    plain path is kept even if missing or unsupported: that file then fails with its own
    reason. The order of the arguments is kept and repeats are dropped (by real path), so
    ``a.tif data/*.tif`` segments a.tif once. Label files already in ``outdir`` are never inputs.
    """
    out_dir = Path(outdir) if outdir is not None else None
    seen: set[str] = set()
    inputs: list[str] = []
    problems: list[tuple[str, str]] = []

    def add(path: Path | str) -> None:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            inputs.append(str(path))

    for spec in specs:
        text = os.fspath(spec)
        path = Path(text).expanduser()
        if path.is_dir() and not is_zarr_path(path):
            found = [p for p in _folder_inputs(path, recursive) if not _is_our_output(p, out_dir)]
            if not found:
                where = "or its subfolders " if recursive else ""
                hint = "" if recursive else " (--recursive looks into subfolders)"
                problems.append((text, f"folder {where}contains no supported images{hint}"))
            for p in found:
                add(p)
        elif _GLOB_MAGIC.search(text) and not path.exists():
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            found = [
                Path(m)
                for m in matches
                if _is_input(Path(m)) and not _is_our_output(Path(m), out_dir) and not _inside_zarr(m)
            ]
            if not matches:
                problems.append((text, "no files match this pattern"))
            elif not found:
                problems.append((text, f"{len(matches)} match(es) but no supported images among them"))
            for p in found:
                add(p)
        else:
            add(str(path) if text.startswith("~") else text)  # else the user's spelling, for messages
    return inputs, problems
