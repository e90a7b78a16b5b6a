"""Training crops with the augmentations of Ronneberger et al. 2015 and a few more.

One geometric transform per crop (flip, rotation, zoom and the paper's elastic
deformation: random displacements on a coarse grid, smoothly interpolated) is applied to
image, labels and annotation mask together by a single ``map_coordinates`` call, so a
crop costs a few milliseconds on a CPU. Intensity jitter (gain, offset, gamma, noise,
blur) makes the model robust to microscopes it has not seen.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class AugmentParams:
    """How strongly crops are varied: geometry (zoom, rotation, flips, elastic) and intensity."""

    zoom: tuple[float, float] = (0.6, 1.6)  # log-uniform; >1 magnifies
    rotate: bool = True
    flip: bool = True
    elastic_std: float = 6.0  # px, displacement of the coarse grid's points (paper: 10)
    elastic_grid: int = 4
    gain: tuple[float, float] = (0.7, 1.4)
    offset: float = 0.1
    gamma: tuple[float, float] = (0.7, 1.4)
    noise: float = 0.04
    blur: float = 1.0  # max sigma, applied with probability 0.2
    invert: float = 0.0  # probability of inverting contrast (for bright-background modalities)


@functools.lru_cache(maxsize=16)
def _upsampling_matrix(grid: int, crop: int) -> np.ndarray:
    """(crop, grid) matrix of the cubic-spline zoom ``ndi.zoom`` applies along one axis.

    Spline zooming is separable, so zooming a (grid, grid) field is ``A @ field @ A.T``: two
    small matrix products instead of a 2D spline evaluation per crop.
    """
    eye = np.eye(grid, dtype=np.float64)
    cols = [ndi.zoom(e, crop / grid, order=3, mode="nearest")[:crop] for e in eye]
    return np.stack(cols, axis=1).astype(np.float32)


def _coords(crop: int, center: np.ndarray, rng: np.random.Generator, p: AugmentParams) -> np.ndarray:
    """Source coordinates (2, crop, crop) for a crop around ``center`` in the source image."""
    lo, hi = np.log(p.zoom[0]), np.log(p.zoom[1])
    zoom = float(np.exp(rng.uniform(lo, hi))) if hi > lo else float(p.zoom[0])
    angle = rng.uniform(0, 2 * np.pi) if p.rotate else 0.0
    c, s = np.cos(angle) / zoom, np.sin(angle) / zoom
    r = np.arange(crop, dtype=np.float32) - (crop - 1) / 2
    yy, xx = np.meshgrid(r, r, indexing="ij")
    if p.flip and rng.random() < 0.5:
        xx = -xx
    if p.elastic_std > 0:
        g = p.elastic_grid
        disp = rng.normal(0, p.elastic_std, size=(2, g, g)).astype(np.float32)
        a = _upsampling_matrix(g, crop)
        disp = a @ disp @ a.T  # = ndi.zoom(d, crop / g, order=3, mode="nearest"), 50x cheaper
        yy = yy + disp[0]
        xx = xx + disp[1]
    sy = c * yy - s * xx + center[0]
    sx = s * yy + c * xx + center[1]
    return np.stack([sy, sx])


def random_crop(
    image: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray | None,
    crop: int,
    rng: np.random.Generator,
    params: AugmentParams = AugmentParams(),
    centers: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """An augmented (C, crop, crop) image crop with its labels and mask.

    ``centers`` (N, 2) lists candidate crop centres (e.g. annotated pixels); otherwise the
    centre is uniform over the image. Borders are mirrored, as in the paper.
    """
    h, w = labels.shape
    if centers is not None and len(centers):
        center = centers[rng.integers(len(centers))].astype(np.float32)
    else:
        center = np.array([rng.uniform(0, h - 1), rng.uniform(0, w - 1)], np.float32)
    coords = _coords(crop, center, rng, params)
    img = np.stack([ndi.map_coordinates(ch, coords, order=1, mode="mirror") for ch in image])
    lab = ndi.map_coordinates(labels, coords, order=0, mode="mirror")
    msk = None
    if mask is not None:
        msk = ndi.map_coordinates(mask.astype(np.uint8), coords, order=0, mode="constant", cval=0) > 0
    return img.astype(np.float32, copy=False), lab, msk


def jitter_intensity(
    image: np.ndarray, rng: np.random.Generator, p: AugmentParams = AugmentParams()
) -> np.ndarray:
    """Random gain/offset/gamma/noise/blur on a normalised (C, H, W) image (0..1 range)."""
    out = image
    if p.blur > 0 and rng.random() < 0.2:
        sigma = rng.uniform(0.3, p.blur)
        out = np.stack([ndi.gaussian_filter(ch, sigma) for ch in out])
    if p.invert > 0 and rng.random() < p.invert:
        out = 1.0 - out
    g = rng.uniform(*p.gamma)
    out = np.sign(out) * np.abs(out) ** g
    out = out * rng.uniform(*p.gain) + rng.uniform(-p.offset, p.offset)
    if p.noise > 0:
        out = out + rng.normal(0, rng.uniform(0, p.noise), size=out.shape)
    return out.astype(np.float32, copy=False)
