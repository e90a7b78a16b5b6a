"""Instance matching and probabilities -> labels on synthetic maps (2D and 3D)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.engine.metrics import Matching, iou_matrix, match
from napari_unet.engine.postprocess import (
    PostprocessParams,
    instances_from_classes,
    remove_small,
    split_at_necks,
)
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


def merged_interior_probs(truth: np.ndarray) -> np.ndarray:
    """Probabilities of a net that missed the boundary between touching nuclei.

    Interior everywhere inside the objects except a 1 px rim at the image background, so the
    interiors of touching objects meet: the seed is one blob with a waist.
    """
    fg = truth > 0
    rim = fg & ~ndi.binary_erosion(fg)
    probs = np.zeros((3, *truth.shape), np.float32)
    probs[0] = ~fg
    probs[1] = fg & ~rim
    probs[2] = rim
    return probs


def test_merged_touching_nuclei_are_cut_at_their_waist() -> None:
    truth = disks(shape=(80, 80), centers=((30, 24), (30, 42), (60, 60)), r=10)
    probs = merged_interior_probs(truth)
    merged = instances_from_classes(probs, PostprocessParams(min_size=5))
    assert merged.max() == 2  # without the cut: the touching pair is one object
    split = instances_from_classes(probs, PostprocessParams(min_size=5, split_depth=0.5))
    assert split.max() == 3
    assert match(truth, split, 0.8).f1 == 1.0


def test_single_round_and_elongated_nuclei_are_not_cut() -> None:
    yy, xx = np.mgrid[:96, :96]
    truth = np.zeros((96, 96), np.int32)
    truth[((yy - 25) / 9) ** 2 + ((xx - 25) / 9) ** 2 < 1] = 1  # round
    truth[((yy - 65) / 8) ** 2 + ((xx - 50) / 24) ** 2 < 1] = 2  # 3:1 ellipse
    kidney = ((yy - 25) / 11) ** 2 + ((xx - 70) / 14) ** 2 < 1
    truth[kidney & ~(((yy - 36) / 6) ** 2 + ((xx - 70) / 6) ** 2 < 1)] = 3  # a shallow dent
    pred = instances_from_classes(
        merged_interior_probs(truth), PostprocessParams(min_size=5, split_depth=0.5)
    )
    assert pred.max() == 3
    assert match(truth, pred, 0.8).f1 == 1.0


def test_split_at_necks_labels_like_ndimage_when_nothing_is_cut() -> None:
    seeds = disks(r=5) > 0
    labels, n = split_at_necks(seeds, 0.5)
    expected, m = ndi.label(seeds)
    assert n == m
    np.testing.assert_array_equal(labels, expected)


def test_volumes_ignore_split_depth() -> None:
    truth = disks(shape=(80, 80), centers=((30, 24), (30, 42)), r=10)
    probs = np.stack([merged_interior_probs(truth)] * 3, axis=1)
    pred = instances_from_classes(probs, PostprocessParams(min_size=5, split_depth=0.5))
    assert pred.max() == 1  # 3D keeps its seed erosion (module docstring); no waist cutting


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), True, "1"])
def test_split_depth_is_checked(bad) -> None:
    with pytest.raises(ValueError, match="split_depth"):
        PostprocessParams(split_depth=bad)
