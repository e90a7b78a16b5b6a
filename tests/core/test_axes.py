"""Axes letters: guessing, validation, and the round trip through TZCYX."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.common.axes import (
    AxesError,
    guess_axes,
    labels_from_canonical,
    output_axes,
    to_canonical,
    validate_axes,
)


@pytest.mark.parametrize(
    ("shape", "rgb", "axes"),
    [
        ((10, 12), None, "YX"),
        ((10, 12, 3), True, "YXC"),
        ((10, 12, 4), True, "YXC"),
        ((10, 12, 3), False, "ZYX"),
        ((5, 10, 12), None, "ZYX"),
        ((2, 10, 12, 3), True, "TYXC"),
    ],
)
def test_guess(shape, rgb, axes):
    assert guess_axes(shape, rgb=rgb) == axes


@pytest.mark.parametrize(
    ("shape", "rgb", "match"),
    [
        ((10, 12, 3), None, "looks like RGB; give axes"),
        ((5, 10, 12), True, "not RGB"),
        ((2, 5, 10, 12), None, "give axes"),
        ((2, 3, 5, 10, 12), None, "give axes"),
        ((12,), None, "at least 2"),
    ],
)
def test_guess_refuses_ambiguous(shape, rgb, match):
    with pytest.raises(AxesError, match=match) as info:
        guess_axes(shape, rgb=rgb)
    assert "\n" not in str(info.value)


def test_validate():
    assert validate_axes("yx", (3, 4)) == "YX"
    assert validate_axes("YXS", (3, 4, 3)) == "YXC"
    assert validate_axes(" tzcyx ", (1, 2, 3, 4, 5)) == "TZCYX"


@pytest.mark.parametrize(
    ("axes", "shape", "match"),
    [
        ("YX", (3, 4, 5), "3 dimensions"),
        ("ZZX", (3, 4, 5), "repeat"),
        ("CSYX", (2, 3, 4, 5), "repeat"),
        ("ZYC", (3, 4, 5), "Y and X"),
        ("QYX", (3, 4, 5), "unknown letter"),
        (None, (3, 4), "string"),
    ],
)
def test_validate_refuses(axes, shape, match):
    with pytest.raises(AxesError, match=match) as info:
        validate_axes(axes, shape)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("axes", "shape"),
    [("YX", (4, 5)), ("XY", (4, 5)), ("YXC", (4, 5, 3)), ("CZYX", (2, 3, 4, 5)), ("XZTY", (6, 3, 2, 5))],
)
def test_canonical_round_trip(axes, shape):
    image = np.arange(np.prod(shape)).reshape(shape)
    can = to_canonical(image, axes)
    assert can.ndim == 5
    dims = dict(zip(axes, shape, strict=True))
    assert can.shape == tuple(dims.get(a, 1) for a in "TZCYX")
    labels = can[:, :, 0]  # TZYX, as a segmentation would give
    back = labels_from_canonical(labels, axes)
    wanted = tuple(dims[a] for a in axes if a != "C")
    assert back.shape == wanted
    assert output_axes(axes) == axes.replace("C", "")
    if "C" not in axes:
        np.testing.assert_array_equal(back, image)
