"""How to run the net (:class:`PredictConfig`) and what the engine reports while it runs (:class:`Progress`).

Kept apart from the engine so that the inference, setup and chunked modules share them
without importing one another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["PredictConfig", "Progress"]


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

    The default tile is moderate on purpose: smaller tiles stay in the CPU's cache, which
    outweighs their extra overlap, and they give the GUI a frequent progress step and Stop
    point while needing little memory.

    ``diameter``: typical object diameter in the image (px); None = estimated from the image
    when ``estimate_size`` (:mod:`napari_unet.engine.object_size`), else as in the training
    data. Like Cellpose's diameter, each (Y, X) plane is zoomed by
    ``trained_diameter(model) / diameter`` (clipped to [0.1, 4]; skipped within 5% of 1)
    before the net, so the objects have the size the net learnt, and the probabilities are
    zoomed back, so the labels keep the image's shape and ``min_size`` is in image pixels.
    Z is never rescaled (anisotropy is kept). The bundled model's nuclei were ~20 px.

    ``accurate``: test-time augmentation, the mean of the net over each tile and its three
    mirror images (4x the network time; :class:`napari_unet.engine.inference.Runner`).

    ``estimate_size``: with no ``diameter``, probe a few small windows of one plane with the
    model to estimate the objects' size, and rescale when it is far from the trained size
    (the estimate is reported as a ``Progress`` of stage ``"size"``). False: the model's own
    scale, no probe.

    ``anisotropy``: z step / xy pixel size of a z-stack (from the file's pixel sizes, see
    :func:`napari_unet.engine.object_scale.anisotropy_from_pixel_size`); None = unknown,
    :data:`napari_unet.engine.object_scale.ASSUMED_ANISOTROPY` is used. Z-stacks are
    predicted slice by slice and post-processed as one volume whose seeds are eroded by a
    physical ball of ``SEED_EROSION`` x the object diameter (see
    :mod:`napari_unet.engine.postprocess`), so this sets how many slices that ball spans.
    """

    tile: int = 512
    overlap: int = 64
    batch_size: int = 0
    device: str = "auto"
    amp: bool | None = None
    diameter: float | None = None
    anisotropy: float | None = None
    estimate_size: bool = True
    accurate: bool = False

    def __post_init__(self) -> None:
        if self.tile < 1 or self.overlap < 0 or self.batch_size < 0:
            raise ValueError("tile must be >= 1, overlap and batch_size >= 0")
        if self.diameter is not None and not (math.isfinite(self.diameter) and self.diameter > 0):
            raise ValueError(f"diameter must be a positive number of pixels, got {self.diameter!r}")
        if self.anisotropy is not None and not (math.isfinite(self.anisotropy) and self.anisotropy > 0):
            raise ValueError(f"anisotropy must be a positive z/xy pixel-size ratio, got {self.anisotropy!r}")


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units of ``stage``: tiles for "predict", frames for "postprocess".

    Stage "size" comes once, first, when the object size was estimated: ``detail`` is then the
    :class:`napari_unet.engine.object_size.SizeEstimate` (its ``describe()`` is one line).
    """

    done: int
    total: int
    stage: str
    detail: Any = None
