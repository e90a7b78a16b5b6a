"""Segmentation API: images of any size and axes -> class probabilities -> instance labels.

Everything is a generator that yields :class:`Progress` once per batch of tiles (and once
per post-processed frame) and returns its result, so napari's ``thread_worker`` can drive
it off the GUI thread (the return value arrives as ``returned``; closing the generator
cancels at the next yield) and :func:`segment` simply drains it.

The parts live in their own modules: normalisation in :mod:`napari_unet.engine.normalize`,
the net in :mod:`napari_unet.engine.inference`, the object scale (zoom, anisotropy) in
:mod:`napari_unet.engine.object_scale`, the shared setup in :mod:`napari_unet.engine.setup`.
A constant frame has nothing to segment and gives zeros without running the net.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import fields, replace
from typing import Any

import numpy as np

from napari_unet.common.axes import labels_from_canonical
from napari_unet.common.generators import drain
from napari_unet.engine.config import PredictConfig, Progress
from napari_unet.engine.inference import fuse_batchnorm, iter_probabilities, predict_planes
from napari_unet.engine.object_scale import (
    ASSUMED_ANISOTROPY,
    SEED_EROSION,
    anisotropy_from_pixel_size,
    trained_diameter,
    unzoom,
)
from napari_unet.engine.object_size import SizeEstimate, estimate_size
from napari_unet.engine.postprocess import PostprocessParams, instances
from napari_unet.engine.setup import (
    SegmentJob,
    as_model,
    default_params,
    image_axes,
    prepare,
    size_plane,
)
from napari_unet.models.model_file import Model

_log = logging.getLogger("napari_unet")

__all__ = [
    "ASSUMED_ANISOTROPY",
    "SEED_EROSION",
    "PredictConfig",
    "Progress",
    "anisotropy_from_pixel_size",
    "default_params",
    "estimate_object_size",
    "fuse_batchnorm",
    "image_axes",
    "instances",
    "iter_probabilities",
    "iter_segment",
    "segment",
    "trained_diameter",
]


def iter_segment(
    image: np.ndarray,
    model: Model | str | None = None,
    axes: str | None = None,
    channel: int | None = None,
    params: PostprocessParams | None = None,
    config: PredictConfig = PredictConfig(),
) -> Generator[Progress, None, np.ndarray]:
    """Instance labels of ``image``, as a generator that yields progress and returns the labels.

    Each T frame is segmented on its own, a Z stack as one volume. One frame is loaded at a
    time, so a dask array is read frame by frame. Closing the generator cancels at the next
    tile batch.

    Parameters
    ----------
    image : array-like
        Numpy or dask array (anything else is converted with ``np.asarray``), numeric or
        boolean, of up to 5 axes among T, Z, C (or S), Y, X.
    model : Model, str or None
        A loaded :class:`~napari_unet.models.model_file.Model`, a model name, or a ``.pt``
        path; None is the bundled nuclei model. Files are loaded once and cached.
    axes : str, optional
        The image's axis letters, e.g. ``"ZYX"`` or ``"TCYX"``; None guesses them (see
        :func:`napari_unet.common.axes.guess_axes`).
    channel : int, optional
        The channel a one-channel model sees, when the image has several.
    params : PostprocessParams, optional
        Post-processing thresholds and sizes; None takes the model card's (see
        :func:`default_params`).
    config : PredictConfig
        How to run the net: tile size, overlap, batch size, device, precision, object
        diameter, anisotropy (see :class:`PredictConfig`).

    Yields
    ------
    Progress
        ``stage="size"`` once first when the object size was estimated (``detail``: the
        :class:`~napari_unet.engine.object_size.SizeEstimate`), ``stage="predict"`` once per
        tile batch (counting tiles), ``stage="postprocess"`` once per frame (counting frames).

    Returns
    -------
    numpy.ndarray
        Integer labels of the image's shape without its C axis, in the image's axis order
        (0 is background; ids restart in every T frame).

    Raises
    ------
    BadImageError
        Empty, non-numeric or non-finite image, or a channel count the model cannot take.
    AxesError
        Axes that do not fit the image, or a ``channel`` that does not exist.
    ModelFileError
        A model file that cannot be loaded.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_unet.common.generators import drain
    >>> image = np.zeros((64, 64), np.uint16)
    >>> image[20:40, 20:40] = 1000
    >>> labels = drain(iter_segment(image, axes="YX"))
    >>> labels.shape
    (64, 64)
    """
    job = prepare(image, model, axes, channel, params, config)
    if job.size is not None:
        _log.info(job.size.describe())
        yield Progress(1, 1, "size", job.size)
    model = job.model
    n_t, n_z, _, h, w = job.shape
    net_hw = job.net_shape((h, w))
    grid = job.grid((h, w))
    total = n_t * n_z * len(grid)
    labels = np.zeros((n_t, n_z, h, w), np.uint16)
    done = 0
    for t in range(n_t):
        frame, bounds = job.frame(t)  # (Z, Cin, H, W); loads one frame of dask
        if all(b is None for b in bounds):
            done += n_z * len(grid)
            yield Progress(done, total, "predict")
        else:
            reused = _probe_probabilities(job, net_hw) if (n_t, n_z) == (1, 1) else None
            if reused is not None:  # the size estimate already predicted this whole plane
                probs = reused
                done = total
                yield Progress(done, total, "predict")
            else:
                planes = job.planes(frame, bounds, (h, w))
                probs = np.empty((model.config.out_channels, n_z, *net_hw), np.float32)
                done = yield from predict_planes(
                    job.runner, planes, n_z, grid, probs, job.batch_size(grid), done, total
                )
                del planes
            del frame
            if job.zoom is not None:
                probs = unzoom(probs, (h, w))
            lab = instances(probs if n_z > 1 else probs[:, 0], job.params, job.volume)
            del probs
            if lab.dtype.itemsize > labels.dtype.itemsize:
                labels = labels.astype(lab.dtype)
            labels[t] = lab.reshape(n_z, h, w)
        yield Progress(t + 1, n_t, "postprocess")
    return labels_from_canonical(labels, job.axes)


def _probe_probabilities(job: SegmentJob, net_hw: tuple[int, int]) -> np.ndarray | None:
    """The (K, 1, h, w) probabilities the size estimate already computed for this plane.

    They exist when its last probe covered the whole (single) plane at the scale this run uses
    (a small image, at the model's own scale); else None.
    """
    size = job.size
    if size is None or size.probs is None or job.config.accurate:
        return None
    probs = size.probs
    if probs.shape[-2:] != tuple(net_hw):
        return None
    return probs[:, None]


class _FromConfig:
    """Default of a keyword that overrides one field of ``config``/``params``: keep that field.

    Its repr is the field's own default, so ``help(segment)`` shows the real default.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


def estimate_object_size(
    image: np.ndarray,
    model: Model | str | None = None,
    *,
    axes: str | None = None,
    channel: int | None = None,
    device: str = "auto",
) -> SizeEstimate:
    """The object size :func:`segment` would find in ``image`` by itself, without segmenting it.

    The model probes a few small windows of one plane (the middle z of the first time point);
    see :mod:`napari_unet.engine.object_size`.

    Parameters
    ----------
    image : array-like
        Numpy, dask or zarr array of up to 5 axes among T, Z, C (or S), Y, X; only the probe
        windows are read.
    model : Model, str or None
        A loaded model, a model name or a ``.pt`` path; None is the bundled nuclei model.
    axes : str, optional
        The image's axis letters; None guesses them.
    channel : int, optional
        The channel a one-channel model sees, when the image has several.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.

    Returns
    -------
    SizeEstimate
        ``diameter``: the typical object diameter in image px (None when too few objects were
        found), to check, correct and give back as ``segment(diameter=...)``; ``applied``: the
        diameter ``segment`` would rescale by (None: the model's own scale);
        ``describe()``: one line.

    Raises
    ------
    BadImageError, AxesError, ModelFileError
        With a one-line message, as :func:`segment`.

    Examples
    --------
    >>> import numpy as np
    >>> est = estimate_object_size(np.zeros((64, 64), np.uint16), axes="YX")
    >>> est.diameter is None  # a blank image has no objects to measure
    True
    """
    job = prepare(image, model, axes, channel, None, PredictConfig(device=device, estimate_size=False))
    # the probes take the card's sizes at the model's scale, as in prepare (job.params are the image's)
    params = default_params(job.model)
    return estimate_size(job.model, size_plane(job.canonical, job.channels), params, job.config)


def _field_default(cls: type, name: str) -> Any:
    return _FromConfig(next(f.default for f in fields(cls) if f.name == name))


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if not isinstance(v, _FromConfig)}


def segment(
    image: np.ndarray,
    model: Model | str | None = None,
    *,
    axes: str | None = None,
    channel: int | None = None,
    threshold: float | None = None,
    min_size: int | None = None,
    device: str = "auto",
    tile: int = _field_default(PredictConfig, "tile"),
    overlap: int = _field_default(PredictConfig, "overlap"),
    batch_size: int = _field_default(PredictConfig, "batch_size"),
    amp: bool | None = _field_default(PredictConfig, "amp"),
    diameter: float | None = _field_default(PredictConfig, "diameter"),
    anisotropy: float | None = _field_default(PredictConfig, "anisotropy"),
    estimate_size: bool = _field_default(PredictConfig, "estimate_size"),
    accurate: bool = _field_default(PredictConfig, "accurate"),
    seed_threshold: float = _field_default(PostprocessParams, "seed_threshold"),
    min_seed_size: int = _field_default(PostprocessParams, "min_seed_size"),
    split_depth: float | None = None,
    config: PredictConfig | None = None,
    params: PostprocessParams | None = None,
) -> np.ndarray:
    """Instance labels of ``image`` in one call (:func:`iter_segment`, drained).

    Parameters
    ----------
    image : array-like
        Numpy or dask array (anything else is converted with ``np.asarray``), of up to 5
        axes among T, Z, C (or S), Y, X.
    model : Model, str or None
        A loaded model, a model name or a ``.pt`` path; None is the bundled nuclei model.
    axes : str, optional
        The image's axis letters, e.g. ``"YX"``, ``"ZYX"``, ``"TCYX"``; None guesses.
    channel : int, optional
        The channel a one-channel model sees, when the image has several.
    threshold : float, optional
        Foreground probability cut; None keeps ``params.threshold`` (the model card's).
    min_size : int, optional
        Smallest object in pixels (voxels in 3D) at the model's working scale, which is the
        image's own unless the image is rescaled for the object size (then the size is
        converted, as are the card's: ``PostprocessParams.for_zoom``); None keeps
        ``params.min_size``.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``; overrides ``config.device``.
    tile : int, default 512
        The largest image part (px per side) one tile contributes; overrides ``config.tile``.
    overlap : int, default 64
        Least overlap of neighbouring tiles in px; overrides ``config.overlap``.
    batch_size : int, default 0
        Tiles per forward pass, 0 = as many as fit the memory of one full tile; overrides
        ``config.batch_size``.
    amp : bool or None, default None
        Reduced precision: None where the hardware is fast at it, True always, False never;
        overrides ``config.amp``.
    diameter : float or None, default None
        Typical object diameter in image px; planes are zoomed so objects get the size the
        model learnt. None: estimated (see ``estimate_size``). Overrides ``config.diameter``.
    anisotropy : float or None, default None
        Z step / xy pixel size of a z-stack; None: unknown (an assumed ratio is used).
        Overrides ``config.anisotropy``.
    estimate_size : bool, default True
        With no ``diameter``: estimate the objects' size from the image with the model (a few
        small probes, logged on the ``napari_unet`` logger) and rescale when it is far from
        the trained size; False keeps the model's own scale. Overrides
        ``config.estimate_size``.
    accurate : bool, default False
        Test-time augmentation: the net also sees the mirror images of each tile and the
        results are averaged (4x the network time, see ``benchmarks/bench_segment.py``).
        Overrides ``config.accurate``.
    seed_threshold : float, default 0.5
        Interior probability that makes a seed; overrides ``params.seed_threshold``.
    min_seed_size : int, default 4
        Smallest seed in pixels; overrides ``params.min_seed_size``.
    split_depth : float, optional
        Cut 2D seeds at waists this many px narrower than the cores either side (touching
        nuclei whose interiors meet); 0 turns it off; None keeps ``params.split_depth`` (the
        model card's: 1.0 for the bundled model).
    config : PredictConfig, optional
        All the run settings at once; the keywords above override its fields.
    params : PostprocessParams, optional
        All the post-processing settings at once (None: the model card's); the keywords
        above override its fields.

    Returns
    -------
    numpy.ndarray
        Integer labels of the image's shape without its C axis, in the image's axis order.

    Raises
    ------
    TypeError
        An unknown keyword argument.
    ValueError
        A setting out of range (e.g. ``tile=0``, ``diameter=-1``).
    BadImageError
        Empty, non-numeric or non-finite image, or a channel count the model cannot take.
    AxesError
        Axes that do not fit the image, or a ``channel`` that does not exist.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.zeros((64, 64), np.uint16)
    >>> image[10:30, 10:30] = 1000
    >>> image[40:60, 35:55] = 1000
    >>> labels = segment(image, axes="YX", min_size=20, tile=256)
    >>> labels.shape, labels.dtype.kind
    ((64, 64), 'u')
    """
    model = as_model(model)
    config = config or PredictConfig()
    params = params or default_params(model)
    cfg_kw = _given(
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        amp=amp,
        diameter=diameter,
        anisotropy=anisotropy,
        estimate_size=estimate_size,
        accurate=accurate,
    )
    pp_kw = _given(seed_threshold=seed_threshold, min_seed_size=min_seed_size)
    if threshold is not None:
        pp_kw["threshold"] = float(threshold)
    if min_size is not None:
        pp_kw["min_size"] = int(min_size)
    if split_depth is not None:
        pp_kw["split_depth"] = float(split_depth)
    config = replace(config, device=device, **cfg_kw)
    params = replace(params, **pp_kw)
    return drain(iter_segment(image, model, axes, channel, params, config))
