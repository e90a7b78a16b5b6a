"""Instance matching and probabilities -> labels on synthetic maps (2D and 3D)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.engine.metrics import Matching, iou_matrix, match
from napari_unet.engine.postprocess import PostprocessParams, instances_from_classes, remove_small
from napari_unet.training.targets import encode_classes


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


def test_count_objects_per_frame_in_memory_and_chunk_by_chunk(tmp_path) -> None:
    """Distinct ids (gaps allowed), per time point with a T axis; a zarr store gives the same
    count read chunk by chunk."""
    import zarr

    from napari_unet.engine.metrics import count_objects

    movie = np.zeros((2, 8, 8), np.uint32)
    movie[0, :2, :2], movie[0, 5:, 5:] = 1, 7  # ids with a gap
    movie[1, :2, :2], movie[1, 4:, :2], movie[1, 6:, 6:] = 1, 2, 3  # ids restart per frame
    assert count_objects(movie, "TYX") == 5
    assert count_objects(movie) == 4  # no axes: distinct ids of the whole array
    assert count_objects(np.zeros((4, 4), np.uint16), "YX") == 0
    path = str(tmp_path / "l.zarr")
    store = zarr.open_array(path, mode="w", shape=movie.shape, chunks=(1, 4, 4), dtype="u4")
    store[:] = movie
    assert count_objects(store, "TYX") == 5 and count_objects(store) == 4
