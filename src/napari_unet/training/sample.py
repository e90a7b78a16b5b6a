"""One training sample, the error for "nothing to learn from", and what a model card records about the data.

The home of the types that both :mod:`napari_unet.training.annotations` (which makes samples)
and :mod:`napari_unet.training.loop` (which trains on them) need, so imports go one way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["NoAnnotationError", "Sample", "annotation_summary"]


class NoAnnotationError(ValueError):
    """Nothing to learn from: no annotated pixels in any sample."""


@dataclass
class Sample:
    """One training image and the annotation that counts in it.

    ``image`` is (C, H, W) normalised float32 (an (H, W) image gains a C axis), ``labels``
    (H, W) instance ids (0 = background), ``mask`` (H, W) bool of the pixels that count
    (None = all). ``centers`` are the annotated pixels crops are drawn around (computed from
    ``mask`` when not given).
    """

    image: np.ndarray
    labels: np.ndarray
    mask: np.ndarray | None = None
    weight: float = 1.0
    centers: np.ndarray | None = field(default=None, repr=False)
    source: str = ""  # which image it comes from (model cards count images)
    plane: str = ""  # which slice / frame of it, e.g. "z=3"

    def __post_init__(self) -> None:
        if self.image.ndim == 2:
            self.image = self.image[None]
        if self.image.ndim != 3:
            raise ValueError(f"sample image must be (C, H, W) or (H, W), got {self.image.shape}")
        if self.image.shape[1:] != self.labels.shape:
            raise ValueError(f"image {self.image.shape[1:]} and labels {self.labels.shape} differ in shape")
        if self.labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be integers, not {self.labels.dtype}")
        if self.mask is not None:
            if self.mask.shape != self.labels.shape:
                raise ValueError("mask and labels differ in shape")
            if self.centers is None:
                pts = np.argwhere(self.mask)
                step = max(1, len(pts) // 20000)
                self.centers = pts[::step]

    @property
    def annotated_pixels(self) -> int:
        """How many pixels count: the whole image without a mask, else the mask's."""
        return int(self.labels.size if self.mask is None else self.mask.sum())


def annotation_summary(samples: Sequence[Sample]) -> dict[str, int]:
    """Images, planes, annotated pixels and objects: what a model card records about its data."""
    objects = 0
    for s in samples:
        lab = s.labels if s.mask is None else s.labels[s.mask]
        objects += int(np.count_nonzero(np.unique(lab)))
    return {
        "images": len({s.source for s in samples}),
        "planes": len(samples),
        "annotated_pixels": int(sum(s.annotated_pixels for s in samples)),
        "annotated_objects": objects,
    }
