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
        (np.zeros((0, 10, 10), np.uint8), {"axes": "TYX"}, "no pixels"),
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
    rows = list(csv.DictReader(path.read_text().splitlines()))
    assert [int(r["area"]) for r in rows] == table["area"].tolist()


def test_cli_measure_writes_the_table_beside_the_labels(tmp_path: Path) -> None:
    _, image = _discs((128, 128))
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, (image * 10).astype(np.uint16))
    out = tmp_path / "out"
    assert cli.main(["segment", str(src), "-o", str(out), "--measure", "--device", "cpu"]) == 0
    segmented = tifffile.imread(out / "cells_labels.tif")
    rows = list(csv.DictReader((out / "cells_objects.csv").read_text().splitlines()))
    ids = np.unique(segmented)[1:]
    assert len(rows) == len(ids) > 0
    assert sorted(int(r["area"]) for r in rows) == sorted(int((segmented == i).sum()) for i in ids)


def test_one_pass_equals_scikit_image_regionprops() -> None:
    """Every column is scikit-image's, solidity (convex hulls of all objects at once) exactly:
    random blobs, objects in pieces, lines, diagonals, single pixels, non-convex shapes."""
    from scipy import ndimage as ndi  # local: only this test makes random blobs
    from skimage.measure import label, regionprops_table  # local: the reference, here only

    rng = np.random.default_rng(0)
    blobs = label(ndi.gaussian_filter(rng.random((200, 200)), 3) > 0.52)
    odd = np.zeros((40, 40), np.int32)
    odd[5:30, 5:8] = 1
    odd[27:30, 5:30] = 1  # an L
    odd[10, 20] = 2  # one pixel
    odd[15, 10:30] = 3  # a row
    odd[np.arange(30, 38), np.arange(2, 10)] = 4  # diagonals
    odd[np.arange(30, 38), np.arange(30, 22, -1)] = 5
    odd[0, 0] = odd[3, 39] = odd[39, 20] = 6  # three pieces, one id
    scattered = rng.integers(0, 6, (60, 60))
    props = [
        "label",
        "area",
        "centroid",
        "bbox",
        "intensity_mean",
        "intensity_max",
        "eccentricity",
        "solidity",
    ]
    for labels in (blobs, odd, scattered):
        image = rng.random(labels.shape).astype(np.float32)
        ref = regionprops_table(labels, intensity_image=image, properties=props)
        assert len(ref["label"]) > 4
        got = measure_labels(labels, image)
        pairs = {"label": "label", "area": "area", "centroid_y": "centroid-0", "centroid_x": "centroid-1"}
        pairs |= {"bbox_y0": "bbox-0", "bbox_x0": "bbox-1", "bbox_y1": "bbox-2", "bbox_x1": "bbox-3"}
        pairs |= {"mean_intensity": "intensity_mean", "max_intensity": "intensity_max"}
        pairs |= {"eccentricity": "eccentricity", "solidity": "solidity"}
        for ours, theirs in pairs.items():
            np.testing.assert_allclose(got[ours], ref[theirs], rtol=1e-6, atol=1e-9, err_msg=ours)


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


def test_cli_measure_of_a_lazy_input_reads_the_store_block_by_block(tmp_path: Path, monkeypatch) -> None:
    """A TIFF read lazily is measured from its labels store, block by block: the CSV is the
    in-memory table of the written labels and image (without solidity), frames and microns too."""
    from napari_unet.scale import measure_blocks as mb  # local: spied on, in this test only

    blocks = []
    real = mb.iter_measure_blocks

    def spy(*args, **kwargs):
        blocks.append(kwargs["block"])
        return real(*args, **{**kwargs, "block": 48})  # blocks smaller than the frame: objects are cut

    monkeypatch.setattr(mb, "iter_measure_blocks", spy)
    monkeypatch.setenv("NAPARI_UNET_LAZY_BYTES", "1")  # every TIFF counts as big
    _, image = _discs((128, 128))
    movie = np.stack([image, np.roll(image, 9, 1)]) * 10
    src = tmp_path / "movie.tif"
    tifffile.imwrite(
        src,
        movie.astype(np.uint16),
        imagej=True,
        resolution=(4.0, 4.0),
        metadata={"axes": "TYX", "unit": "um"},
    )
    out = tmp_path / "out"
    assert cli.main(["segment", str(src), "-o", str(out), "--measure", "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["movie_labels.tif", "movie_objects.csv"]
    assert blocks == [mb.BLOCK], "the store was measured block by block, once"
    segmented = tifffile.imread(out / "movie_labels.tif")
    rows = list(csv.DictReader((out / "movie_objects.csv").read_text().splitlines()))
    want = measure_labels(segmented, movie, axes="TYX", scale={"Y": 0.25, "X": 0.25}, unit="µm")
    want.pop("solidity")
    assert len(rows) == len(want["label"]) > 0
    assert list(rows[0]) == list(want)
    for key, values in want.items():
        np.testing.assert_allclose([float(r[key]) for r in rows], values, rtol=1e-5, err_msg=key)


def test_blocks_are_measured_from_larger_reads(monkeypatch) -> None:
    """Each pixel is read once, in reads of 2 x 2 blocks, and every block yields one progress step."""
    from napari_unet.common.generators import drain  # local: only this test drives the generator
    from napari_unet.scale import measure_blocks as mb  # local: the scale layer's part

    class Reads:
        def __init__(self, array: np.ndarray) -> None:
            self.array, self.shape, self.dtype, self.areas = array, array.shape, array.dtype, []

        def __getitem__(self, index):
            part = self.array[index]
            self.areas.append(part.size)
            return part

    monkeypatch.setattr(mb, "READ_PIXELS", 4 * 16 * 16)
    labels, image = _discs((64, 80))
    lab, img = Reads(labels.astype(np.uint32)), Reads(image)
    steps = []
    got = drain(mb.iter_measure_blocks(lab, img, axes="YX", block=16), steps.append)
    assert len(lab.areas) == len(img.areas) == 2 * 3 and sum(lab.areas) == 64 * 80
    assert [(s.done, s.total, s.stage) for s in steps] == [(i, 4 * 5, "measure") for i in range(1, 21)]
    want = measure_labels(labels, image)
    assert got["area"].tolist() == want["area"].tolist()
    np.testing.assert_allclose(got["mean_intensity"], want["mean_intensity"])


def test_a_store_is_measured_with_its_image_in_the_store_order(tmp_path: Path) -> None:
    """measure_store takes the image's channel and puts its axes in the store's TZYX order."""
    from napari_unet.io.omezarr import write_ome_zarr  # local: only these tests write stores
    from napari_unet.scale.measure_blocks import measure_store  # local: the scale layer's part

    labels, image = _discs((64, 80))
    movie = np.stack([labels, np.roll(labels, 7, 0)]).astype(np.uint32)  # TYX
    raw = np.stack([image, np.roll(image, 7, 0)])
    store = write_ome_zarr(tmp_path / "l.ome.zarr", movie, "TYX", labels=True)
    as_ycxt = np.stack([raw * 0, raw], axis=0).transpose(2, 0, 3, 1)  # Y, C, X, T; channel 1 is the image
    got = measure_store(store, as_ycxt, image_axes="YCXT", channel=1, scale={"Y": 0.5, "X": 0.5}, unit="um")
    want = measure_labels(movie, raw, axes="TYX", scale={"Y": 0.5, "X": 0.5}, unit="um")
    assert got["frame"].tolist() == want["frame"].tolist() == [0, 0, 1, 1]
    np.testing.assert_allclose(got["mean_intensity"], want["mean_intensity"])
    np.testing.assert_allclose(got["area_um2"], want["area_um2"])
    with pytest.raises(ValueError, match="do not match"):
        measure_store(store, raw[0], image_axes="YX")


def test_csv_rows_are_written_in_parts(tmp_path: Path, monkeypatch) -> None:
    """A table longer than one part is written whole, in order, floats to 6 digits."""
    from napari_unet.engine import measure as m  # local: its part size is patched

    monkeypatch.setattr(m, "CSV_ROWS", 3)
    table = {"label": np.arange(1, 9), "area": np.arange(8) * 10, "x": np.arange(8) / 3}
    rows = list(csv.reader(table_to_csv(table, tmp_path / "t.csv").read_text().splitlines()))
    assert rows[0] == ["label", "area", "x"] and len(rows) == 9
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 9)) and rows[3] == ["3", "20", "0.666667"]


def test_cli_measure_of_an_ome_zarr_input_writes_the_table_beside_its_store(tmp_path: Path) -> None:
    from napari_unet.io.omezarr import read_ome_zarr, write_ome_zarr  # local: only these tests use stores

    _, image = _discs((96, 128))
    src = write_ome_zarr(
        tmp_path / "plate.ome.zarr",
        (image * 10).astype(np.uint16),
        "YX",
        pixel_size={"Y": 0.5, "X": 0.5},
        unit="micrometer",
    )
    out = tmp_path / "out"
    assert cli.main(["segment", str(src), "-o", str(out), "--measure", "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["plate_labels.ome.zarr", "plate_objects.csv"]
    labels = np.asarray(read_ome_zarr(out / "plate_labels.ome.zarr")[0])
    rows = list(csv.DictReader((out / "plate_objects.csv").read_text().splitlines()))
    ids = np.unique(labels)[1:]
    assert [int(r["label"]) for r in rows] == ids.tolist() and len(ids) > 0
    assert [int(r["area"]) for r in rows] == np.bincount(labels.ravel())[ids].tolist()
    assert [float(r["area_µm2"]) for r in rows] == [a * 0.25 for a in np.bincount(labels.ravel())[ids]]
    assert "solidity" not in rows[0]  # measured block by block
