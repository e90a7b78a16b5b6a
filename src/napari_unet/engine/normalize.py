"""Percentile normalisation: the one intensity convention of training and prediction.

Microscopes deliver 8-, 12-, 16-bit and float images with arbitrary offsets; mapping the
``low``/``high`` percentiles to 0/1 makes the network see the same range whatever the camera.
"""

from __future__ import annotations

import numpy as np


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
    step = max(1, flat.size // 4_000_000)
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
