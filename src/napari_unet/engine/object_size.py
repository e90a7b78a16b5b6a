"""How large are the objects in this image? The model's own answer, from a few small probes.

A U-Net finds objects well near the size it learnt (the card's trained diameter) and worse
far from it. So the size of an image's objects is estimated by the model itself: a window
of one plane is segmented, first at half the model's scale, and the typical diameter of the
objects found there is taken (the median equivalent diameter of those that carry the
foreground area, see :func:`typical_diameter`);
when that says the objects are far from the trained size, the window is probed again
zoomed by what that estimate implies, until the objects come out at about the trained size
(a fixed point: at the right zoom the net sees its own size, and its segmentation is then
the one to trust). One to three probes of 256 x 256 net pixels (:data:`PROBE_PX`); a full
pass of a 512 x 512 image costs about 4 such probes, one of 2048 x 2048 about 60.

Why the model and not the image: a scale-space blob detector answers "which blob size has
the most contrast", which for textured nuclei, cells in phase contrast or a fine-tuned EM
model is the texture, not the object. The model knows what it calls an object, also after
fine-tuning (a fine-tuned card records the scale it learnt at; :func:`trained_diameter`).

Why weighted by area: a net shown objects far larger than it knows cuts them into many
small pieces and specks; they outnumber the whole objects and pull a plain median down to a
false fixed point at the size of the texture, but cover little area.

The estimate changes nothing when it lands near the model's own scale (up to
:data:`KEEP_WITHIN` above, :data:`UPSCALE_FROM` below): the bundled model was trained with
zoom augmentation of 0.6-1.6x, the estimate reads clean nuclei up to ~10 % large, enlarging
small objects costs zoom**2 the compute and gained nothing measurable on the held-out nuclei
(``benchmarks/bench_object_size.py``), and resampling an image that is already right costs
a little sharpness for nothing (the synthetic sample, nuclei 1.23x the trained size read at
1.4x: F1 0.957 at the model's scale, 0.930 shrunk).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from napari_unet.common.generators import drain
from napari_unet.engine.config import PredictConfig
from napari_unet.engine.inference import iter_probabilities
from napari_unet.engine.normalize import apply_bounds, channel_bounds
from napari_unet.engine.object_scale import (
    MAX_ZOOM,
    MIN_ZOOM,
    net_shape,
    resize_plane,
    trained_diameter,
    zoom_factor,
)
from napari_unet.engine.postprocess import PostprocessParams, instances
from napari_unet.models.model_file import Model

__all__ = [
    "CONVERGED",
    "KEEP_WITHIN",
    "MAX_PROBES",
    "MIN_PROBE_OBJECTS",
    "PROBE_PX",
    "SizeEstimate",
    "equivalent_diameters",
    "estimate_size",
    "reference_diameter",
    "typical_diameter",
]

PROBE_PX = 256  # net px per side of a probe window: ~1/4 of a 512 px tile
MIN_PROBE_OBJECTS = 5  # fewer objects than this in a probe: widen it; an estimate needs as many
MAX_PROBE_PX = 512  # the widest probe window (net px per side)
MAX_PROBES = 4  # zooms tried at most
COARSE_START = 0.5  # the first probe sees the image at half the model's scale (see estimate_size)
KEEP_WITHIN = 1.5  # objects up to this factor above the trained size are not shrunk
CONVERGED = 1.25  # a probe whose objects imply a zoom within this factor of its own is trusted
UPSCALE_FROM = 2.0  # small objects are enlarged only when this far below the trained size


@dataclass(frozen=True)
class SizeEstimate:
    """What the probes found.

    ``diameter``: the objects' typical equivalent diameter in image px (:func:`typical_diameter`; None:
    too few objects to say, the model's own scale is kept). ``applied``: the diameter the engine rescales by,
    None when the model's own scale is kept (no estimate, or one close to it). ``zooms``: the
    Y/X zooms probed, in order; ``objects``: objects measured by the last probe.
    """

    diameter: float | None
    applied: float | None
    objects: int
    zooms: tuple[float, ...]
    seconds: float
    trained: float
    # the last probe's probabilities when it covered the whole plane at the model's own scale:
    # then they are that plane's prediction, and the engine does not compute them again
    probs: np.ndarray | None = field(default=None, repr=False, compare=False)

    def short(self) -> str:
        """A few words for a per-file line: the size, and whether the image was rescaled."""
        if self.diameter is None:
            return "object size not estimated"
        if self.applied is None:
            return f"objects ~{self.diameter:.0f} px, not rescaled"
        return f"objects ~{self.diameter:.0f} px, rescaled {self.trained / self.applied:.2f}x"

    def describe(self) -> str:
        """One line for a status bar or a terminal."""
        probes = f"{len(self.zooms)} probe{'s' if len(self.zooms) != 1 else ''}, {self.seconds:.1f} s"
        if self.diameter is None:
            few = f"fewer than {MIN_PROBE_OBJECTS} objects found"
            return f"object size: not estimated ({few}; {probes}); model's scale kept"
        found = f"object size ~{self.diameter:.0f} px (estimated from {self.objects} objects; {probes})"
        if self.applied is None:
            return f"{found}: near the model's {self.trained:.0f} px, not rescaled"
        return (
            f"{found}: image rescaled {self.trained / self.applied:.2f}x to the model's {self.trained:.0f} px"
        )


def _window(shape: tuple[int, int], zoom: float, px: int) -> tuple[slice, slice]:
    """A centred window of the plane that is ``px`` net px per side at ``zoom`` (or the plane)."""
    out = []
    for n in shape:
        side = min(n, max(1, math.ceil(px / zoom)))
        start = (n - side) // 2
        out.append(slice(start, start + side))
    return out[0], out[1]


def object_areas(labels: np.ndarray) -> np.ndarray:
    """Pixel counts of the objects of ``labels``, by id (ids with no pixel left out)."""
    areas = np.bincount(np.asarray(labels).ravel().astype(np.int64))[1:]
    return areas[areas > 0]


def equivalent_diameters(labels: np.ndarray, areas: np.ndarray | None = None) -> np.ndarray:
    """Equivalent diameters (px: the disc of the same area) of the objects of ``labels``, by id.

    ``areas``: :func:`object_areas` of ``labels`` when the caller has them (one pass, not two).
    """
    areas = object_areas(labels) if areas is None else areas
    return 2.0 * np.sqrt(areas / np.pi)


def _diameters(labels: np.ndarray, touching_edge: tuple[bool, bool, bool, bool]) -> np.ndarray:
    """Equivalent diameters (px) of the objects, leaving out those cut by a window edge.

    A window edge that is not the image's cuts objects, which then look smaller than they
    are; they count only when too few others remain.
    """
    n = int(labels.max(initial=0))
    if n == 0:
        return np.zeros(0)
    areas = np.bincount(labels.ravel().astype(np.int64), minlength=n + 1)[1:]
    cut = np.zeros(n + 1, bool)
    edges = (labels[0], labels[-1], labels[:, 0], labels[:, -1])
    for inner, edge in zip(touching_edge, edges, strict=True):
        if inner:
            cut[edge] = True
    whole = ~cut[1:] & (areas > 0)
    keep = whole if int(whole.sum()) >= MIN_PROBE_OBJECTS else areas > 0
    return 2.0 * np.sqrt(areas[keep] / np.pi)


def typical_diameter(diameters: np.ndarray) -> float:
    """The median diameter of the objects that carry the foreground, specks and pieces left out.

    The area-weighted median (the size of the object a foreground pixel typically belongs
    to) sets the scale; objects under half of it are left out and the plain median of the
    rest is taken, so that clean segmentations give the plain median, the statistic the
    trained diameter is (a weighted one reads 15-25 % larger on nuclei).
    """
    order = np.sort(diameters)
    cum = np.cumsum(order**2)
    weighted = order[int(np.searchsorted(cum, cum[-1] / 2.0))]
    return float(np.median(order[order >= weighted / 2.0]))


def reference_diameter(model: Model) -> float:
    """The trained object size as the probes measure it (px the net saw).

    A fine-tuned card records its objects' ``typical_diameter`` (:func:`typical_diameter`),
    which for objects of widely varying size is well above their median; cards without it
    (the bundled model: nuclei of similar sizes, where the two agree within ~10 %) give the
    trained median diameter.
    """
    try:
        typical = float(model.card["typical_diameter"])
    except (KeyError, TypeError, ValueError):
        return trained_diameter(model)
    if not (math.isfinite(typical) and typical > 0):
        return trained_diameter(model)
    return typical * trained_diameter(model) / float(model.card.get("object_diameter", typical) or typical)


def _probe(
    model: Model,
    plane: Any,
    zoom: float,
    params: PostprocessParams,
    config: PredictConfig,
) -> tuple[float | None, int, np.ndarray | None]:
    """Typical object diameter (image px) and object count in a window probed at ``zoom``.

    Also the probabilities, when the window was the whole plane (else None).
    """
    low, high = model.normalization
    h, w = int(plane.shape[-2]), int(plane.shape[-1])
    px = PROBE_PX
    while True:
        ys, xs = _window((h, w), zoom, px)
        crop = np.asarray(plane[:, ys, xs])
        if crop.dtype == bool:
            crop = crop.view(np.uint8)
        bounds = [channel_bounds(crop[c], low, high) for c in range(crop.shape[0])]
        if all(b is None for b in bounds):
            return None, 0, None  # a constant window: nothing to measure
        x = apply_bounds(crop, bounds)
        shape = net_shape(crop.shape[-2:], None if abs(zoom - 1.0) < 1e-6 else zoom)
        if shape != tuple(crop.shape[-2:]):
            x = resize_plane(x, shape)
        probs = drain(iter_probabilities(model, x, config))
        # min_size is in image px: at this zoom an object covers zoom**2 as many net px
        labels = instances(probs, replace(params, min_size=max(1, round(params.min_size * zoom * zoom))))
        inner = (ys.start > 0, ys.stop < h, xs.start > 0, xs.stop < w)
        diam = _diameters(labels, inner)
        whole_plane = not any(inner)
        if diam.size >= MIN_PROBE_OBJECTS or whole_plane or px >= MAX_PROBE_PX:
            break
        px *= 2  # few objects in view: look at a wider window before concluding
    whole = probs if whole_plane else None
    if diam.size == 0:
        return None, 0, whole
    return typical_diameter(diam) / zoom, int(diam.size), whole


def estimate_size(
    model: Model,
    plane: Any,
    params: PostprocessParams,
    config: PredictConfig = PredictConfig(),
) -> SizeEstimate:
    """Estimate the typical object diameter of ``plane`` (C, Y, X; numpy, dask or zarr).

    Only the probe windows are read, so a lazy plane larger than memory is fine. The model's
    own post-processing ``params`` define what an object is.

    The first probe is coarse (:data:`COARSE_START` times the model's scale), because the
    iteration has a false fixed point on one side only: large textured objects seen too
    large are cut into pieces of about the trained size, which then look right; small
    objects seen too small still come out small, and the next probe, at the zoom they imply,
    sees them at the right size (measured on the DSB held-out experiments,
    ``benchmarks/bench_object_size.py``). Half the model's scale and not less: at a quarter,
    nuclei of 7 px are 2 px for the net and clusters of them pass for large objects. When
    the coarse probe finds too few objects, the model's own scale is probed next. When the
    probes turn back (zoom in, then out), they disagree, and the one that saw the most
    objects is kept.
    """
    t0 = time.perf_counter()
    trained = trained_diameter(model)
    own = zoom_factor(model, None) or 1.0  # the scale the engine runs at without a diameter
    to_median = trained / reference_diameter(model)
    config = replace(config, accurate=False)  # probes need no test-time augmentation
    # nor the waist cut of merged seeds: probed too large, textured nuclei have waists, and their
    # pieces would pass for objects of the trained size (the false fixed point above)
    params = replace(params, split_depth=0.0)

    def target(implied: float) -> float:
        """Where to look next: the model's own scale when the objects would not be rescaled."""
        return own if 1.0 / KEEP_WITHIN < implied / own < UPSCALE_FROM else implied

    zooms: list[float] = []
    probes: list[tuple[float, int, np.ndarray | None, float]] = []  # (diameter, objects, probs, zoom)
    zoom = max(own * COARSE_START, MIN_ZOOM)
    while len(zooms) < MAX_PROBES:
        zooms.append(zoom)
        diameter, count, probs = _probe(model, plane, zoom, params, config)
        if diameter is None:
            if not probes and zoom < own:
                zoom = own  # nothing at the coarse scale (tiny or sparse objects): look at the model's
                continue
            break
        diameter *= to_median  # in the statistic the trained diameter is
        probes.append((diameter, count, probs, zoom))
        nxt = target(min(max(trained / diameter, MIN_ZOOM), MAX_ZOOM))
        if abs(math.log(nxt / zoom)) < math.log(CONVERGED) and count >= MIN_PROBE_OBJECTS:
            break  # the objects came out at about the trained size: this probe is the one to trust
        if len(zooms) >= 2 and (nxt - zoom) * (zoom - zooms[-2]) < 0:
            # turning back: the probes disagree (few objects, or a scale the net reads two ways);
            # the one that saw the most objects stands
            probes.sort(key=lambda p: p[1])
            break
        zoom = nxt  # (a few objects are a hint of where to look, not yet an estimate)
    diameter, count, probs, at = probes[-1] if probes else (None, 0, None, 0.0)
    if count < MIN_PROBE_OBJECTS:
        diameter = None
    applied = None
    if diameter is not None and target(min(max(trained / diameter, MIN_ZOOM), MAX_ZOOM)) != own:
        applied = diameter
    reusable = probs if applied is None and at == own else None
    return SizeEstimate(diameter, applied, count, tuple(zooms), time.perf_counter() - t0, trained, reusable)
