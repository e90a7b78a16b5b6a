"""Percentile normalisation: the one intensity convention of training and prediction.

Microscopes deliver 8-, 12-, 16-bit and float images with arbitrary offsets; mapping the
``low``/``high`` percentiles to 0/1 makes the network see the same range whatever the camera.

Prediction and training normalise per time point over the whole z-stack (all slices of a
volume share one scale) and per channel (channels have unrelated ranges), through
:func:`channel_bounds` and :func:`apply_bounds`. Where the percentiles coincide (a sparse
image, mostly one value) the min/max range is used instead, and a constant channel has no
bounds at all (it becomes zeros). :func:`normalize` is the plain mapping of one array (a
constant array maps to zeros), used by scripts and benchmarks on whole images.
"""

from __future__ import annotations

import numpy as np

from napari_unet.common.axes import AxesError

__all__ = [
    "SAMPLE_VOXELS",
    "BadImageError",
    "Bounds",
    "apply_bounds",
    "channel_bounds",
    "check_finite",
    "normalised_plane",
    "normalize",
    "percentile_bounds",
    "range_fallback",
    "select_channels",
]

SAMPLE_VOXELS = 4_000_000  # percentiles are estimated on at most about this many voxels

Bounds = tuple[float, float] | None  # (low, high) intensity of one channel; None: constant


class BadImageError(ValueError):
    """An image that cannot be segmented (empty, non-numeric, NaN/inf, wrong shape)."""


def check_finite(image: np.ndarray) -> None:
    """Refuse images the network would turn into garbage, with a one-line reason."""
    if image.size == 0:
        raise BadImageError(f"image is empty (shape {image.shape})")
    if image.dtype.kind not in "biuf":
        raise BadImageError(f"image has non-numeric dtype {image.dtype}")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        bad = int((~np.isfinite(image)).sum())
        raise BadImageError(f"image has {bad} NaN/inf pixel(s)")


def percentile_bounds(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> tuple[float, float]:
    """Percentiles of a (possibly large) image, estimated on at most ~4 Mpixel for speed."""
    flat = np.asarray(image).reshape(-1)
    step = max(1, flat.size // SAMPLE_VOXELS)
    sample = flat[::step]
    lo, hi = np.percentile(sample, [low, high])
    return float(lo), float(hi)


def normalize(
    image: np.ndarray,
    low: float = 1.0,
    high: float = 99.8,
    bounds: tuple[float, float] | None = None,
) -> np.ndarray:
    """Map the low/high percentiles to 0/1 (float32). A constant image maps to zeros."""
    lo, hi = bounds if bounds is not None else percentile_bounds(image, low, high)
    out = np.asarray(image, dtype=np.float32)
    scale = np.float32(1.0 / (hi - lo)) if hi > lo else np.float32(0.0)
    return (out - np.float32(lo)) * scale


def range_fallback(percentiles: tuple[float, float], lo: float, hi: float) -> Bounds:
    """The percentiles when they differ, else the min/max range ``lo, hi``, else None (constant).

    The one rule for degenerate channels, shared by the in-memory and the streamed (chunked)
    bounds, so both map intensities identically.
    """
    p_lo, p_hi = percentiles
    if p_hi > p_lo:
        return p_lo, p_hi
    return (lo, hi) if hi > lo else None


def channel_bounds(data: np.ndarray, low: float, high: float) -> Bounds:
    """Normalisation bounds of one channel of a frame; None when it is constant."""
    percentiles = percentile_bounds(data, low, high)
    if percentiles[1] > percentiles[0]:  # the common case: no min/max pass over the frame
        return percentiles
    return range_fallback(percentiles, float(data.min()), float(data.max()))


def apply_bounds(plane: np.ndarray, bounds: list[Bounds]) -> np.ndarray:
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


def normalised_plane(frame: np.ndarray, bounds: list[Bounds], z: int) -> np.ndarray:
    """Slice ``z`` of a (Z, C, H, W) frame, normalised: what the engine feeds the net, lazily."""
    return apply_bounds(frame[z], bounds)


def select_channels(n_image: int, n_model: int, channel: int | None, has_c: bool) -> slice:
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
