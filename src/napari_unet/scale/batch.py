"""Batch segmentation of many files, in-process or on a Dask distributed cluster; resumable.

    from napari_unet.scale.batch import BatchOptions, run_batch
    results = run_batch(["data/*.tif", "plate.ome.zarr"], "out/", BatchOptions(model="nuclei"))
    results = run_batch(["data/"], "out/", BatchOptions(), scheduler="tcp://head:8786")

This module runs the batch: one job per input (:mod:`napari_unet.scale.batch_file`), on a
Dask cluster or one after the other in this process (:mod:`napari_unet.scale.cluster`), and
decides who owns an output name that several inputs share. The inputs are expanded in
:mod:`napari_unet.scale.batch_inputs`, outputs are named, written and recognised as done in
:mod:`napari_unet.scale.batch_outputs`, and the summary is made in
:mod:`napari_unet.scale.batch_summary`. A file's problem never stops the batch: it becomes a
``failed`` :class:`FileResult` with a one-line message, whichever machine it ran on.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from napari_unet.common.axes import decide_axes
from napari_unet.engine.config import Progress
from napari_unet.engine.metrics import count_objects
from napari_unet.models.model_file import Model
from napari_unet.models.registry import BUNDLED_NAME, resolve_model_path
from napari_unet.scale.batch_file import cached_model, segment_file
from napari_unet.scale.batch_inputs import expand_inputs
from napari_unet.scale.batch_outputs import (
    LABELS_TAG,
    OUTPUT_SUFFIX,
    ZARR_SUFFIXES,
    is_zarr_path,
    output_format,
    output_path,
    output_state,
    precheck,
    remove_leftovers,
)
from napari_unet.scale.batch_summary import Summary, summarize, write_summary
from napari_unet.scale.batch_types import (
    BatchInputError,
    BatchOptions,
    FileResult,
    SchedulerError,
    Status,
    one_line,
)
from napari_unet.scale.cluster import CONNECT_TIMEOUT, SCHEDULER_ENV, connect, resolve_scheduler

__all__ = [
    "CONNECT_TIMEOUT",
    "LABELS_TAG",
    "OUTPUT_SUFFIX",
    "SCHEDULER_ENV",
    "ZARR_SUFFIXES",
    "BatchInputError",
    "BatchOptions",
    "FileResult",
    "SchedulerError",
    "Status",
    "Summary",
    "cached_model",
    "count_objects",
    "decide_axes",
    "expand_inputs",
    "is_zarr_path",
    "output_format",
    "output_path",
    "output_state",
    "resolve_scheduler",
    "run_batch",
    "segment_file",
    "summarize",
    "write_summary",
]


def _model_for_workers(spec: str | None) -> str | None:
    """The model as workers are told it: the bundled one by name, any other by absolute path.

    Each worker finds its own copy of the bundled model; other model files must be readable
    by the workers (a shared file system).
    """
    if spec is None or spec == BUNDLED_NAME:
        return spec
    return str(resolve_model_path(spec).resolve())


def run_batch(
    inputs: Sequence[str | os.PathLike],
    outdir: str | os.PathLike,
    options: BatchOptions = BatchOptions(),
    *,
    scheduler: Any = None,
    progress: Callable[[FileResult], None] | None = None,
    recursive: bool = False,
    model: Model | None = None,
    tile_progress: Callable[[str, Progress], None] | None = None,
    started: Callable[[int], None] | None = None,
) -> list[FileResult]:
    """Segment every input (files, folders, globs) into ``outdir``; one result per input, in order.

    Resumable: outputs are written atomically, so an output that already exists complete is
    skipped, and a re-run redoes only what is missing. A file's problem never stops the batch.
    The hidden temporaries that a killed run left in ``outdir`` are removed first (only ours,
    untouched for a minute, of no live process: see
    :func:`napari_unet.scale.batch_outputs.remove_leftovers`).

    Parameters
    ----------
    inputs : sequence of str or os.PathLike
        Image files, OME-Zarr stores, folders (their supported images) and glob patterns
        (``*``, ``?``, ``[``; ``**`` spans folders), in the order given; repeats are dropped.
    outdir : str or os.PathLike
        Output folder, created if needed; each input gets ``<stem>_labels.tif`` or
        ``<stem>_labels.ome.zarr`` there.
    options : BatchOptions
        Model, axes, channel, thresholds, diameter, device, output format, overwrite,
        threads and tracking (see :class:`BatchOptions`).
    scheduler : str or distributed.Client, optional
        None: in-process, one file after the other; ``"local"``/``"local:N"``: a
        LocalCluster of N one-thread worker processes; ``"tcp://host:port"``; a
        scheduler-file ``*.json``; or a ``distributed.Client`` (left open). A string is
        resolved as ``--scheduler`` is (``"none"`` forces in-process).
    progress : callable, optional
        Called with each :class:`FileResult` once its file is finished (done, skipped or
        failed), in completion order.
    recursive : bool
        Folders are searched in their subfolders too.
    model : Model, optional
        In-process only: use this loaded model instead of loading ``options.model``.
    tile_progress : callable, optional
        In-process only: called with (input, :class:`~napari_unet.engine.config.Progress`)
        once per tile batch and post-processed frame.
    started : callable, optional
        Called once with the number of inputs, before any work.

    Returns
    -------
    list of FileResult
        One per input, in the order of the inputs. Specs that give no file become failed
        results (``output`` None). Of inputs that share an output name the first that
        succeeds (or is already done) owns it; the others fail.

    Raises
    ------
    SchedulerError
        Before any file is processed, if the scheduler cannot be used.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> import tifffile
    >>> folder = Path(tempfile.mkdtemp())
    >>> image = np.zeros((64, 64), np.uint16)
    >>> image[20:40, 20:40] = 1000
    >>> tifffile.imwrite(folder / "cells.tif", image)
    >>> results = run_batch([folder / "cells.tif"], folder / "out", BatchOptions(axes="YX"))
    >>> [(r.status, Path(r.output).name) for r in results]
    [('done', 'cells_labels.tif')]
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(outdir, started=time.time())
    paths, problems = expand_inputs(inputs, recursive=recursive, outdir=outdir)
    n_all = len(problems) + len(paths)
    results: dict[int, FileResult] = {}
    if started is not None:
        started(n_all)

    def finish(i: int, result: FileResult) -> None:
        results[i] = result
        if progress is not None:
            progress(result)

    for i, (spec, problem) in enumerate(problems):
        finish(i, FileResult(spec, None, "failed", message=problem))
    job = _Jobs(
        paths, [output_path(outdir, p, options.format) for p in paths], options, len(problems), finish
    )
    if isinstance(scheduler, str):
        scheduler = resolve_scheduler(scheduler)
    if scheduler is None:
        job.run_in_process(model, tile_progress)
    else:
        job.run_distributed(scheduler)
    return [results[i] for i in range(n_all)]


class _Jobs:
    """The inputs of one batch, their outputs, and who owns each output name."""

    def __init__(
        self,
        paths: list[str],
        outputs: list[Path],
        options: BatchOptions,
        base: int,
        finish: Callable[[int, FileResult], None],
    ) -> None:
        self.paths, self.outputs, self.options = paths, outputs, options
        self._base, self._finish = base, finish
        self.groups: dict[Path, deque[int]] = {}
        for i, out in enumerate(outputs):
            self.groups.setdefault(out, deque()).append(i)

    def settle(self, i: int, result: FileResult) -> int | None:
        """Record a result; returns the next input to try for the same output name, if any."""
        self._finish(self._base + i, result)
        group = self.groups[self.outputs[i]]
        if result.status == "failed":
            return group.popleft() if group else None
        while group:  # the name is taken now: the rest of its group fails
            j = group.popleft()
            self._finish(
                self._base + j,
                FileResult(
                    self.paths[j],
                    str(self.outputs[j]),
                    "failed",
                    message=f"{self.outputs[j].name} was already written for {self.paths[i]} "
                    "(same output name; give it another -o)",
                ),
            )
        return None

    def run_in_process(
        self, model: Model | None, tile_progress: Callable[[str, Progress], None] | None
    ) -> None:
        """Segment the inputs one after the other in this process (one model, loaded once)."""
        if model is None and self.paths:
            model = cached_model(self.options.model)
        for i in range(len(self.paths)):
            group = self.groups[self.outputs[i]]
            if not group or group[0] != i:
                continue  # settled already: its output name was taken
            group.popleft()
            path = self.paths[i]
            cb = None if tile_progress is None else (lambda step, p=path: tile_progress(p, step))
            result = segment_file(path, self.outputs[i], self.options, model=model, progress=cb)
            nxt = self.settle(i, result)
            if nxt is not None:
                group.appendleft(nxt)  # the name is still free: that input runs in its own turn

    def run_distributed(self, scheduler: Any) -> None:
        """Segment the inputs on a Dask cluster, one task per file, settling as they complete."""
        from distributed import as_completed  # local: distributed takes seconds to import

        options = replace(self.options, model=_model_for_workers(self.options.model))
        # outputs already complete (or foreign) are settled here: no worker time, no model loading
        first: list[int] = []
        for group in self.groups.values():
            nxt: int | None = group.popleft()
            while nxt is not None:
                early = precheck(self.paths[nxt], self.outputs[nxt], options.overwrite)
                if early is None:
                    first.append(nxt)
                    break
                nxt = self.settle(nxt, replace(early, worker="client"))
        if not first:
            return
        conn = connect(scheduler)
        index: dict[str, int] = {}
        try:
            client = conn.client

            def submit(i: int) -> Any:
                fut = client.submit(segment_file, self.paths[i], str(self.outputs[i]), options, pure=False)
                index[fut.key] = i
                return fut

            pending = as_completed([submit(i) for i in sorted(first)])
            for fut in pending:
                i = index.pop(fut.key)
                if fut.status == "finished":
                    result = fut.result()
                else:  # the worker died or the task could not run: the file fails, the batch goes on
                    exc = fut.exception()
                    problem = f"worker failed: {type(exc).__name__}: {one_line(exc)}"
                    result = FileResult(self.paths[i], str(self.outputs[i]), "failed", message=problem)
                fut.release()
                nxt = self.settle(i, result)
                if nxt is not None:
                    pending.add(submit(nxt))
        except BaseException:
            with contextlib.suppress(Exception):
                conn.client.cancel(list(index))
            raise
        finally:
            conn.close()
