"""One setup step for every segmentation engine: the caller's arguments -> a ready :class:`SegmentJob`.

The in-memory engine (:func:`napari_unet.engine.predict.iter_segment`) and the chunked one
(:mod:`napari_unet.scale.chunked`) resolve the model, the axes, the channels, the
post-processing parameters, the inference net and the object scale the same way, in the
same order (so the same bad argument gives the same one-line error first), through
:func:`prepare`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from napari_unet.common.axes import guess_axes, to_canonical, validate_axes
from napari_unet.engine.config import PredictConfig
from napari_unet.engine.inference import Runner, make_runner, tile_grid, tiles_per_batch
from napari_unet.engine.normalize import (
    BadImageError,
    Bounds,
    channel_bounds,
    check_finite,
    normalised_plane,
    select_channels,
)
from napari_unet.engine.object_scale import net_shape, volume_options, zoom_factor, zoomed_plane
from napari_unet.engine.object_size import SizeEstimate, estimate_size
from napari_unet.engine.postprocess import PostprocessParams
from napari_unet.engine.tiling import TileGrid
from napari_unet.models.model_file import Model
from napari_unet.models.registry import load_model, resolve_model_path

__all__ = [
    "SegmentJob",
    "array_axes",
    "as_model",
    "as_numbers",
    "default_params",
    "image_axes",
    "prepare",
    "size_plane",
]

_LOADED: dict[tuple[str, int, int], Model] = {}


def as_model(model: Model | str | None) -> Model:
    """A Model from a Model, name or path (None: the bundled model).

    Files are loaded once (and again when they change), so repeated ``segment(image)`` calls
    do not pay for loading and preparing the net.
    """
    if isinstance(model, Model):
        return model
    path = resolve_model_path(model)
    try:
        st = path.stat()
    except OSError:
        return load_model(path)  # raises the registry's one-line error
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _LOADED:
        if len(_LOADED) >= 4:
            _LOADED.clear()
        _LOADED[key] = load_model(path)
    return _LOADED[key]


def _as_array(image: Any) -> Any:
    """Numpy or dask arrays pass through (dask stays lazy); anything else becomes numpy."""
    if isinstance(image, np.ndarray) or (
        hasattr(image, "shape") and hasattr(image, "dtype") and hasattr(image, "transpose")
    ):
        return image
    return np.asarray(image)


def image_axes(arr: Any, axes: str | None) -> str:
    """Refuse an empty or non-numeric image (one line) and settle its axes (given or guessed)."""
    if arr.ndim == 0 or any(int(s) == 0 for s in arr.shape):
        raise BadImageError(f"image is empty (shape {tuple(arr.shape)})")
    if np.dtype(arr.dtype).kind not in "biuf":
        raise BadImageError(f"image has non-numeric dtype {arr.dtype}")
    return validate_axes(axes, arr.shape) if axes is not None else guess_axes(arr.shape)


def array_axes(image: Any, axes: str | None) -> str:
    """The axes of an image that must already be an array (``shape`` and ``dtype``), checked."""
    if not hasattr(image, "shape") or not hasattr(image, "dtype"):
        raise BadImageError(f"cannot segment a {type(image).__name__}: give a numpy, dask or zarr array")
    return image_axes(image, axes)


def as_numbers(data: np.ndarray) -> np.ndarray:
    """A boolean array (a mask given as image) viewed as uint8: percentiles need numbers."""
    return data.view(np.uint8) if data.dtype == bool else data


def default_params(model: Model) -> PostprocessParams:
    """Post-processing parameters from the model card (tuned with the model), else defaults."""
    card = model.card.get("postprocess") or {}
    known = {f.name for f in fields(PostprocessParams)}
    values = {k: v for k, v in card.items() if k in known}
    for key in ("min_size", "min_seed_size"):  # a card written as JSON may say 30.0
        if isinstance(values.get(key), float) and values[key].is_integer():
            values[key] = int(values[key])
    return PostprocessParams(**values)


@dataclass(frozen=True)
class SegmentJob:
    """Everything an engine needs to segment one image, resolved and checked once.

    ``image`` is the array as the engine reads it (numpy, or dask for lazy input) and
    ``canonical`` a (T, Z, C, Y, X) view of it; ``channels`` the channels fed to the net;
    ``params`` the post-processing at the image's own scale (the card's sizes are at the
    model's: :meth:`~napari_unet.engine.postprocess.PostprocessParams.for_zoom`);
    ``zoom`` the Y/X factor of the object scale (None: none); ``volume`` the post-processing
    options of a z-stack (see :func:`napari_unet.engine.object_scale.volume_options`);
    ``size`` the object-size estimate when one was made (``config.diameter`` then holds the
    diameter it applied, if any).
    """

    model: Model
    image: Any
    axes: str
    canonical: Any
    channels: slice
    params: PostprocessParams
    config: PredictConfig
    runner: Runner
    zoom: float | None
    volume: dict[str, float]
    size: SizeEstimate | None = None

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """(T, Z, C, Y, X) sizes of the image."""
        n_t, n_z, n_c, h, w = (int(s) for s in self.canonical.shape)
        return n_t, n_z, n_c, h, w

    def net_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """The (h, w) the net sees for an image part of ``shape`` (after the zoom)."""
        return net_shape(shape, self.zoom)

    def grid(self, shape: tuple[int, int]) -> TileGrid:
        """The tile grid for an image part of ``shape`` (image px; the zoom is applied here)."""
        return tile_grid(self.model, self.net_shape(shape), self.config)

    def batch_size(self, grid: TileGrid) -> int:
        """Tiles per forward pass for ``grid``."""
        return tiles_per_batch(self.config, grid)

    def frame(self, t: int) -> tuple[np.ndarray, list[Bounds]]:
        """Time point ``t`` as numbers (Z, Cin, H, W), read once, and its normalisation bounds.

        The bounds are per channel over the whole z-stack, so every slice of a stack is
        normalised alike; a channel with nothing to normalise (constant) has None. A lazily read
        frame is checked for NaN/inf here (an in-memory image was checked whole by
        :func:`prepare`).
        """
        frame = as_numbers(np.asarray(self.canonical[t, :, self.channels]))  # loads one frame of dask
        if not isinstance(self.image, np.ndarray):
            check_finite(frame)
        low, high = self.model.normalization
        return frame, [channel_bounds(frame[:, c], low, high) for c in range(self.model.config.in_channels)]

    def planes(
        self, frame: np.ndarray, bounds: list[Bounds], shape: tuple[int, int]
    ) -> Callable[[int], np.ndarray]:
        """Plane z of a (Z, C, h, w) ``frame``, normalised by ``bounds`` and zoomed, on demand."""
        planes = functools.partial(normalised_plane, frame, bounds)
        if self.zoom is not None:
            planes = functools.partial(zoomed_plane, planes, self.net_shape(shape))
        return planes


def size_plane(canonical: Any, channels: slice) -> Any:
    """The (C, Y, X) plane an image's object size is estimated on.

    The middle z of the first time point; lazy arrays stay lazy (only the probe windows are
    read).
    """
    return canonical[0, int(canonical.shape[1]) // 2, channels]


def prepare(
    image: Any,
    model: Model | str | None = None,
    axes: str | None = None,
    channel: int | None = None,
    params: PostprocessParams | None = None,
    config: PredictConfig = PredictConfig(),
    *,
    view: Callable[[Any, str], Any] | None = None,
    check: Callable[[Any, str], None] | None = None,
) -> SegmentJob:
    """Resolve and check everything an engine needs, in one order, raising one-line errors.

    Parameters
    ----------
    image : array-like
        The image. Without ``view`` anything array-like (numpy, dask, nested lists) is
        accepted; with it, an array with ``shape`` and ``dtype`` is required.
    model, axes, channel, params, config
        As for :func:`napari_unet.engine.predict.iter_segment`.
    view : callable, optional
        ``view(image, axes)`` gives the array the engine reads (the chunked engine's lazy,
        chunk-aware view); the default keeps numpy and dask arrays as they are.
    check : callable, optional
        ``check(array, axes)`` runs once the image is known to be valid and before the
        model is prepared (the chunked engine checks its output array here).

    Returns
    -------
    SegmentJob
        The resolved job.

    Raises
    ------
    BadImageError, AxesError, ModelFileError, ValueError
        With a one-line message, for the first problem found.
    """
    model = as_model(model)
    if view is None:
        arr = _as_array(image)
        axes = image_axes(arr, axes)
    else:
        axes = array_axes(image, axes)
        arr = view(image, axes)
    if isinstance(arr, np.ndarray):
        check_finite(arr)
    if check is not None:
        check(arr, axes)
    can = to_canonical(arr, axes)
    n_c = int(can.shape[2])
    chans = select_channels(n_c, model.config.in_channels, channel, "C" in axes)
    params = params if params is not None else default_params(model)
    runner = make_runner(model, config)
    size = None
    if config.diameter is None and config.estimate_size:
        size = estimate_size(model, size_plane(can, chans), params, config)
        if size.applied is not None:
            config = replace(config, diameter=size.applied)
    zoom = zoom_factor(model, config.diameter)
    params = params.for_zoom(zoom)  # sizes are at the model's scale; instances are found at the image's
    return SegmentJob(
        model, arr, axes, can, chans, params, config, runner, zoom, volume_options(model, config), size
    )
