"""Instance matching and probabilities -> labels on synthetic maps (2D and 3D)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.metrics import Matching, iou_matrix, match
from napari_unet.postprocess import PostprocessParams, instances_from_classes, remove_small
from napari_unet.targets import encode_classes


def disks(shape=(64, 64), centers=((20, 20), (20, 34), (45, 45)), r=7) -> np.ndarray:
    lab = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for i, (cy, cx) in enumerate(centers, 1):
        lab[((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) & (lab == 0)] = i
    return lab


def one_hot_probs(lab: np.ndarray) -> np.ndarray:
    cls = encode_classes(lab)
    return np.stack([(cls == k).astype(np.float32) for k in range(3)])


def test_match_counts() -> None:
    a = disks()
    assert match(a, a) == Matching(3, 0, 0)
    b = a.copy()
    b[b == 3] = 0
    m = match(a, b)
    assert (m.tp, m.fp, m.fn) == (2, 0, 1)
    assert m.f1 == pytest.approx(0.8)
    assert match(np.zeros_like(a), np.zeros_like(a)).f1 == 1.0
    assert iou_matrix(a, a * 0).shape == (3, 0)


def test_match_is_invariant_to_ids() -> None:
    a = disks()
    b = np.where(a > 0, a * 10 + 5, 0)
    assert match(a, b).f1 == 1.0


def test_touching_objects_are_separated() -> None:
    truth = disks()
    pred = instances_from_classes(one_hot_probs(truth), PostprocessParams(min_size=5))
    assert pred.max() == 3
    assert match(truth, pred, 0.7).f1 == 1.0


def test_3d_objects_get_one_id_through_z() -> None:
    truth2d = disks()
    vol = np.stack([truth2d] * 5)
    probs = np.stack([one_hot_probs(truth2d)] * 5, axis=1)  # (3, Z, Y, X)
    pred = instances_from_classes(probs, PostprocessParams(min_size=5))
    assert pred.shape == vol.shape
    assert pred.max() == 3
    for z in range(5):
        np.testing.assert_array_equal(pred[z], pred[0])


def test_min_size_and_empty() -> None:
    lab = disks(r=2)
    assert remove_small(lab, 100).max() == 0
    empty = np.zeros((3, 16, 16), np.float32)
    empty[0] = 1
    assert instances_from_classes(empty).max() == 0
