"""The npe2 reader and writers, as napari uses them: viewer.open(path, plugin="napari-unet") and
layer.save(path, plugin="napari-unet"); axes, channels, scale and laziness carried through."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile

from napari_unet.io import napari_reader as _reader
from napari_unet.io.errors import ImageReadError
from napari_unet.io.images import open_image, read_image
from napari_unet.io.napari_reader import get_reader
from napari_unet.io.napari_writer import label_axes, write_labels_tiff, write_labels_zarr
from napari_unet.io.omezarr import read_ome_zarr, write_ome_zarr

RNG = np.random.default_rng(2)
PLUGIN = "napari-unet"


# --- get_reader: which paths are ours -------------------------------------------------------------


def test_get_reader_claims_tiff_and_zarr_only(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "plain_folder").mkdir()
    store = write_ome_zarr(tmp_path / "s.zarr", np.zeros((4, 4), np.uint8), "YX")
    assert get_reader(str(tmp_path / "a.png")) is None
    assert get_reader(str(tmp_path / "plain_folder")) is None
    assert get_reader([str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]) is None
    assert callable(get_reader(str(tmp_path / "a.tif")))
    assert callable(get_reader(str(store)))
    assert callable(get_reader([str(store)]))


def test_reader_error_is_one_line_naming_the_file(tmp_path: Path) -> None:
    p = tmp_path / "notes.tif"
    p.write_text("not an image")
    reader = get_reader(str(p))
    with pytest.raises(ImageReadError) as info:
        reader(str(p))
    assert str(info.value) == "cannot open notes.tif: not a TIFF file"


def test_reader_guesses_axes_and_says_so(tmp_path: Path) -> None:
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, np.zeros((5, 16, 16), np.uint16))
    [(data, kwargs, kind)] = get_reader(str(p))(str(p))
    assert kind == "image" and data.shape == (5, 16, 16)
    md = kwargs["metadata"]
    assert md["napari_unet_axes"] == "ZYX" and md["napari_unet_axes_guessed"] is True
    assert md["axes"] == "ZYX" and md["source"] == str(p)
    tifffile.imwrite(p, np.zeros((2, 5, 16, 16), np.uint16))  # 4-D: no guess, the user must say
    [(_, kwargs, _)] = get_reader(str(p))(str(p))
    assert kwargs["metadata"]["napari_unet_axes"] is None


# --- through napari -------------------------------------------------------------------------------


def test_viewer_opens_ome_tiff_channels_with_scale(
    make_napari_viewer, tmp_path: Path, write_ome_tiff
) -> None:
    p = tmp_path / "cells.ome.tif"
    data = write_ome_tiff(p)
    viewer = make_napari_viewer()
    layers = viewer.open(str(p), plugin=PLUGIN)
    assert [layer.name for layer in layers] == ["cells DAPI", "cells GFP", "cells RFP"]
    gfp = layers[1]
    np.testing.assert_array_equal(np.asarray(gfp.data), data[:, 1])
    assert tuple(gfp.scale) == pytest.approx((1.0, 2.0, 0.5, 0.5))
    assert gfp.metadata["napari_unet_axes"] == "TZYX"
    assert gfp.metadata["napari_unet_axes_guessed"] is False
    assert gfp.metadata["channel_name"] == "GFP" and gfp.metadata["pixel_size"]["Z"] == 2.0
    assert tuple(gfp.axis_labels) == ("T", "Z", "Y", "X")


def test_viewer_opens_imagej_tyx_hyperstack(make_napari_viewer, tmp_path: Path) -> None:
    """Axes only in the ImageJ metadata: a time-lapse, not a z-stack."""
    p = tmp_path / "movie.tif"
    data = RNG.integers(0, 255, (6, 16, 16)).astype(np.uint8)
    tifffile.imwrite(p, data, imagej=True, resolution=(2.0, 2.0), metadata={"axes": "TYX", "unit": "um"})
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(p), plugin=PLUGIN)
    assert layer.metadata["napari_unet_axes"] == "TYX" and not layer.metadata["napari_unet_axes_guessed"]
    assert tuple(layer.scale) == pytest.approx((1.0, 0.5, 0.5))
    assert layer.metadata["unit"] == "µm"


def test_viewer_opens_big_tiff_lazily(make_napari_viewer, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("NAPARI_UNET_LAZY_BYTES", "1000")  # everything above 1 kB is "big"
    p = tmp_path / "big.tif"
    data = RNG.integers(0, 4000, (4, 32, 32)).astype(np.uint16)
    tifffile.imwrite(p, data, imagej=True, metadata={"axes": "ZYX"})
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(p), plugin=PLUGIN)
    assert isinstance(layer.data, da.Array) and layer.metadata["lazy"] is True
    np.testing.assert_array_equal(layer.data.compute(), data)


def test_viewer_opens_rgb_tiff_as_rgb(make_napari_viewer, tmp_path: Path) -> None:
    p = tmp_path / "photo.tif"
    tifffile.imwrite(p, RNG.integers(0, 255, (16, 16, 3)).astype(np.uint8), photometric="rgb")
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(p), plugin=PLUGIN)
    assert layer.rgb and layer.metadata["napari_unet_axes"] == "YXC"


def test_viewer_opens_ome_zarr_and_labels_store(make_napari_viewer, tmp_path: Path) -> None:
    image = RNG.integers(0, 255, (3, 16, 16)).astype(np.uint8)
    img = write_ome_zarr(tmp_path / "img.ome.zarr", image, "ZYX", pixel_size={"Z": 3.0, "Y": 1, "X": 1})
    lab = write_ome_zarr(tmp_path / "lab.zarr", (image > 128).astype(np.uint16), "ZYX", labels=True)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(img), plugin=PLUGIN)
    assert layer.name == "img" and isinstance(layer.data, da.Array)
    assert tuple(layer.scale) == pytest.approx((3.0, 1.0, 1.0))
    [labels] = viewer.open(str(lab), plugin=PLUGIN)
    assert type(labels).__name__ == "Labels"


def test_big_plane_ome_zarr_opens_multiscale(make_napari_viewer, tmp_path: Path, monkeypatch) -> None:
    import zarr

    monkeypatch.setattr(_reader, "MULTISCALE_MIN_SIDE", 16)
    data = RNG.integers(0, 255, (32, 32)).astype(np.uint8)
    root = zarr.open_group(str(tmp_path / "pyr.zarr"), mode="w", zarr_format=2)
    for i, arr in enumerate([data, data[::2, ::2]]):
        root.create_array(str(i), shape=arr.shape, dtype=arr.dtype)[...] = arr
    axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    datasets = [
        {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [2.0**i, 2.0**i]}]}
        for i in range(2)
    ]
    root.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets}]
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "pyr.zarr"), plugin=PLUGIN)
    assert layer.multiscale and len(layer.data) == 2
    np.testing.assert_array_equal(np.asarray(layer.data[0]), data)


def test_viewer_refuses_bad_file_with_our_message(make_napari_viewer, tmp_path: Path) -> None:
    p = tmp_path / "cut.tif"
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, RNG.integers(0, 255, (4, 64, 64)).astype(np.uint8), imagej=True)
    p.write_bytes(full.read_bytes()[:5000])
    viewer = make_napari_viewer()
    with pytest.raises(Exception, match=r"cannot open cut\.tif: truncated"):
        viewer.open(str(p), plugin=PLUGIN)
    assert len(viewer.layers) == 0


# --- writers --------------------------------------------------------------------------------------


def test_label_axes_from_metadata_or_shape() -> None:
    assert label_axes(3, {"metadata": {"napari_unet_axes": "TCYX"}}) == "TYX"
    assert label_axes(3, {"metadata": {"napari_unet_axes": "ZCYX"}}) == "ZYX"
    assert label_axes(3, {"metadata": {}}) == "ZYX"
    assert label_axes(4, {"metadata": {"napari_unet_axes": "ZYX"}}) == "TZYX"  # does not fit: shape
    with pytest.raises(ValueError, match="5-D"):
        label_axes(5, {})


def _labels_layer(viewer, data) -> object:
    meta = {"napari_unet_axes": "ZYX", "unit": "µm"}
    return viewer.add_labels(data, scale=(2.0, 0.5, 0.5), metadata=meta, name="nuclei")


def test_save_labels_tiff_through_napari(make_napari_viewer, tmp_path: Path) -> None:
    labels = RNG.integers(0, 30, (3, 16, 16)).astype(np.int32)
    viewer = make_napari_viewer()
    layer = _labels_layer(viewer, labels)
    out = tmp_path / "nuclei.tif"
    layer.save(str(out), plugin=PLUGIN)
    data, axes, meta = read_image(out)
    np.testing.assert_array_equal(data, labels)
    assert axes == "ZYX" and meta["pixel_size"] == pytest.approx({"Z": 2.0, "Y": 0.5, "X": 0.5})
    assert meta["unit"] == "µm"


def test_save_labels_zarr_through_napari_and_reopen(make_napari_viewer, tmp_path: Path) -> None:
    labels = RNG.integers(0, 30, (3, 16, 16)).astype(np.uint32)
    viewer = make_napari_viewer()
    layer = _labels_layer(viewer, labels)
    out = tmp_path / "nuclei.zarr"
    layer.save(str(out), plugin=PLUGIN)
    layer.save(str(out), plugin=PLUGIN)  # saving again replaces the store
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nuclei.zarr"]
    [back] = viewer.open(str(out), plugin=PLUGIN)
    assert type(back).__name__ == "Labels"
    np.testing.assert_array_equal(np.asarray(back.data), labels)
    assert tuple(back.scale) == pytest.approx((2.0, 0.5, 0.5))


def test_writers_take_dask_labels_block_by_block(tmp_path: Path) -> None:
    labels = da.from_array(RNG.integers(0, 70000, (2, 3, 16, 16)).astype(np.int64), chunks=(1, 1, 16, 16))
    attrs = {"scale": (1.0, 2.0, 0.5, 0.5), "metadata": {"napari_unet_axes": "TZYX"}}
    [tif] = write_labels_tiff(str(tmp_path / "l.tif"), labels, attrs)
    data, axes, _ = read_image(tif)
    assert data.dtype == np.uint32 and axes == "TZYX"  # > 65535: uint32, not ImageJ
    np.testing.assert_array_equal(data, labels.compute())
    [store] = write_labels_zarr(str(tmp_path / "l.zarr"), labels, attrs)
    arr, axes, meta = read_ome_zarr(store)
    assert axes == "TZYX" and meta["labels"] and meta["pixel_size"]["Z"] == 2.0
    np.testing.assert_array_equal(arr.compute(), labels.compute())


def test_uncalibrated_labels_get_no_pixel_size(tmp_path: Path) -> None:
    [tif] = write_labels_tiff(str(tmp_path / "l.tif"), np.ones((8, 8), np.uint8), {"scale": (1.0, 1.0)})
    _, axes, meta = open_image(tif)
    assert axes == "YX" and "pixel_size" not in meta


def test_multiscale_labels_write_full_resolution(tmp_path: Path) -> None:
    full = RNG.integers(0, 5, (16, 16)).astype(np.uint16)
    [tif] = write_labels_tiff(str(tmp_path / "m.tif"), [full, full[::2, ::2]], {"scale": (1.0, 1.0)})
    np.testing.assert_array_equal(read_image(tif)[0], full)
