"""The class probabilities of one plane of an image, exactly as Segment computes them.

Proofreading (:mod:`napari_unet.proofread`) works on the probabilities of the plane a user
is correcting. They must be those Segment used: the same normalisation (per time point, over
the whole z-stack), the same object scale (zoom in, predict, zoom back) and the same tiles,
so a click sees the objects Segment saw. One :class:`~napari_unet.engine.setup.SegmentJob`
(made once per image by :func:`~napari_unet.engine.setup.prepare`, which also estimates the
object size) serves every plane.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np

from napari_unet.engine.config import Progress
from napari_unet.engine.inference import predict_planes
from napari_unet.engine.object_scale import trained_diameter, unzoom
from napari_unet.engine.setup import SegmentJob

__all__ = ["iter_plane_probabilities", "object_diameter_px"]


def iter_plane_probabilities(
    job: SegmentJob, t: int = 0, z: int = 0
) -> Generator[Progress, None, np.ndarray]:
    """(K, H, W) softmax probabilities of plane (``t``, ``z``) of ``job``'s image, in image pixels.

    Yields once per tile batch. A constant frame (nothing to normalise) gives pure background
    without running the net, as Segment does.
    """
    model = job.model
    n_t, n_z, _, h, w = job.shape
    if not (0 <= t < n_t and 0 <= z < n_z):
        raise IndexError(f"plane (t={t}, z={z}) is outside the image ({n_t} time points, {n_z} slices)")
    frame, bounds = job.frame(t)  # (Z, Cin, H, W): the stack sets the bounds
    k = model.config.out_channels
    if all(b is None for b in bounds):
        probs = np.zeros((k, h, w), np.float32)
        probs[0] = 1.0
        yield Progress(1, 1, "predict")
        return probs
    planes = job.planes(frame[z : z + 1], bounds, (h, w))
    grid = job.grid((h, w))
    out = np.empty((k, 1, *job.net_shape((h, w))), np.float32)
    yield from predict_planes(job.runner, planes, 1, grid, out, job.batch_size(grid), 0, len(grid))
    if job.zoom is not None:
        out = unzoom(out, (h, w))
    return out[:, 0]


def object_diameter_px(job: SegmentJob) -> float:
    """The typical object diameter in the image's own pixels, as the job sees it."""
    return trained_diameter(job.model) / (job.zoom or 1.0)
