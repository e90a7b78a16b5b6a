"""The records of a batch: options, per-file results, and the errors that end a file or a batch.

A worker is told :class:`BatchOptions` and reports a :class:`FileResult`. Small, frozen and
picklable, so Dask can ship them to any worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["BatchInputError", "BatchOptions", "FileResult", "SchedulerError", "Status", "one_line"]

Status = Literal["done", "skipped", "failed"]


class BatchInputError(Exception):
    """One file cannot be segmented; the message is the one line shown to the user."""


class SchedulerError(Exception):
    """The Dask scheduler asked for cannot be used; raised before any file is processed."""


@dataclass(frozen=True)
class BatchOptions:
    """Everything a worker needs to segment one file; small and picklable.

    Parameters
    ----------
    model : str, optional
        A model name or an absolute ``.pt`` path; None is the bundled model. Workers load it
        themselves, so on a cluster the path must be visible to them (shared file system).
    axes : str, optional
        The inputs' axis letters (``--axes``); None: as each file declares, else guessed.
    channel : int, optional
        The channel a one-channel model sees, when the images have several.
    threshold : float, optional
        Foreground probability cut; None: the model card's.
    min_size : int, optional
        Smallest object in pixels (voxels in 3D); None: the model card's.
    diameter : float, optional
        Typical object diameter in image px (the images are zoomed so objects get the size
        the model learnt); None: estimated from each image when ``estimate_size``.
    estimate_size : bool
        With no ``diameter``, estimate each image's object size with the model and rescale
        when it is far from the trained size (see :mod:`napari_unet.engine.object_size`);
        False keeps the model's own scale.
    accurate : bool
        Test-time augmentation (mirror images averaged; 4x the network time).
    measure : bool
        Also write ``<stem>_objects.csv`` beside the labels: one row per object
        (:func:`napari_unet.engine.measure.measure_labels`), in physical units when the file
        has a pixel size.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    format : str
        ``"tif"``, ``"zarr"`` (OME-Zarr) or ``"auto"`` (OME-Zarr for OME-Zarr inputs, TIFF
        for everything else).
    overwrite : bool
        Redo inputs whose output exists, and replace files there that are not ours.
    torch_threads : int, optional
        torch threads per worker process; None leaves torch's default (Dask's nanny starts
        workers with OMP_NUM_THREADS=1, i.e. one thread each).
    track : bool
        Time-lapses: an object keeps its id from frame to frame.

    Raises
    ------
    ValueError
        An unknown ``format``.

    Examples
    --------
    >>> options = BatchOptions(model="nuclei", diameter=30.0, format="zarr")
    >>> options.device
    'auto'
    """

    model: str | None = None
    axes: str | None = None
    channel: int | None = None
    threshold: float | None = None
    min_size: int | None = None
    diameter: float | None = None
    estimate_size: bool = True
    accurate: bool = False
    measure: bool = False
    device: str = "auto"
    format: str = "auto"
    overwrite: bool = False
    torch_threads: int | None = None
    track: bool = False  # time-lapses: an object keeps its id from frame to frame

    def __post_init__(self) -> None:
        if self.format not in ("auto", "tif", "zarr"):
            raise ValueError(f"format must be 'auto', 'tif' or 'zarr', not {self.format!r}")


@dataclass(frozen=True)
class FileResult:
    """What happened to one input; ``message`` is one line (the problem, or why it was skipped)."""

    input: str
    output: str | None
    status: Status
    objects: int | None = None
    seconds: float = 0.0
    message: str = ""
    worker: str = ""
    size: str = ""  # the object-size estimate in a few words, and other notes for the file's line


def one_line(text: object) -> str:
    """The first line of a message, whitespace collapsed: what a batch reports per file."""
    text = str(text).strip()
    return " ".join(text.split("\n")[0].split()) if text else "unknown error"
