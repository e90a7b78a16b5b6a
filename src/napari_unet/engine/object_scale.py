"""Object scale: objects must look to the net as they did in training, in Y/X and along Z.

In Y/X each plane is zoomed so that objects of the user's ``diameter`` get the trained
diameter, and the probabilities are zoomed back (:func:`zoom_factor`, :func:`zoomed_plane`,
:func:`unzoom`). Z is never rescaled; instead post-processing of a z-stack is told the
anisotropy and erodes seeds by a physical ball sized from the object diameter
(:func:`volume_options`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_unet.engine.config import PredictConfig
from napari_unet.models.model_file import Model

__all__ = [
    "ASSUMED_ANISOTROPY",
    "DEFAULT_TRAINED_DIAMETER",
    "MAX_ZOOM",
    "MIN_ZOOM",
    "SEED_EROSION",
    "anisotropy_from_pixel_size",
    "effective_anisotropy",
    "net_shape",
    "object_diameter",
    "resize_plane",
    "trained_diameter",
    "unzoom",
    "volume_options",
    "working_zoom",
    "zoom_factor",
    "zoomed_plane",
]

# Objects from ~2x to ~10x the trained diameter reach it (8 px to 200 px for a 20 px model):
# a 200 px cell kept at 50 px (the former limit 0.25) is a size the nets never learnt well
# (phase contrast, benchmarks/probe_finetune_scale.py: F1 0.26 with cells at 35 px, 0.38 at 20 px).
MIN_ZOOM, MAX_ZOOM = 0.1, 4.0
DEFAULT_TRAINED_DIAMETER = 20.0  # px: median equivalent diameter of the bundled training nuclei

# Z-stacks: seeds are eroded by a ball of this fraction of the object diameter (0.25 x 20 px = 5 px
# for the bundled model), chosen on synthetic stacks (benchmarks/bench_3d.py). Unknown z steps
# are taken as 3 px: a moderate guess loses little when the truth is 1-4, whereas assuming an
# isotropic stack for a strongly anisotropic one loses much.
SEED_EROSION = 0.25
ASSUMED_ANISOTROPY = 3.0


def working_zoom(model: Model) -> float:
    """The Y/X scale the model's training images were brought to before it saw them (card).

    A model fine-tuned at a working scale (its objects resized to the size its parent knew)
    must see new images of the same kind at that scale too; 1.0 for a model trained as is.
    """
    try:
        zoom = float(model.card.get("working_zoom", 1.0))
    except (TypeError, ValueError):
        return 1.0
    return zoom if math.isfinite(zoom) and zoom > 0 else 1.0


def trained_diameter(model: Model) -> float:
    """Typical object diameter (px) as the net saw it in training, from its card.

    The card's ``object_diameter`` is measured in the training images' own pixels; a model
    trained at a working scale saw them ``working_zoom`` times that size.
    """
    return float(model.card.get("object_diameter", DEFAULT_TRAINED_DIAMETER)) * working_zoom(model)


def zoom_factor(model: Model, diameter: float | None) -> float | None:
    """Y/X scale factor that gives objects of ``diameter`` px the trained size; None = none.

    Without a ``diameter`` the model's own working scale applies: images of the kind it was
    fine-tuned on are brought to the scale it learned at, with no number to type.
    """
    zoom = working_zoom(model) if diameter is None else trained_diameter(model) / float(diameter)
    zoom = min(max(zoom, MIN_ZOOM), MAX_ZOOM)
    return None if abs(zoom - 1.0) < 0.05 else zoom


def object_diameter(model: Model, config: PredictConfig) -> float:
    """Object diameter (image px) the engine assumes: as trained, or as given (clipped by the zoom)."""
    zoom = zoom_factor(model, config.diameter)  # the diameter the net is made to see, clipped
    return trained_diameter(model) / (zoom or 1.0)


def net_shape(shape: tuple[int, int], zoom: float | None) -> tuple[int, int]:
    """The (h, w) a plane of ``shape`` has for the net, after the Y/X zoom (at least 1 px)."""
    h, w = shape
    return (h, w) if zoom is None else (max(1, round(h * zoom)), max(1, round(w * zoom)))


def resize_plane(plane: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(C, H, W) float32 -> (C, *shape), bilinear; anti-aliased when shrinking (no moire)."""
    x = torch.from_numpy(np.ascontiguousarray(plane, dtype=np.float32))[None]
    shrink = shape[0] < plane.shape[-2] or shape[1] < plane.shape[-1]
    with torch.inference_mode():
        y = F.interpolate(x, size=shape, mode="bilinear", align_corners=False, antialias=shrink)
    return y[0].numpy()


def zoomed_plane(planes: Callable[[int], np.ndarray], shape: tuple[int, int], z: int) -> np.ndarray:
    """Plane ``z`` of ``planes`` resized to the net's ``shape`` (bind the first two with partial)."""
    return resize_plane(planes(z), shape)


def unzoom(probs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(K, Z, h', w') probabilities -> (K, Z, *shape), one slice at a time.

    Bilinear resizing keeps them probabilities: every output is a convex combination of inputs.
    """
    out = np.empty((*probs.shape[:2], *shape), np.float32)
    for z in range(probs.shape[1]):
        out[:, z] = resize_plane(probs[:, z], shape)
    return out


def anisotropy_from_pixel_size(pixel_size: Any) -> float | None:
    """Z step / xy pixel size from a reader's pixel sizes, or None when unknown.

    ``pixel_size`` is a reader's ``meta["pixel_size"]`` ({"X", "Y", "Z"}) or a (z, y, x)
    scale; unknown means no Z size, or every size 1 (napari's default scale).
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


def effective_anisotropy(config: PredictConfig) -> float:
    """The z/xy ratio a z-stack is treated with: the configured one, else :data:`ASSUMED_ANISOTROPY`."""
    return config.anisotropy if config.anisotropy is not None else ASSUMED_ANISOTROPY


def volume_options(model: Model, config: PredictConfig) -> dict[str, float]:
    """Seed erosion (image px) and anisotropy for post-processing a z-stack."""
    diameter = object_diameter(model, config)
    return {"seed_erosion": SEED_EROSION * float(diameter), "anisotropy": float(effective_anisotropy(config))}
