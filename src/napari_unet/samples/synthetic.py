"""Synthetic fluorescence nuclei with exact ground truth: 2D, 3D z-stack and time-lapse.

Real data with instance ground truth is scarce and heavy to ship, so the samples, the
widget tests and the benchmarks draw images here instead. The images are made the way a
widefield camera makes them, so that a model trained on real nuclei (DSB 2018) sees
something familiar: elliptical nuclei (some touching, some dim) with chromatin texture and
a slightly darker rim, blurred by a point spread function, on an uneven background,
recorded as Poisson photon counts plus Gaussian read noise over a camera offset (uint16).

Every function is deterministic for a given ``seed`` and returns a :class:`SyntheticNuclei`
(image, ground-truth instance labels with one id per nucleus, axes and pixel spacing).
Nothing here imports Qt or torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["SyntheticNuclei", "nuclei_2d", "nuclei_3d", "nuclei_timelapse"]


@dataclass(frozen=True)
class SyntheticNuclei:
    """An image, its instance labels (same shape, 0 = background), axes and pixel spacing."""

    image: np.ndarray
    labels: np.ndarray
    axes: str
    scale: tuple[float, ...]

    @property
    def n_objects(self) -> int:
        """How many nuclei the ground truth holds."""
        return int(np.unique(self.labels[self.labels > 0]).size)


@dataclass
class _Nucleus:
    """An ellipse/ellipsoid in physical units: ``|inv_axes @ (x - center)| < 1`` is inside."""

    center: np.ndarray  # (d,) physical coordinates
    rotation: np.ndarray  # (d, d) columns are the principal directions
    semi_axes: np.ndarray  # (d,) physical half lengths
    brightness: float

    @property
    def inv(self) -> np.ndarray:
        return (self.rotation / self.semi_axes).T


def _rotation_2d(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def _rotation_3d(yaw: float, tilt: float) -> np.ndarray:
    """Rotation about z by ``yaw`` then a small tilt about y: nuclei lie flat on the coverslip."""
    rz = np.eye(3)
    rz[1:, 1:] = _rotation_2d(yaw)
    ct, st = np.cos(tilt), np.sin(tilt)
    ry = np.array([[ct, 0.0, -st], [0.0, 1.0, 0.0], [st, 0.0, ct]])  # (z, y, x) axis order
    return ry @ rz


class _Canvas:
    """Rasterises nuclei one by one; touching nuclei meet along a plausible boundary.

    Where two overlap, a pixel goes to the nucleus whose normalised elliptical distance is
    smaller, instead of one covering the other.
    """

    def __init__(self, shape: tuple[int, ...], spacing: tuple[float, ...]) -> None:
        self.shape = shape
        self.spacing = np.asarray(spacing, float)
        self.labels = np.zeros(shape, np.uint16)
        self.r2 = np.full(shape, np.inf, np.float32)

    def _box(self, n: _Nucleus) -> tuple[tuple[slice, ...], np.ndarray] | None:
        reach = np.abs(n.rotation * n.semi_axes).sum(axis=1) / self.spacing  # bbox half-size in px
        centre_px = n.center / self.spacing
        lo = np.maximum(np.floor(centre_px - reach).astype(int), 0)
        hi = np.minimum(np.ceil(centre_px + reach).astype(int) + 1, self.shape)
        if np.any(hi <= lo):
            return None
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        grids = np.meshgrid(
            *[(np.arange(a, b) * s - c) for a, b, s, c in zip(lo, hi, self.spacing, n.center, strict=True)],
            indexing="ij",
            sparse=True,
        )
        inv = n.inv
        r2 = sum((sum(inv[i, j] * grids[j] for j in range(len(grids)))) ** 2 for i in range(len(grids)))
        return box, np.asarray(r2, np.float32)

    def overlap(self, n: _Nucleus) -> tuple[float, int]:
        """Fraction of the candidate's area already covered, and its area inside the image."""
        got = self._box(n)
        if got is None:
            return 1.0, 0
        box, r2 = got
        inside = r2 < 1.0
        area = int(inside.sum())
        if area == 0:
            return 1.0, 0
        return float((self.labels[box][inside] > 0).sum()) / area, area

    def draw(self, n: _Nucleus, label: int) -> None:
        got = self._box(n)
        if got is None:
            return
        box, r2 = got
        mine = (r2 < 1.0) & (r2 < self.r2[box])
        self.labels[box][mine] = label
        self.r2[box][mine] = r2[mine]


def _place(
    rng: np.random.Generator,
    canvas: _Canvas,
    n_target: int,
    make: Callable[[], _Nucleus],
    touch_fraction: float,
    max_overlap: float,
    min_area: int,
) -> list[_Nucleus]:
    """Random sequential placement; a share of nuclei is put against an earlier one (touching)."""
    placed: list[_Nucleus] = []
    attempts = 0
    while len(placed) < n_target and attempts < 40 * n_target:
        attempts += 1
        cand = make()
        if placed and rng.random() < touch_fraction:
            other = placed[rng.integers(len(placed))]
            d = cand.center.size
            direction = np.zeros(d)
            direction[-2:] = rng.normal(size=2)  # neighbours sit side by side in the xy plane
            direction /= np.linalg.norm(direction)
            gap = 0.92 * (other.semi_axes[-2:].mean() + cand.semi_axes[-2:].mean())
            cand.center = other.center + direction * gap
            if d == 3:
                cand.center[0] = other.center[0] + rng.normal(0, 0.3 * other.semi_axes[0])
        frac, area = canvas.overlap(cand)
        if area < min_area or frac > max_overlap:
            continue
        placed.append(cand)
        canvas.draw(cand, len(placed))
    return placed


def _texture(rng: np.random.Generator, shape: tuple[int, ...], sigma: tuple[float, ...]) -> np.ndarray:
    """Band-limited noise with unit variance: the granular look of chromatin."""
    t = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return t / max(float(t.std()), 1e-6)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: int = 4) -> np.ndarray:
    """A slowly varying field in [0, 1] (uneven illumination, background haze)."""
    grid = rng.random((coarse,) * len(shape)).astype(np.float32)
    zoom = [s / coarse for s in shape]
    field = ndi.zoom(grid, zoom, order=3, mode="nearest", grid_mode=True)[tuple(slice(0, s) for s in shape)]
    field -= field.min()
    return field / max(float(field.max()), 1e-6)


def _signal(canvas: _Canvas, nuclei: list[_Nucleus], texture: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Emitter density: per-nucleus brightness, darker rim, chromatin texture."""
    lut = np.zeros(len(nuclei) + 1, np.float32)
    lut[1:] = [n.brightness for n in nuclei]
    inside = canvas.labels > 0
    r2 = np.where(inside, canvas.r2, 1.0)
    profile = 1.0 - 0.35 * r2**2  # DNA thins towards the envelope: touching nuclei show a seam
    sig = lut[canvas.labels] * profile * np.clip(1.0 + 0.22 * texture, 0.3, None)
    return (sig * inside * scale).astype(np.float32)


def _camera(
    rng: np.random.Generator,
    photons: np.ndarray,
    offset: float = 100.0,
    read_noise: float = 3.0,
) -> np.ndarray:
    """Poisson shot noise, Gaussian read noise and an offset, as a 16-bit camera records."""
    counts = rng.poisson(np.clip(photons, 0, None)).astype(np.float32)
    counts += rng.normal(offset, read_noise, size=photons.shape).astype(np.float32)
    return np.clip(np.rint(counts), 0, 65535).astype(np.uint16)


def _random_2d_nucleus(
    rng: np.random.Generator, shape: tuple[int, int], radius: tuple[float, float]
) -> _Nucleus:
    r = rng.uniform(*radius)
    aspect = rng.uniform(0.65, 1.0)
    semi = np.array([r, r * aspect])
    centre = rng.uniform([0.0, 0.0], shape)
    bright = rng.uniform(0.35, 1.0) if rng.random() < 0.2 else rng.uniform(0.7, 1.0)
    return _Nucleus(centre, _rotation_2d(rng.uniform(0, np.pi)), semi, bright)


def _render_2d(
    rng: np.random.Generator,
    shape: tuple[int, int],
    canvas: _Canvas,
    nuclei: list[_Nucleus],
    peak_photons: float,
    bleach: float = 1.0,
    illumination: np.ndarray | None = None,
    background: np.ndarray | None = None,
) -> np.ndarray:
    texture = _texture(rng, shape, (1.2, 1.2))
    sig = _signal(canvas, nuclei, texture)
    sig = ndi.gaussian_filter(sig, 1.3)  # widefield PSF, sigma ~1.3 px
    illum = illumination if illumination is not None else 0.75 + 0.25 * _smooth_field(rng, shape)
    bg = background if background is not None else 0.03 + 0.05 * _smooth_field(rng, shape)
    return _camera(rng, peak_photons * bleach * illum * (sig + bg))


def _place_2d(
    rng: np.random.Generator,
    canvas: _Canvas,
    shape: tuple[int, int],
    n_nuclei: int,
    radius: tuple[float, float],
    touch_fraction: float,
    max_overlap: float,
) -> list[_Nucleus]:
    """Place random 2D nuclei on ``canvas``; none smaller than half the smallest radius' disk."""
    return _place(
        rng,
        canvas,
        n_nuclei,
        lambda: _random_2d_nucleus(rng, shape, radius),
        touch_fraction=touch_fraction,
        max_overlap=max_overlap,
        min_area=int(0.5 * np.pi * radius[0] ** 2),
    )


def nuclei_2d(
    shape: tuple[int, int] = (512, 512),
    n_nuclei: int = 60,
    radius: tuple[float, float] = (8.0, 20.0),
    seed: int = 0,
    peak_photons: float = 400.0,
) -> SyntheticNuclei:
    """A 2D widefield image of ``n_nuclei`` nuclei (fewer if they do not fit), ~25% touching."""
    rng = np.random.default_rng(seed)
    shape = (int(shape[0]), int(shape[1]))
    canvas = _Canvas(shape, (1.0, 1.0))
    nuclei = _place_2d(rng, canvas, shape, n_nuclei, radius, touch_fraction=0.25, max_overlap=0.12)
    image = _render_2d(rng, shape, canvas, nuclei, peak_photons)
    return SyntheticNuclei(image, canvas.labels, "YX", (1.0, 1.0))


def nuclei_3d(
    shape: tuple[int, int, int] = (24, 256, 256),
    n_nuclei: int = 40,
    radius: tuple[float, float] = (8.0, 16.0),
    z_spacing: float = 3.0,
    seed: int = 0,
    peak_photons: float = 400.0,
) -> SyntheticNuclei:
    """An anisotropic widefield z-stack: flattened ellipsoids, ``z_spacing`` times the xy pixel.

    ``scale`` is ``(z_spacing, 1, 1)``; labels keep one id per nucleus through z. The stack
    has the look of a real one: a PSF elongated along z, out-of-focus haze and signal that
    fades with depth.
    """
    rng = np.random.default_rng(seed)
    shape = (int(shape[0]), int(shape[1]), int(shape[2]))
    spacing = (float(z_spacing), 1.0, 1.0)
    depth = shape[0] * spacing[0]

    def make() -> _Nucleus:
        r = rng.uniform(*radius)
        semi = np.array([r * rng.uniform(0.55, 0.8), r, r * rng.uniform(0.7, 1.0)])
        centre = rng.uniform([0.25 * depth, 0.0, 0.0], [0.75 * depth, shape[1], shape[2]])
        rot = _rotation_3d(rng.uniform(0, np.pi), rng.normal(0, 0.15))
        bright = rng.uniform(0.35, 1.0) if rng.random() < 0.2 else rng.uniform(0.7, 1.0)
        return _Nucleus(centre, rot, semi, bright)

    canvas = _Canvas(shape, spacing)
    min_vol = int(0.4 * (4 / 3) * np.pi * radius[0] ** 3 * 0.55 / z_spacing)
    nuclei = _place(rng, canvas, n_nuclei, make, touch_fraction=0.3, max_overlap=0.12, min_area=min_vol)
    texture = _texture(rng, shape, (0.5, 1.2, 1.2))
    sig = _signal(canvas, nuclei, texture)
    psf = (0.9, 1.3, 1.3)  # in pixels: ~2.7 xy-pixels along z
    blurred = ndi.gaussian_filter(sig, psf)
    haze = ndi.gaussian_filter(sig, (3.0, 6.0, 6.0))  # out-of-focus light from other planes
    fade = np.exp(-np.arange(shape[0], dtype=np.float32) / (2.5 * shape[0]))[:, None, None]
    illum = 0.75 + 0.25 * _smooth_field(rng, shape[1:])
    bg = 0.03 + 0.04 * _smooth_field(rng, shape[1:])
    photons = peak_photons * illum * (fade * (blurred + 0.4 * haze) + bg)
    return SyntheticNuclei(_camera(rng, photons), canvas.labels, "ZYX", spacing)


def nuclei_timelapse(
    n_frames: int = 8,
    shape: tuple[int, int] = (256, 256),
    n_nuclei: int = 18,
    radius: tuple[float, float] = (8.0, 18.0),
    seed: int = 0,
    peak_photons: float = 400.0,
    drift: tuple[float, float] = (0.8, 0.5),
    bleach_per_frame: float = 0.02,
) -> SyntheticNuclei:
    """A (T, Y, X) movie: nuclei drift, turn slowly and bleach; ids are kept over time.

    Nuclei drift by a common ``drift`` px/frame plus a little of their own. Labels keep a
    nucleus' id in every frame, so they double as tracking ground truth.
    """
    rng = np.random.default_rng(seed)
    shape = (int(shape[0]), int(shape[1]))
    first = _Canvas(shape, (1.0, 1.0))
    nuclei = _place_2d(rng, first, shape, n_nuclei, radius, touch_fraction=0.2, max_overlap=0.08)
    velocity = np.asarray(drift, float) + rng.normal(0, 0.25, size=(len(nuclei), 2))
    spin = rng.normal(0, 0.03, size=len(nuclei))  # radians per frame
    illum = 0.75 + 0.25 * _smooth_field(rng, shape)
    bg = 0.03 + 0.05 * _smooth_field(rng, shape)
    images = np.empty((n_frames, *shape), np.uint16)
    labels = np.empty((n_frames, *shape), np.uint16)
    for t in range(n_frames):
        canvas = first if t == 0 else _Canvas(shape, (1.0, 1.0))
        moved = []
        for i, n in enumerate(nuclei):
            m = _Nucleus(
                n.center + t * velocity[i], _rotation_2d(t * spin[i]) @ n.rotation, n.semi_axes, n.brightness
            )
            moved.append(m)
            if t:
                canvas.draw(m, i + 1)
        bleach = (1.0 - bleach_per_frame) ** t
        images[t] = _render_2d(rng, shape, canvas, moved, peak_photons, bleach, illum, bg)
        labels[t] = canvas.labels
    return SyntheticNuclei(images, labels, "TYX", (1.0, 1.0, 1.0))
