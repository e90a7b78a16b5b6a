"""Prediction: images of any size and axes -> class probabilities -> instance labels.

Everything is a generator that yields :class:`Progress` once per batch of tiles (and once
per post-processed frame) and returns its result, so napari's ``thread_worker`` can drive
it off the GUI thread (the return value arrives as ``returned``; closing the generator
cancels at the next yield) and :func:`segment` simply drains it.

Speed (a CPU is the common case): the net runs under ``torch.inference_mode`` in
channels-last layout, with BatchNorm folded into the convolutions once per model (on a
copy, cached until the weights change, so training never sees it), in bf16 where the
hardware computes it natively (``devices.autocast_dtype``). Tiles are as large as the ``tile`` limit
allows (see :mod:`napari_unet.engine.tiling`), so little compute goes into overlaps.

Normalisation: intensities are mapped by the model's percentiles (``model.normalization``)
computed per time point over the whole z-stack (so all slices of a volume share one
scale) and per channel (channels have unrelated ranges). Where those percentiles
coincide (a sparse image, mostly one value) the min/max range is used instead; a
constant frame has nothing to segment and gives zeros without running the net.
"""

from __future__ import annotations

import copy
import functools
import math
import weakref
from collections.abc import Callable, Generator
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from napari_unet.common.axes import AxesError, guess_axes, labels_from_canonical, to_canonical, validate_axes
from napari_unet.common.generators import drain
from napari_unet.engine.devices import autocast_dtype, select_device
from napari_unet.engine.normalize import BadImageError, check_finite, percentile_bounds
from napari_unet.engine.postprocess import (
    PostprocessParams,
    instances_from_classes,
    instances_from_probabilities,
)
from napari_unet.engine.tiling import TileGrid, grid_for_net
from napari_unet.models.model_file import Model
from napari_unet.models.unet import UNet

__all__ = [
    "PredictConfig",
    "Progress",
    "anisotropy_from_pixel_size",
    "default_params",
    "fuse_batchnorm",
    "iter_probabilities",
    "iter_segment",
    "segment",
    "trained_diameter",
]


@dataclass(frozen=True)
class PredictConfig:
    """How to run the net.

    ``tile``: the largest image part (px per side) one tile contributes; the net sees up to
    ``tile + overlap``. ``overlap``: least overlap of neighbouring tiles for 'same'-padding
    nets (each keeps its half, so seams have ``overlap // 2`` px of context); 'valid' nets
    need none. ``batch_size``: tiles per forward pass (also across z slices); 0 = auto: as
    many as one full-size tile has pixels, so big tiles go one at a time, the small slices
    of a z-stack share a pass, and memory is set by ``tile`` alone. ``amp``: None = reduced
    precision where the hardware is fast at it, True = always, False = fp32.

    Measured on a quiet 2-core AVX512-BF16 CPU (benchmarks/bench_segment.py --variants,
    interleaved rounds, 2048x2048 image): 512-px tiles 1.33 s, 1024-px 1.49 s, one 2048-px
    tile 1.66 s: smaller tiles stay in cache, which outweighs their ~20% overlap. They also
    give the GUI a progress step and a Stop point every ~0.1 s and need little memory.

    ``diameter``: typical object diameter in the image (px); None = as in the training data,
    no rescaling. Like Cellpose's diameter, each (Y, X) plane is zoomed by
    ``trained_diameter(model) / diameter`` (clipped to [0.25, 4]; skipped within 5% of 1)
    before the net, so the objects have the size the net learnt, and the probabilities are
    zoomed back, so the labels keep the image's shape and ``min_size`` is in image pixels.
    Z is never rescaled (anisotropy is kept). The bundled model's nuclei were ~20 px; on
    DSB images with ~35 px nuclei halving the image raised F1 from 0.65 to 0.78.

    ``anisotropy``: z step / xy pixel size of a z-stack (from the file's pixel sizes, see
    :func:`anisotropy_from_pixel_size`); None = unknown, :data:`ASSUMED_ANISOTROPY` is used.
    Z-stacks are predicted slice by slice and post-processed as one volume whose seeds are
    eroded by a physical ball of ``SEED_EROSION`` x the object diameter (see
    :mod:`napari_unet.engine.postprocess`), so this sets how many slices that ball spans.
    """

    tile: int = 512
    overlap: int = 64
    batch_size: int = 0
    device: str = "auto"
    amp: bool | None = None
    diameter: float | None = None
    anisotropy: float | None = None

    def __post_init__(self) -> None:
        if self.tile < 1 or self.overlap < 0 or self.batch_size < 0:
            raise ValueError("tile must be >= 1, overlap and batch_size >= 0")
        if self.diameter is not None and not (math.isfinite(self.diameter) and self.diameter > 0):
            raise ValueError(f"diameter must be a positive number of pixels, got {self.diameter!r}")
        if self.anisotropy is not None and not (math.isfinite(self.anisotropy) and self.anisotropy > 0):
            raise ValueError(f"anisotropy must be a positive z/xy pixel-size ratio, got {self.anisotropy!r}")


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units of ``stage``: tiles for "predict", frames for "postprocess"."""

    done: int
    total: int
    stage: str


# --------------------------------------------------------------------------- inference net


def fuse_batchnorm(net: UNet) -> UNet:
    """An eval-mode copy of ``net`` with every BatchNorm folded into its convolution.

    Saves the BatchNorm pass (about 15% of a forward on a CPU); ``net`` itself is untouched.
    """
    fused = copy.deepcopy(net).eval()
    for seq in fused.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        mods = list(seq)
        for i in range(len(mods) - 1):
            if isinstance(mods[i], nn.Conv2d) and isinstance(mods[i + 1], nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(mods[i], mods[i + 1])
                seq[i + 1] = nn.Identity()
    return fused


class _Runner:
    """A net ready for inference on one device: numpy batch (N, C, h, w) -> logits tensor."""

    def __init__(self, net: UNet, device: torch.device, dtype: torch.dtype | None) -> None:
        self.device, self.dtype = device, dtype
        self.config = net.config
        self.module = fuse_batchnorm(net).to(device=device, memory_format=torch.channels_last)

    def __call__(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
                return self.module(x)


_RUNNERS: weakref.WeakKeyDictionary[UNet, dict[Any, tuple[Any, _Runner]]] = weakref.WeakKeyDictionary()


def _fingerprint(net: UNet) -> tuple:
    """Changes when any weight or statistic changes (in-place training bumps ``_version``)."""
    return tuple((t.data_ptr(), t._version) for t in net.state_dict(keep_vars=True).values())


def _amp_dtype(device: torch.device, amp: bool | None) -> torch.dtype | None:
    if amp is False:
        return None
    dtype = autocast_dtype(device)
    if dtype is None and amp:
        dtype = torch.float16 if device.type == "mps" else torch.bfloat16
    return dtype


def _make_runner(model: Model, config: PredictConfig) -> _Runner:
    """The inference net for ``model``: built once, reused until the model's weights change."""
    device = select_device(config.device)
    dtype = _amp_dtype(device, config.amp)
    key = (str(device), dtype)
    per_net = _RUNNERS.setdefault(model.net, {})
    fp = _fingerprint(model.net)
    hit = per_net.get(key)
    if hit is not None and hit[0] == fp:
        return hit[1]
    runner = _Runner(model.net, device, dtype)
    per_net[key] = (fp, runner)
    return runner


# --------------------------------------------------------------------------- probabilities


def _softmax_into(dst: torch.Tensor, logits: torch.Tensor) -> None:
    """Softmax over dim 0 of ``logits`` written into ``dst`` (float32, on the CPU).

    On the CPU it runs in place in the output: converting channels-last bf16 logits
    straight into the planar output and exponentiating there is 2x faster than
    ``torch.softmax`` plus a copy (0.07 s instead of 0.14 s per 4 Mpixel).
    """
    if logits.device.type != "cpu":
        dst.copy_(torch.softmax(logits.float(), dim=0))
        return
    dst.copy_(logits)
    dst.sub_(dst.amax(dim=0)).exp_()
    dst.div_(dst.sum(dim=0))


def _predict_planes(
    runner: _Runner,
    planes: Callable[[int], np.ndarray],
    n_planes: int,
    grid: TileGrid,
    out: np.ndarray,
    batch_size: int,
    done: int,
    total: int,
) -> Generator[Progress, None, int]:
    """Softmax probabilities of ``n_planes`` normalised (C, H, W) planes into ``out`` (K, Z, H, W).

    Tiles of consecutive planes share batches; a plane is normalised and padded only when
    its first tile is needed and dropped after its last, so a z-stack is never held twice.
    """
    tiles = grid.tiles
    jobs = [(z, t) for z in range(n_planes) for t in tiles]
    padded: dict[int, np.ndarray] = {}
    target = torch.from_numpy(out)
    for i in range(0, len(jobs), batch_size):
        chunk = jobs[i : i + batch_size]
        for z in [z for z in padded if z < chunk[0][0]]:
            del padded[z]
        inputs = []
        for z, t in chunk:
            if z not in padded:
                padded[z] = grid.pad(planes(z))
            inputs.append(padded[z][(..., *t.source)])
        batch = np.ascontiguousarray(np.stack(inputs), dtype=np.float32)
        logits = runner(batch)
        with torch.inference_mode():
            for (z, t), lg in zip(chunk, logits, strict=True):
                _softmax_into(target[(slice(None), z, *t.target)], lg[(..., *t.crop)])
        done += len(chunk)
        yield Progress(done, total, "predict")
    return done


def _grid(model: Model, shape: tuple[int, int], config: PredictConfig) -> TileGrid:
    return grid_for_net(shape, model.net, config.tile, config.overlap, model.config.padding)


def _batch(config: PredictConfig, grid: TileGrid) -> int:
    """Tiles per forward pass (see ``PredictConfig.batch_size``)."""
    if config.batch_size:
        return config.batch_size
    context = 2 * grid.margin[0] if grid.margin[0] else config.overlap
    full = (config.tile + context) ** 2
    return max(1, full // (grid.input_shape[0] * grid.input_shape[1]))


def iter_probabilities(
    model: Model, image: np.ndarray, config: PredictConfig = PredictConfig()
) -> Generator[Progress, None, np.ndarray]:
    """Class probabilities of a normalised (C, H, W) float image, one yield per tile batch.

    Returns (out_channels, H, W) float32 softmax probabilities.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise BadImageError(f"expected a (C, H, W) image, got shape {image.shape}")
    check_finite(image)
    if image.shape[0] != model.config.in_channels:
        raise BadImageError(
            f"model expects {model.config.in_channels} channel(s), image has {image.shape[0]}"
        )
    runner = _make_runner(model, config)
    grid = _grid(model, image.shape[1:], config)
    out = np.empty((model.config.out_channels, 1, *image.shape[1:]), np.float32)
    plane = image.astype(np.float32, copy=False)
    yield from _predict_planes(runner, lambda z: plane, 1, grid, out, _batch(config, grid), 0, len(grid))
    return out[:, 0]


# --------------------------------------------------------------------------- object size

MIN_ZOOM, MAX_ZOOM = 0.25, 4.0
DEFAULT_TRAINED_DIAMETER = 20.0  # px: median equivalent diameter of the bundled training nuclei


def trained_diameter(model: Model) -> float:
    """Typical object diameter (px) in the model's training data, from its card."""
    return float(model.card.get("object_diameter", DEFAULT_TRAINED_DIAMETER))


def _zoom(model: Model, diameter: float | None) -> float | None:
    """Y/X scale factor that gives objects of ``diameter`` px the trained size; None = none."""
    if diameter is None:
        return None
    zoom = min(max(trained_diameter(model) / float(diameter), MIN_ZOOM), MAX_ZOOM)
    return None if abs(zoom - 1.0) < 0.05 else zoom


def _resize(plane: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(C, H, W) float32 -> (C, *shape), bilinear; anti-aliased when shrinking (no moire)."""
    x = torch.from_numpy(np.ascontiguousarray(plane, dtype=np.float32))[None]
    shrink = shape[0] < plane.shape[-2] or shape[1] < plane.shape[-1]
    with torch.inference_mode():
        y = F.interpolate(x, size=shape, mode="bilinear", align_corners=False, antialias=shrink)
    return y[0].numpy()


def _zoomed_plane(planes: Callable[[int], np.ndarray], shape: tuple[int, int], z: int) -> np.ndarray:
    return _resize(planes(z), shape)


def _unzoom(probs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(K, Z, h', w') probabilities -> (K, Z, *shape), one slice at a time (bilinear keeps them
    probabilities: every output is a convex combination of inputs).
    """
    out = np.empty((*probs.shape[:2], *shape), np.float32)
    for z in range(probs.shape[1]):
        out[:, z] = _resize(probs[:, z], shape)
    return out


# --------------------------------------------------------------------------- segmentation


def _bounds(data: np.ndarray, low: float, high: float) -> tuple[float, float] | None:
    """Normalisation bounds of one channel of a frame; None when it is constant."""
    lo, hi = percentile_bounds(data, low, high)
    if hi > lo:
        return lo, hi
    lo, hi = float(data.min()), float(data.max())
    return (lo, hi) if hi > lo else None


def _normalise(plane: np.ndarray, bounds: list[tuple[float, float] | None]) -> np.ndarray:
    """(C, H, W) -> float32 mapped by per-channel bounds (a constant channel becomes 0)."""
    out = np.empty(plane.shape, np.float32)
    for c, b in enumerate(bounds):
        if b is None:
            out[c] = 0.0
        else:
            lo, hi = b
            np.subtract(plane[c], np.float32(lo), out=out[c], dtype=np.float32, casting="unsafe")
            out[c] *= np.float32(1.0 / (hi - lo))
    return out


def _normalise_plane(frame: np.ndarray, bounds: list[tuple[float, float] | None], z: int) -> np.ndarray:
    return _normalise(frame[z], bounds)


def _channels(n_image: int, n_model: int, channel: int | None, has_c: bool) -> slice:
    """Which image channels to feed the net, with one-line errors for every mismatch."""
    if n_model == 1:
        if channel is None:
            if n_image > 1:
                raise AxesError(f"image has {n_image} channels; choose one with channel=0..{n_image - 1}")
            return slice(0, 1)
        if not isinstance(channel, (int, np.integer)) or not 0 <= channel < n_image:
            what = f"{n_image} channel(s)" if has_c else "no channel axis"
            raise AxesError(f"channel={channel!r} does not exist: the image has {what}")
        return slice(int(channel), int(channel) + 1)
    if n_image != n_model:
        raise BadImageError(f"model expects {n_model} channels, image has {n_image}")
    if channel is not None:
        raise AxesError(f"the model takes all {n_model} channels; leave channel=None")
    return slice(0, n_image)


def default_params(model: Model) -> PostprocessParams:
    """Post-processing parameters from the model card (tuned with the model), else defaults."""
    card = model.card.get("postprocess") or {}
    known = {f.name for f in fields(PostprocessParams)}
    return PostprocessParams(**{k: v for k, v in card.items() if k in known})


# Z-stacks: seeds eroded by a ball of this fraction of the object diameter (0.25 x 20 px = 5 px
# for the bundled model). Measured on synthetic stacks with z steps 1-4 px (benchmarks/bench_3d.py):
# 0.2 and 0.3 were worse. Unknown z steps are taken as 3 px: assuming 3 when the truth was 1-4
# lost at most 0.06 F1, assuming 1 (isotropic) on a 3-4x stack lost 0.4.
SEED_EROSION = 0.25
ASSUMED_ANISOTROPY = 3.0


def anisotropy_from_pixel_size(pixel_size: Any) -> float | None:
    """Z step / xy pixel size from a reader's ``meta["pixel_size"]`` ({"X", "Y", "Z"}) or a
    (z, y, x) scale; None when unknown (no Z size, or every size 1, napari's default scale).
    """
    if not pixel_size:
        return None
    if isinstance(pixel_size, dict):
        sizes = {str(k).upper(): v for k, v in pixel_size.items()}
        z, y, x = sizes.get("Z"), sizes.get("Y"), sizes.get("X", sizes.get("Y"))
        y = y if y is not None else x
    else:
        values = list(pixel_size)
        if len(values) < 3:
            return None
        z, y, x = values[-3:]
    try:
        z, xy = float(z), (float(y) + float(x)) / 2
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(z) and math.isfinite(xy) and z > 0 and xy > 0) or (z == 1.0 and xy == 1.0):
        return None
    return z / xy


def _volume_options(model: Model, config: PredictConfig) -> dict[str, float]:
    """Seed erosion (image px) and anisotropy for post-processing a z-stack."""
    zoom = _zoom(model, config.diameter)  # the diameter the net is made to see, clipped
    diameter = trained_diameter(model) / (zoom or 1.0)
    anisotropy = config.anisotropy if config.anisotropy is not None else ASSUMED_ANISOTROPY
    return {"seed_erosion": SEED_EROSION * float(diameter), "anisotropy": float(anisotropy)}


def _instances(
    probs: np.ndarray, params: PostprocessParams, volume: dict[str, float] | None = None
) -> np.ndarray:
    """Labels from (K, ...) probabilities; ``volume``: :func:`_volume_options` for a z-stack."""
    opts = volume if (volume is not None and probs.ndim == 4 and probs.shape[1] > 1) else {}
    if probs.shape[0] == 3:
        return instances_from_classes(probs, params, **opts)
    if probs.shape[0] == 2:  # background / foreground: objects are connected components
        return instances_from_probabilities(probs[1], probs[1], params, **opts)
    raise ValueError(f"cannot turn {probs.shape[0]} output channels into instances (need 2 or 3)")


_LOADED: dict[tuple[str, int, int], Model] = {}


def _as_model(model: Model | str | None) -> Model:
    """A Model from a Model, name or path; files are loaded once (and again when they change),
    so repeated ``segment(image)`` calls do not pay for loading and preparing the net.
    """
    if isinstance(model, Model):
        return model
    from napari_unet.models.registry import load_model, resolve_model_path

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


def iter_segment(
    image: np.ndarray,
    model: Model | str | None = None,
    axes: str | None = None,
    channel: int | None = None,
    params: PostprocessParams | None = None,
    config: PredictConfig = PredictConfig(),
) -> Generator[Progress, None, np.ndarray]:
    """Instance labels of ``image``; yields progress, returns the labels.

    The labels have the image's shape without its C axis, in the image's axis order:
    each T frame is segmented on its own, a Z stack as one volume. ``axes`` None guesses
    (see :func:`napari_unet.common.axes.guess_axes`); ``channel`` picks the channel a one-channel
    model sees. ``image`` may be a dask array: one frame is loaded at a time.
    """
    model = _as_model(model)
    arr = _as_array(image)
    axes = image_axes(arr, axes)
    if isinstance(arr, np.ndarray):
        check_finite(arr)
    can = to_canonical(arr, axes)
    n_t, n_z, n_c, h, w = (int(s) for s in can.shape)
    cin = model.config.in_channels
    chans = _channels(n_c, cin, channel, "C" in axes)
    params = params if params is not None else default_params(model)
    low, high = model.normalization
    runner = _make_runner(model, config)
    zoom = _zoom(model, config.diameter)
    net_hw = (h, w) if zoom is None else (max(1, round(h * zoom)), max(1, round(w * zoom)))
    grid = _grid(model, net_hw, config)
    total = n_t * n_z * len(grid)
    labels = np.zeros((n_t, n_z, h, w), np.uint16)
    done = 0
    for t in range(n_t):
        frame = np.asarray(can[t, :, chans])  # (Z, Cin, H, W); loads one frame of a dask array
        if frame.dtype == bool:  # a mask as image: percentiles need numbers
            frame = frame.view(np.uint8)
        if not isinstance(arr, np.ndarray):
            check_finite(frame)
        bounds = [_bounds(frame[:, c], low, high) for c in range(cin)]
        if all(b is None for b in bounds):
            done += n_z * len(grid)
            yield Progress(done, total, "predict")
        else:
            planes = functools.partial(_normalise_plane, frame, bounds)
            if zoom is not None:
                planes = functools.partial(_zoomed_plane, planes, net_hw)
            probs = np.empty((model.config.out_channels, n_z, *net_hw), np.float32)
            done = yield from _predict_planes(
                runner,
                planes,
                n_z,
                grid,
                probs,
                _batch(config, grid),
                done,
                total,
            )
            del frame, planes
            if zoom is not None:
                probs = _unzoom(probs, (h, w))
            lab = _instances(probs if n_z > 1 else probs[:, 0], params, _volume_options(model, config))
            del probs
            if lab.dtype.itemsize > labels.dtype.itemsize:
                labels = labels.astype(lab.dtype)
            labels[t] = lab.reshape(n_z, h, w)
        yield Progress(t + 1, n_t, "postprocess")
    return labels_from_canonical(labels, axes)


def segment(
    image: np.ndarray,
    model: Model | str | None = None,
    axes: str | None = None,
    channel: int | None = None,
    threshold: float | None = None,
    min_size: int | None = None,
    device: str = "auto",
    **kwargs: Any,
) -> np.ndarray:
    """Instance labels of ``image`` in one call (see :func:`iter_segment`).

    Extra keyword arguments are :class:`PredictConfig` fields (``tile``, ``overlap``,
    ``batch_size``, ``amp``, ``diameter``) or :class:`PostprocessParams` fields (``seed_threshold``,
    ``min_seed_size``); ``config=`` / ``params=`` give whole objects.
    """
    model = _as_model(model)
    config = kwargs.pop("config", None) or PredictConfig()
    params = kwargs.pop("params", None) or default_params(model)
    cfg_kw = {k: kwargs.pop(k) for k in [k for k in kwargs if k in {f.name for f in fields(PredictConfig)}]}
    pp_kw = {
        k: kwargs.pop(k) for k in [k for k in kwargs if k in {f.name for f in fields(PostprocessParams)}]
    }
    if kwargs:
        raise TypeError(f"segment() got unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
    if threshold is not None:
        pp_kw["threshold"] = float(threshold)
    if min_size is not None:
        pp_kw["min_size"] = int(min_size)
    config = replace(config, device=device, **cfg_kw)
    params = replace(params, **pp_kw)
    return drain(iter_segment(image, model, axes, channel, params, config))
