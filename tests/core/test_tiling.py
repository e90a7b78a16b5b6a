"""Tile grids: split + stitch of an identity 'net' gives the image back, for any size."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.engine.tiling import TilingError, grid_for_net, make_grid, plan_axis
from napari_unet.models.unet import UNet, UNetConfig

SHAPES = [(1, 1), (1, 9), (5, 7), (16, 16), (17, 33), (64, 64), (100, 300), (257, 129), (300, 517)]


def _coverage(grid) -> np.ndarray:
    count = np.zeros(grid.shape, np.int32)
    for t in grid.tiles:
        count[t.target] += 1
    return count


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("tile", "overlap", "multiple"), [(16, 0, 1), (32, 8, 4), (48, 32, 16), (64, 16, 8)])
def test_same_round_trip(shape, tile, overlap, multiple):
    rng = np.random.default_rng(0)
    image = rng.random((2, *shape)).astype(np.float32)
    grid = make_grid(shape, tile, overlap, multiple)
    ih, iw = grid.input_shape
    assert ih % multiple == 0 and iw % multiple == 0
    assert ih <= max(tile + overlap, multiple) and iw <= max(tile + overlap, multiple)
    for plan in (grid.rows, grid.cols):
        assert all(s % multiple == 0 for s in plan.starts)
        assert plan.extent >= plan.length
    tiles = list(grid.split(image))
    assert len(tiles) == len(grid) and all(t.shape == (2, ih, iw) for t in tiles)
    np.testing.assert_array_equal(grid.stitch(tiles), image)
    np.testing.assert_array_equal(_coverage(grid), 1)  # every pixel written exactly once


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("depth", "tile"), [(1, 10), (2, 24), (2, 100)])
def test_valid_round_trip(shape, depth, tile):
    """A 'valid' net's output is the input's centre: emulate it by cropping the margin."""
    net = UNet(UNetConfig(base=2, depth=depth, padding="valid", norm="none"))
    grid = grid_for_net(shape, net, tile, overlap=64, padding="valid")
    g = grid.margin[0]
    assert g > 0 and net.output_size(grid.input_shape[0]) == grid.output_shape[0]
    image = np.random.default_rng(1).random(shape).astype(np.float32)
    outputs = [t[g:-g, g:-g] for t in grid.split(image)]
    np.testing.assert_array_equal(grid.stitch(outputs), image)
    np.testing.assert_array_equal(_coverage(grid), 1)
    assert all(s % net.multiple == 0 for s in grid.rows.starts + grid.cols.starts)


@pytest.mark.parametrize("shape", [(100, 300), (257, 129), (2048, 2048)])
def test_seams_have_context(shape):
    """A kept pixel is at least overlap // 2 from any edge of its tile inside the image."""
    overlap = 32
    grid = make_grid(shape, 64, overlap, 16)
    oh, ow = grid.output_shape
    for t in grid.tiles:
        cy, cx = t.crop
        ty, tx = t.target
        if ty.start > 0:
            assert cy.start >= overlap // 2
        if ty.stop < shape[0]:
            assert cy.stop <= oh - overlap // 2
        if tx.start > 0:
            assert cx.start >= overlap // 2
        if tx.stop < shape[1]:
            assert cx.stop <= ow - overlap // 2


def test_fewest_and_smallest_tiles():
    grid = make_grid((2048, 2048), 1024, 64, 16)
    assert len(grid) == 4 and grid.input_shape == (1056, 1056)
    grid = make_grid((2048, 2048), 2048, 64, 16)
    assert len(grid) == 1 and grid.input_shape == (2048, 2048)
    grid = make_grid((5, 7), 1024, 64, 16)
    assert len(grid) == 1 and grid.input_shape == (16, 16)
    assert grid.pad_width == ((0, 11), (0, 9))


def test_plan_axis_splits_overlaps_in_the_middle():
    plan = plan_axis(100, [40], step=1, min_overlap=10)
    assert plan.starts[0] == 0 and plan.extent == 100
    for (_, hi), (lo2, _) in zip(plan.keep, plan.keep[1:], strict=False):
        assert hi == lo2
    assert plan.keep[0][0] == 0 and plan.keep[-1][1] == 100


def test_bad_parameters():
    with pytest.raises(TilingError):
        make_grid((100, 100), 4, 16, 16)  # tile + overlap leaves no room to advance
    with pytest.raises(TilingError):
        make_grid((0, 10), 64)
    grid = make_grid((10, 10), 64)
    with pytest.raises(TilingError):
        grid.pad(np.zeros((11, 10)))
    with pytest.raises(TilingError):
        grid.stitch([np.zeros((3, 3))])
