"""Reading images and writing labels: axes from metadata, every unreadable file refused with a
one-line ImageReadError, and label files written atomically."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_unet.io import images as io
from napari_unet.io.errors import ImageReadError
from napari_unet.io.images import image_stem, read_image
from napari_unet.io.labels import write_labels
from napari_unet.io.tiff import map_tiff_axes

RNG = np.random.default_rng(0)


def _stack(shape=(5, 32, 32)) -> np.ndarray:
    return RNG.integers(0, 4000, shape).astype(np.uint16)


def _refused(path: Path, *fragments: str) -> str:
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    msg = str(info.value)
    assert "\n" not in msg and msg
    assert str(path) not in msg  # the caller prefixes the file name itself
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


# --- axes from metadata ---------------------------------------------------------------------------


def test_plain_2d_tif(tmp_path: Path) -> None:
    p = tmp_path / "a.tif"
    tifffile.imwrite(p, _stack()[0])
    data, axes, meta = read_image(p)
    assert data.shape == (32, 32) and data.dtype == np.uint16
    assert axes == "YX"
    assert meta["format"] == "tiff"


def test_imagej_zyx_with_calibration(tmp_path: Path) -> None:
    p = tmp_path / "stack.tif"
    tifffile.imwrite(
        p,
        _stack(),
        imagej=True,
        resolution=(4.0, 4.0),
        metadata={"axes": "ZYX", "spacing": 2.0, "unit": "um"},
    )
    data, axes, meta = read_image(p)
    assert data.shape == (5, 32, 32)
    assert axes == "ZYX"
    assert meta["format"] == "imagej-tiff"
    assert meta["pixel_size"] == pytest.approx({"X": 0.25, "Y": 0.25, "Z": 2.0})
    assert meta["unit"] == "µm"


def test_imagej_hyperstack_tzcyx(tmp_path: Path) -> None:
    p = tmp_path / "hyper.tif"
    tifffile.imwrite(p, np.zeros((2, 3, 2, 16, 16), np.uint16), imagej=True, metadata={"axes": "TZCYX"})
    data, axes, _ = read_image(p)
    assert data.shape == (2, 3, 2, 16, 16)
    assert axes == "TZCYX"


def test_ome_tiff_axes_and_pixel_size(tmp_path: Path) -> None:
    p = tmp_path / "cells.ome.tif"
    tifffile.imwrite(
        p,
        _stack(),
        metadata={"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeZ": 1.5},
    )
    data, axes, meta = read_image(p)
    assert axes == "ZYX" and data.shape == (5, 32, 32)
    assert meta["format"] == "ome-tiff"
    assert meta["pixel_size"] == pytest.approx({"X": 0.5, "Y": 0.5, "Z": 1.5})


def test_unlabelled_3d_tif_has_unknown_axes(tmp_path: Path) -> None:
    """tifffile calls an undeclared leading axis 'Q': we report None instead of guessing."""
    p = tmp_path / "q.tif"
    tifffile.imwrite(p, _stack())
    data, axes, meta = read_image(p)
    assert data.shape == (5, 32, 32)
    assert axes is None
    assert meta["file_axes"] == "QYX"


def test_5d_tif_without_metadata_has_unknown_axes(tmp_path: Path) -> None:
    p = tmp_path / "five.tif"
    tifffile.imwrite(p, np.zeros((2, 2, 2, 8, 8), np.uint8))
    _, axes, _ = read_image(p)
    assert axes is None


def test_rgb_tif_samples_become_channels(tmp_path: Path) -> None:
    p = tmp_path / "rgb.tif"
    tifffile.imwrite(p, RNG.integers(0, 255, (16, 16, 3)).astype(np.uint8), photometric="rgb")
    data, axes, meta = read_image(p)
    assert data.shape == (16, 16, 3)
    assert axes == "YXC"
    assert meta["rgb"] is True


@pytest.mark.parametrize(
    ("file_axes", "ours"),
    [("YX", "YX"), ("ZYX", "ZYX"), ("TZCYX", "TZCYX"), ("YXS", "YXC"), ("QYX", None), ("IYX", None)],
)
def test_map_tiff_axes(file_axes: str, ours: str | None) -> None:
    assert map_tiff_axes(file_axes) == ours


def test_map_tiff_axes_refuses_channel_and_samples_together() -> None:
    assert map_tiff_axes("CYXS") is None


def test_big_endian_tif_comes_back_native(tmp_path: Path) -> None:
    p = tmp_path / "be.tif"
    tifffile.imwrite(p, _stack()[0], byteorder=">")
    data, _, _ = read_image(p)
    assert data.dtype.isnative
    assert data.dtype == np.uint16


# --- PNG / JPEG -----------------------------------------------------------------------------------


def test_gray_png(tmp_path: Path) -> None:
    p = tmp_path / "g.png"
    Image.fromarray((np.arange(64).reshape(8, 8) * 900).astype(np.uint16)).save(p)
    data, axes, meta = read_image(p)
    assert data.shape == (8, 8) and data.dtype == np.uint16
    assert axes == "YX" and meta["format"] == "png"


def test_color_png_is_yxc(tmp_path: Path) -> None:
    p = tmp_path / "color.png"
    Image.fromarray(RNG.integers(0, 255, (8, 8, 3)).astype(np.uint8)).save(p)
    data, axes, meta = read_image(p)
    assert data.shape == (8, 8, 3)
    assert axes == "YXC" and meta["rgb"] is True


def test_gray_saved_as_rgb_is_collapsed(tmp_path: Path) -> None:
    p = tmp_path / "grayrgb.png"
    gray = RNG.integers(0, 255, (8, 8)).astype(np.uint8)
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(p)
    data, axes, meta = read_image(p)
    assert axes == "YX" and meta["collapsed_rgb"] is True
    np.testing.assert_array_equal(data, gray)
    raw, raw_axes, _ = read_image(p, collapse_gray_rgb=False)
    assert raw.shape == (8, 8, 3) and raw_axes == "YXC"


def test_gray_rgba_with_transparency_is_not_collapsed(tmp_path: Path) -> None:
    p = tmp_path / "alpha.png"
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = 7
    rgba[..., 3] = np.arange(64).reshape(8, 8)
    Image.fromarray(rgba, "RGBA").save(p)
    _, axes, _ = read_image(p)
    assert axes == "YXC"


def test_jpeg(tmp_path: Path) -> None:
    p = tmp_path / "photo.JPG"
    Image.fromarray(RNG.integers(0, 255, (16, 16)).astype(np.uint8)).save(p, format="JPEG")
    data, axes, meta = read_image(p)
    assert data.shape == (16, 16) and axes == "YX" and meta["format"] == "jpeg"


# --- refusals -------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    _refused(tmp_path / "nope.tif", "no such file")


def test_folder(tmp_path: Path) -> None:
    d = tmp_path / "dir.tif"
    d.mkdir()
    _refused(d, "folder")


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.tif"
    p.write_bytes(b"")
    _refused(p, "empty")


def test_text_named_tif(tmp_path: Path) -> None:
    p = tmp_path / "notes.tif"
    p.write_text("hello, I am not an image\n")
    _refused(p, "not a TIFF file")


def test_text_named_png(tmp_path: Path) -> None:
    p = tmp_path / "notes.png"
    p.write_text("hello, I am not an image\n")
    _refused(p, "not a PNG image")


def test_truncated_png(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(RNG.integers(0, 255, (64, 64)).astype(np.uint8)).save(good)
    p = tmp_path / "cut.png"
    p.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _refused(p, "PNG")


def _truncated_variants(tmp_path: Path):
    stack = _stack()
    for name, kwargs in [
        ("imagej", {"imagej": True, "metadata": {"axes": "ZYX"}}),
        ("plain", {}),
        ("zlib", {"compression": "zlib"}),
        ("2d", {}),
    ]:
        original = stack[0] if name == "2d" else stack
        src = tmp_path / f"{name}.tif"
        tifffile.imwrite(src, original, **kwargs)
        full = src.read_bytes()
        for fraction in (0.05, 0.3, 0.5, 0.9, 0.999):
            yield name, fraction, full[: int(len(full) * fraction)], original


def test_truncated_tiffs_are_refused_not_shortened(tmp_path: Path, capfd) -> None:
    """tifffile reads a cut-off stack as its first page and only logs it: that must be an error.

    Cutting the last few bytes may only remove bytes nothing refers to (tifffile leaves a few
    unreferenced bytes after the last IFD); such a file must then read back complete and equal.
    """
    for name, fraction, blob, original in _truncated_variants(tmp_path):
        p = tmp_path / f"cut-{name}-{fraction}.tif"
        p.write_bytes(blob)
        try:
            data, _, _ = read_image(p)
        except ImageReadError as exc:
            assert "\n" not in str(exc), (name, fraction)
            continue
        assert fraction > 0.99, f"{name} cut at {fraction} was read as {data.shape}"
        np.testing.assert_array_equal(data, original)
    # tifffile's log lines are captured, not printed next to our one-line error
    assert capfd.readouterr().err == ""


def test_zero_size_tif(tmp_path: Path) -> None:
    p = tmp_path / "zero.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile warns that a zero-size TIFF is nonconformant
        tifffile.imwrite(p, np.zeros((0, 10), np.uint8))
    _refused(p, "no pixels")


@pytest.mark.parametrize("name", ["image.bmp", "image.zarr", "README"])
def test_unsupported_suffix(tmp_path: Path, name: str) -> None:
    p = tmp_path / name
    p.write_bytes(b"x")
    _refused(p, "unsupported file type")


@pytest.mark.parametrize(
    ("name", "stem"),
    [("a.tif", "a"), ("a.ome.tif", "a"), ("b.OME.TIFF", "b"), ("c.png", "c"), ("d.v1.tif", "d.v1")],
)
def test_image_stem(name: str, stem: str) -> None:
    assert image_stem(Path("/x") / name) == stem


# --- writing labels -------------------------------------------------------------------------------


def test_write_labels_imagej_round_trip_with_calibration(tmp_path: Path) -> None:
    labels = RNG.integers(0, 50, (3, 16, 16)).astype(np.int64)
    meta = {"pixel_size": {"X": 0.25, "Y": 0.25, "Z": 1.5}, "unit": "µm"}
    p = write_labels(tmp_path / "l.tif", labels, axes="ZYX", meta=meta)
    data, axes, back = read_image(p)
    assert data.dtype == np.uint16
    np.testing.assert_array_equal(data, labels)
    assert axes == "ZYX"
    assert back["format"] == "imagej-tiff"
    assert back["pixel_size"] == pytest.approx(meta["pixel_size"])
    with tifffile.TiffFile(p) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE


def test_write_labels_many_objects_uses_uint32(tmp_path: Path) -> None:
    labels = np.arange(300 * 300, dtype=np.int64).reshape(300, 300)
    p = write_labels(tmp_path / "many.tif", labels, axes="YX")
    data, axes, _ = read_image(p)
    assert data.dtype == np.uint32 and axes == "YX"
    np.testing.assert_array_equal(data, labels)


def test_write_labels_non_imagej_axis_order_keeps_axes(tmp_path: Path) -> None:
    labels = np.zeros((2, 3, 8, 8), np.uint16)
    p = write_labels(tmp_path / "zt.tif", labels, axes="ZTYX")
    data, axes, _ = read_image(p)
    assert data.shape == (2, 3, 8, 8) and axes == "ZTYX"


def test_write_labels_length3_axis_is_not_rgb(tmp_path: Path) -> None:
    p = write_labels(tmp_path / "three.tif", np.ones((2, 3, 8, 8), np.uint8))
    data, _, meta = read_image(p)
    assert data.shape == (2, 3, 8, 8)
    assert "S" not in meta["file_axes"]


def test_write_labels_bool(tmp_path: Path) -> None:
    p = write_labels(tmp_path / "mask.tif", np.eye(8, dtype=bool), axes="YX")
    data, _, _ = read_image(p)
    assert data.dtype == np.uint16 and data.sum() == 8


@pytest.mark.parametrize(
    ("labels", "axes", "match"),
    [
        (np.zeros((4, 4), np.float32), None, "integers"),
        (np.full((4, 4), -1), None, "negative"),
        (np.zeros((4, 4), np.uint16), "ZYX", "do not match"),
    ],
)
def test_write_labels_refuses(tmp_path: Path, labels: np.ndarray, axes: str | None, match: str) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    with pytest.raises(ValueError, match=match):
        write_labels(folder / "bad.tif", labels, axes=axes)
    assert list(folder.iterdir()) == []


def test_write_labels_respects_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        p = write_labels(tmp_path / "perm.tif", np.zeros((4, 4), np.uint16))
    finally:
        os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("exc", [KeyboardInterrupt, OSError])
def test_interrupted_write_leaves_no_file(tmp_path: Path, monkeypatch, exc: type[BaseException]) -> None:
    """Half the bytes are written, then Ctrl-C / disk full: no output, no temp file, old file intact."""
    folder = tmp_path / "w"
    folder.mkdir()
    target = folder / "out_labels.tif"
    target.write_bytes(b"previous result")
    real = tifffile.imwrite

    def half_then_fail(file, data, **kwargs):
        real(file, data, **kwargs)
        with open(file, "r+b") as fh:
            fh.truncate(os.path.getsize(file) // 2)
        raise exc("interrupted")

    monkeypatch.setattr(tifffile, "imwrite", half_then_fail)
    with pytest.raises(exc):
        write_labels(target, np.ones((64, 64), np.uint16), axes="YX")
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in folder.iterdir()) == ["out_labels.tif"]


def test_io_does_not_import_qt() -> None:
    """The core reader must stay usable headless (CLI, clusters)."""
    assert "qtpy" not in io.__dict__ and "napari" not in io.__dict__


# --- open_image: stacks of any size ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["ome", "imagej", "plain", "tiled"])
def test_lazy_tiff_equals_eager_read(tmp_path: Path, name: str, write_ome_tiff) -> None:
    import dask.array as da

    p = tmp_path / f"{name}.tif"
    if name == "ome":
        data = write_ome_tiff(p)
    else:
        data = RNG.integers(0, 4000, (2, 3, 2, 32, 32)).astype(np.uint16)
        kwargs = {
            "imagej": {"imagej": True, "metadata": {"axes": "TZCYX"}},
            "plain": {"metadata": {"axes": "TZCYX"}},
            "tiled": {"tile": (16, 16), "compression": "zlib", "metadata": {"axes": "TZCYX"}},
        }[name]
        tifffile.imwrite(p, data, **kwargs)
    lazy, lazy_axes, lazy_meta = io.open_image(p, lazy=True)
    eager, eager_axes, eager_meta = io.open_image(p, lazy=False)
    assert isinstance(lazy, da.Array) and isinstance(eager, np.ndarray)
    assert lazy.chunks[-2:] == ((data.shape[-2],), (data.shape[-1],))  # one chunk per plane
    assert max(lazy.chunks[0]) == 1
    np.testing.assert_array_equal(lazy.compute(), eager)
    np.testing.assert_array_equal(eager, data)
    assert lazy_axes == eager_axes
    assert {k: v for k, v in lazy_meta.items() if k != "lazy"} == {
        k: v for k, v in eager_meta.items() if k != "lazy"
    }


def test_ome_tiff_meta_channels_and_time(tmp_path: Path, write_ome_tiff) -> None:
    p = tmp_path / "c.ome.tif"
    write_ome_tiff(p)
    _, axes, meta = io.open_image(p)
    assert axes == "TCZYX"
    assert meta["channel_names"] == ["DAPI", "GFP", "RFP"]
    assert meta["pixel_size"] == pytest.approx({"T": 30.0, "Z": 2.0, "Y": 0.5, "X": 0.5})


def test_lazy_threshold_default_env_and_argument(tmp_path: Path, monkeypatch) -> None:
    import dask.array as da

    p = tmp_path / "s.tif"
    tifffile.imwrite(p, _stack())  # 10 kB of pixels
    assert isinstance(io.open_image(p)[0], np.ndarray)  # default threshold: 1 GiB
    assert isinstance(io.open_image(p, lazy_threshold_bytes=1000)[0], da.Array)
    monkeypatch.setenv("NAPARI_UNET_LAZY_BYTES", "1000")
    assert isinstance(io.open_image(p)[0], da.Array)
    assert isinstance(io.open_image(p, lazy_threshold_bytes=10**9)[0], np.ndarray)  # caller wins
    monkeypatch.setenv("NAPARI_UNET_LAZY_BYTES", "lots")
    with pytest.raises(ImageReadError, match="NAPARI_UNET_LAZY_BYTES"):
        io.open_image(p)


def test_lazy_tiff_pickles_for_distributed_workers(tmp_path: Path) -> None:
    import pickle

    p = tmp_path / "s.tif"
    data = _stack()
    tifffile.imwrite(p, data, byteorder=">")
    lazy, _, _ = io.open_image(p, lazy=True)
    lazy[0].compute()  # the file is open in this process now; the pickle must not carry it
    back = pickle.loads(pickle.dumps(lazy))
    out = back.compute()
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, data)


@pytest.mark.parametrize("lazy", [True, False])
def test_truncated_tiff_refused_lazily_too(tmp_path: Path, lazy: bool) -> None:
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, _stack((8, 64, 64)), imagej=True, metadata={"axes": "ZYX"})
    p = tmp_path / "cut.tif"
    p.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ImageReadError, match="truncated") as info:
        io.open_image(p, lazy=lazy)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("old", "new"), [(b'SizeZ="4"', b'SizeZ="5"'), (b'SizeT="2"', b'SizeT="9"')])
def test_ome_metadata_contradicting_the_pages(tmp_path: Path, old: bytes, new: bytes, write_ome_tiff) -> None:
    """tifffile zero-fills missing frames and only logs it: that is an error for us."""
    good = tmp_path / "good.ome.tif"
    write_ome_tiff(good)
    p = tmp_path / "bad.ome.tif"
    p.write_bytes(good.read_bytes().replace(old, new))
    msg = _refused(p, "OME metadata contradicts the data")
    assert "missing" in msg
    with pytest.raises(ImageReadError, match="contradicts"):
        io.open_image(p, lazy=True)


def test_six_dimensional_tiff_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "six.tif"
    tifffile.imwrite(p, np.zeros((2, 2, 2, 2, 8, 8), np.uint8))
    _refused(p, "6-D", "at most 5 dimensions")


def test_open_image_png_and_zarr_routes(tmp_path: Path) -> None:
    from napari_unet.io.omezarr import write_ome_zarr

    png = tmp_path / "g.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
    data, axes, meta = io.open_image(png)
    assert isinstance(data, np.ndarray) and axes == "YX" and meta["lazy"] is False
    store = write_ome_zarr(tmp_path / "s.ome.zarr", np.ones((2, 8, 8), np.uint8), "ZYX")
    arr, axes, meta = io.open_image(store)
    assert axes == "ZYX" and meta["lazy"] is True and int(arr.sum().compute()) == 128
    assert image_stem(store) == "s"


def test_write_labels_from_dask_plane_by_plane(tmp_path: Path) -> None:
    import dask.array as da

    labels = da.from_array(RNG.integers(0, 60, (3, 4, 16, 16)), chunks=(1, 1, 16, 16))
    p = write_labels(tmp_path / "l.tif", labels, axes="TZYX", meta={"pixel_size": {"X": 0.5, "Y": 0.5}})
    data, axes, meta = read_image(p)
    assert data.dtype == np.uint16 and axes == "TZYX" and meta["format"] == "imagej-tiff"
    np.testing.assert_array_equal(data, labels.compute())
    with pytest.raises(ValueError, match="negative"):
        write_labels(tmp_path / "neg.tif", da.full((4, 4), -1, chunks=2), axes="YX")
    assert not (tmp_path / "neg.tif").exists()
