"""The summary of a batch: counts and throughput for the CLI's last line and the summary file."""

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
) -> Path:
    """Per-file results as JSON (or CSV if the name ends in .csv), written atomically."""
    path = Path(path)
    rows = [asdict(r) for r in results]
    with atomic_write(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        if path.suffix.lower() == ".csv":
            names = [f.name for f in FileResult.__dataclass_fields__.values()]
            writer = csv.DictWriter(fh, fieldnames=names)
            writer.writeheader()
            writer.writerows(rows)
        else:
            blob = {**(extra or {}), "summary": asdict(summarize(results, seconds)), "files": rows}
            json.dump(blob, fh, indent=1)
            fh.write("\n")
    return path
