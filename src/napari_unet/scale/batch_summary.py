"""The summary of a batch: counts and throughput for the CLI's last line and the summary file.

The file is written atomically (a reader sees the previous version or the new one whole) and
says whether it is the final one: a long batch rewrites it as it goes with ``complete: false``,
and only the write after the last file says ``complete: true``. A file that still says false
after the run ended is stale (the final write failed, or the run was killed).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from napari_unet.common.atomic import atomic_write
from napari_unet.scale.batch_types import FileResult

__all__ = ["Summary", "summarize", "write_summary"]


@dataclass
class Summary:
    """Counts and throughput of a batch, for the last line of the CLI and the summary file."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    objects: int = 0
    seconds: float = 0.0
    files_per_second: float = field(default=0.0)

    def line(self) -> str:
        """The one-line report: counts by status, objects, time and files/s."""
        rate = f", {self.files_per_second:.2f} files/s" if self.done else ""
        return (
            f"{self.done} segmented, {self.skipped} skipped (done), {self.failed} failed; "
            f"{self.objects} objects; {self.seconds:.1f} s{rate}"
        )


def summarize(results: Sequence[FileResult], seconds: float) -> Summary:
    """Counts by status; files/s counts segmented files only (skips are free)."""
    s = Summary(seconds=seconds)
    for r in results:
        if r.status == "done":
            s.done += 1
            s.objects += r.objects or 0
        elif r.status == "skipped":
            s.skipped += 1
        else:
            s.failed += 1
    s.files_per_second = s.done / seconds if seconds > 0 else 0.0
    return s


def write_summary(
    path: str | os.PathLike,
    results: Sequence[FileResult],
    seconds: float,
    extra: dict[str, Any] | None = None,
    complete: bool = True,
) -> Path:
    """Per-file results as JSON (or CSV if the name ends in .csv), written atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The file; ``.csv`` for one row per file, else JSON.
    results : sequence of FileResult
        The files finished so far.
    seconds : float
        Time since the batch started.
    extra : dict, optional
        What else the JSON records of the call (model, scheduler, options).
    complete : bool
        Whether the batch has ended: JSON ``"complete"``, a CSV ``complete`` column. A summary
        written while the batch runs says false.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OSError
        When the file cannot be written; the previous file, if any, is left as it was.
    """
    path = Path(path)
    rows = [asdict(r) for r in results]
    with atomic_write(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        if path.suffix.lower() == ".csv":
            names = [*(f.name for f in FileResult.__dataclass_fields__.values()), "complete"]
            writer = csv.DictWriter(fh, fieldnames=names)
            writer.writeheader()
            writer.writerows({**row, "complete": str(complete).lower()} for row in rows)
        else:
            summary = asdict(summarize(results, seconds))
            blob = {**(extra or {}), "complete": complete, "summary": summary, "files": rows}
            json.dump(blob, fh, indent=1)
            fh.write("\n")
    return path
