"""What the user sees of a ``segment`` batch: one line per finished file, bars, the summary file.

Lines go to stdout (errors to stderr, one ``error: <file>: <problem>`` each); on a terminal
a files bar (for more than one input) and a tile bar per file (in-process) go to stderr, and
the lines are written through tqdm so they do not tear the bars.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from napari_unet.cli.output import one_line
from napari_unet.scale.batch_summary import write_summary

_STAGE_UNITS = {"predict": "tile", "postprocess": "frame"}  # what predict.Progress counts
_SAVE_EVERY = 10.0  # seconds: a long batch keeps its summary current, not only at the end


def stderr_is_tty() -> bool:
    """Whether stderr is a terminal, where progress bars help (in a log file they are noise)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class BatchReport:
    """The callbacks that ``run_batch`` reports to, and the summary file they fill.

    Parameters
    ----------
    summary : Path or None
        The ``--summary`` file (.json or .csv), or None for none.
    extra : dict
        What the summary records of the call besides the files (model, scheduler, options).
    """

    def __init__(self, summary: Path | None, extra: dict[str, Any]) -> None:
        self.tty = stderr_is_tty()
        self.results: list[Any] = []
        self.summary, self.extra = summary, extra
        self.start = time.perf_counter()
        self._last_save = self.start
        self._saved: tuple[float, int] | None = None  # (wall time, files) of this run's last summary
        self._earlier = summary is not None and summary.exists()  # a file of an earlier run is there
        self._files: Any = None
        self._tiles: Any = None
        self._tiles_for: str | None = None
        self._stage: str | None = None

    def started(self, n: int) -> None:
        """The batch has ``n`` files: show a files bar on a terminal when there is more than one."""
        if self.tty and n > 1:
            self._files = tqdm(total=n, desc="files", unit="file", file=sys.stderr, dynamic_ncols=True)

    def tile(self, path: str, step: Any) -> None:
        """One step (a ``predict.Progress``) of the file ``path``: move its bar on a terminal."""
        if not self.tty:
            return
        if self._tiles_for != path:
            self._close_tiles()
            self._tiles = tqdm(desc=Path(path).name, total=None, unit="tile", leave=False, file=sys.stderr)
            self._tiles_for, self._stage = path, None
        bar = self._tiles
        if bar.total != step.total:
            bar.total = step.total
        if step.stage != self._stage:
            self._stage = step.stage
            bar.unit = _STAGE_UNITS.get(step.stage, "step")
            bar.set_postfix_str(str(step.stage), refresh=False)
        bar.n = step.done
        bar.refresh()

    def file_done(self, result: Any) -> None:
        """A file is finished (a ``FileResult``): print its line, count it, keep the summary current."""
        self.results.append(result)
        if self._tiles_for == result.input:
            self._close_tiles()
        if result.status == "failed":
            self._write(f"error: {result.input}: {one_line(result.message)}", sys.stderr)
        elif result.status == "skipped":
            self._write(f"{result.input} -> {result.output}: skipped (done)", sys.stdout)
        else:
            n = result.objects or 0
            what = f"{n} object{'s' if n != 1 else ''}, {result.seconds:.1f} s"
            if result.size:
                what += f"; {result.size}"
            self._write(f"{result.input} -> {result.output} ({what})", sys.stdout)
        if self._files is not None:
            self._files.update(1)
            failed = sum(r.status == "failed" for r in self.results)
            if failed:
                self._files.set_postfix_str(f"{failed} failed")
        if self.summary is not None and time.perf_counter() - self._last_save > _SAVE_EVERY:
            self.save(final=False)

    def _write(self, line: str, stream: Any) -> None:
        if self._files is not None or self._tiles is not None:
            tqdm.write(line, file=stream)
            stream.flush()
        else:
            print(line, file=stream, flush=True)

    def _close_tiles(self) -> None:
        if self._tiles is not None:
            self._tiles.close()
        self._tiles, self._tiles_for = None, None

    def close(self) -> None:
        """Remove the bars (the lines stay)."""
        self._close_tiles()
        if self._files is not None:
            self._files.close()
            self._files = None

    def save(self, final: bool = True) -> str | None:
        """Write the summary file (``complete`` = ``final``); None or the problem, in one line.

        When the final write fails, the line says what the file on disk is: this run's last
        summary (marked incomplete), an earlier run's, or none.
        """
        self._last_save = time.perf_counter()
        try:
            write_summary(self.summary, self.results, self._last_save - self.start, self.extra, final)
        except OSError as exc:
            problem = f"cannot write the summary ({exc.strerror or one_line(str(exc))})"
            if self._saved is not None:
                at, files = self._saved
                when = time.strftime("%H:%M:%S", time.localtime(at))
                problem += (
                    f"; the file on disk is stale: written at {when} "
                    f'with {files} of {len(self.results)} files and "complete": false'
                )
            elif self._earlier:
                problem += "; the file on disk is stale: it is an earlier run's"
            return problem
        self._saved = (time.time(), len(self.results))
        return None
