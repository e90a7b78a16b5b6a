"""Per-object measurements: the numbers are the pixels' own, in 2D, 3D and time-lapses, and the
CLI writes them beside the labels."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main as cli
from napari_unet.engine.measure import measure, measure_labels, table_to_csv


def _discs(shape=(64, 80)) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.uint16)
    labels[(yy - 20) ** 2 + (xx - 20) ** 2 <= 8**2] = 1
    labels[40:50, 50:70] = 2  # a 10 x 20 rectangle
    image = np.where(labels == 1, 100, np.where(labels == 2, 40, 5)).astype(np.uint16)
    image[45, 60] = 200
    return labels, image


def test_2d_rows_are_the_pixels_own() -> None:
    labels, image = _discs()
    t = measure_labels(labels, image)
    assert t["label"].tolist() == [1, 2]
    assert t["area"].tolist() == [int((labels == 1).sum()), 200]
    assert t["centroid_y"][1] == pytest.approx(44.5) and t["centroid_x"][1] == pytest.approx(59.5)
    assert [t["bbox_y0"][1], t["bbox_y1"][1], t["bbox_x0"][1], t["bbox_x1"][1]] == [40, 50, 50, 70]
    assert t["mean_intensity"][0] == 100 and t["max_intensity"][1] == 200
    assert t["eccentricity"][0] < 0.2 and t["eccentricity"][1] > 0.8  # a disc, a 1:2 rectangle
    assert t["solidity"][1] == pytest.approx(1.0)


def test_physical_units_from_the_pixel_size() -> None:
    labels, _ = _discs()
    t = measure_labels(labels, scale={"Y": 0.5, "X": 0.25}, unit="um")
    assert t["area_um2"][1] == pytest.approx(200 * 0.125)
    assert t["centroid_x_um"][1] == pytest.approx(59.5 * 0.25)
    assert "area_um2" not in measure_labels(labels)


def test_3d_volume_and_z_extent() -> None:
    labels = np.zeros((6, 20, 20), np.uint8)
    labels[1:4, 5:10, 5:10] = 1
    t = measure_labels(labels, axes="ZYX", scale=(2.0, 0.5, 0.5), unit="um")
    assert t["area"].tolist() == [75] and t["z_extent"].tolist() == [3]
    assert t["volume_um3"][0] == pytest.approx(75 * 0.5)
    assert "eccentricity" not in t


def test_a_time_lapse_has_one_row_per_object_and_frame() -> None:
    labels, image = _discs()
    movie = np.stack([labels, np.where(labels == 2, 0, labels), labels])
    t = measure_labels(movie, np.stack([image] * 3), axes="TYX")
    assert t["frame"].tolist() == [0, 0, 1, 2, 2] and t["label"].tolist() == [1, 2, 1, 1, 2]


@pytest.mark.parametrize(
    ("labels", "kwargs", "message"),
    [
        (np.zeros((10, 10), np.float32), {}, "integers"),
        (np.zeros((10, 10), np.uint8), {"image": np.zeros((10, 11))}, "shape"),
        (np.zeros((2, 10, 10), np.uint8), {"axes": "YX"}, "do not fit"),
        (np.zeros((10, 10), np.uint8), {"scale": (1.0,)}, "scale"),
    ],
)
def test_bad_inputs_are_one_line_errors(labels, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message) as info:
        measure_labels(labels, **kwargs)
    assert "\n" not in str(info.value)


def test_measure_gives_a_dataframe_or_a_dict(tmp_path: Path) -> None:
    labels, image = _discs()
    frame = measure(labels, image)
    assert type(frame).__name__ == "DataFrame" and len(frame) == 2
    table = measure(labels, dataframe=False)
    assert isinstance(table, dict) and len(table["label"]) == 2
    path = table_to_csv(table, tmp_path / "objects.csv")
    rows = list(csv.DictReader(path.open()))
    assert [int(r["area"]) for r in rows] == table["area"].tolist()


def test_cli_measure_writes_the_table_beside_the_labels(tmp_path: Path) -> None:
    _, image = _discs((128, 128))
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, (image * 10).astype(np.uint16))
    out = tmp_path / "out"
    assert cli.main(["segment", str(src), "-o", str(out), "--measure", "--device", "cpu"]) == 0
    segmented = tifffile.imread(out / "cells_labels.tif")
    rows = list(csv.DictReader((out / "cells_objects.csv").open()))
    ids = np.unique(segmented)[1:]
    assert len(rows) == len(ids) > 0
    assert sorted(int(r["area"]) for r in rows) == sorted(int((segmented == i).sum()) for i in ids)


def test_eccentricity_in_one_pass_equals_scikit_image() -> None:
    from skimage.measure import label, regionprops_table  # local: the reference, here only

    from napari_unet.engine.measure import eccentricities  # local: the helper under test

    rng = np.random.default_rng(0)
    from scipy import ndimage as ndi  # local: only this test makes random blobs

    blobs = label(ndi.gaussian_filter(rng.random((200, 200)), 3) > 0.52)
    ref = regionprops_table(blobs, properties=["label", "eccentricity"])
    assert len(ref["label"]) > 10
    np.testing.assert_allclose(eccentricities(blobs, ref["label"]), ref["eccentricity"], atol=1e-9)


@pytest.mark.parametrize("axes", ["YX", "ZYX", "TYX"])
def test_block_by_block_equals_in_memory(axes: str) -> None:
    """A store read in blocks smaller than its objects gives the in-memory rows (no solidity)."""
    import zarr  # local: only this test makes a store

    from napari_unet.scale.measure_blocks import measure_blocks  # local: the scale layer's part

    rng = np.random.default_rng(1)
    base, image = _discs((64, 80))
    base = base.astype(np.uint32)
    base[5:30, 60:75] = 7  # an object cut by several block edges
    if axes == "ZYX":
        labels = np.stack([base * (z % 2 == 0) + (z % 2 == 1) * np.roll(base, 3, 1) for z in range(5)])
        image = rng.integers(0, 500, labels.shape).astype(np.uint16)
    elif axes == "TYX":
        labels = np.stack([base, np.roll(base, 5, 0), base * 0])
        image = rng.integers(0, 500, labels.shape).astype(np.uint16)
    else:
        labels = base
    store = zarr.array(labels, chunks=(1,) * (labels.ndim - 2) + (16, 16))
    scale = {"Z": 2.0, "Y": 0.5, "X": 0.5}
    got = measure_blocks(store, image, axes=axes, scale=scale, unit="um", block=16)
    want = measure_labels(labels, image, axes=axes, scale=scale, unit="um")
    want.pop("solidity", None)
    assert list(got) == list(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-9, atol=1e-9, err_msg=key)


def test_block_by_block_of_an_empty_store_has_the_columns() -> None:
    from napari_unet.scale.measure_blocks import measure_blocks  # local: the scale layer's part

    got = measure_blocks(np.zeros((40, 40), np.uint16), axes="YX")
    assert "area" in got and "eccentricity" in got and len(got["label"]) == 0
