"""OME-Zarr: stores written by the tests with zarr directly (NGFF 0.4 and 0.5) and by our writer,
read lazily; bad stores refused with a one-line ImageReadError; writes that are atomic."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_unet.io.errors import ImageReadError
from napari_unet.io.images import open_image
from napari_unet.io.omezarr import ome_zarr_writer, read_ome_zarr, read_ome_zarr_levels, write_ome_zarr

RNG = np.random.default_rng(1)


def _ngff04(path: Path, data: np.ndarray, axes: str = "tczyx", scale=None, levels: int = 1, **extra) -> Path:
    """An NGFF 0.4 image written the way other tools write it: zarr v2 + hand-made .zattrs."""
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    datasets = []
    for level in range(levels):
        f = 2**level
        arr = data[(...,) + (slice(None, None, f),) * 2]
        root.create_array(str(level), shape=arr.shape, chunks=arr.shape, dtype=arr.dtype)[...] = arr
        sc = list(scale or [1.0] * data.ndim)
        sc[-2:] = [sc[-2] * f, sc[-1] * f]
        datasets.append({"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": sc}]})
    types = {"t": "time", "c": "channel"}
    ax = [
        {"name": a, "type": types.get(a, "space"), **({"unit": "micrometer"} if a in "zyx" else {})}
        for a in axes
    ]
    root.attrs.update({"multiscales": [{"version": "0.4", "axes": ax, "datasets": datasets}], **extra})
    return path


def _refused(path: Path, *fragments: str) -> str:
    with pytest.raises(ImageReadError) as info:
        open_image(path)
    msg = str(info.value)
    assert msg and "\n" not in msg and str(path) not in msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


# --- reading stores written by others -------------------------------------------------------------


def test_ngff04_written_with_zarr_directly(tmp_path: Path) -> None:
    data = RNG.integers(0, 4000, (2, 3, 4, 16, 24)).astype(np.uint16)
    p = _ngff04(
        tmp_path / "img.ome.zarr",
        data,
        scale=[1.0, 1.0, 2.0, 0.5, 0.5],
        omero={"channels": [{"label": "DAPI"}, {"label": "GFP"}, {"label": "RFP"}]},
    )
    arr, axes, meta = open_image(p)
    assert isinstance(arr, da.Array)
    assert axes == "TCZYX"
    np.testing.assert_array_equal(arr.compute(), data)
    assert meta["format"] == "ome-zarr" and meta["lazy"] is True
    assert meta["pixel_size"] == pytest.approx({"T": 1.0, "Z": 2.0, "Y": 0.5, "X": 0.5})
    assert meta["unit"] == "µm"
    assert meta["channel_names"] == ["DAPI", "GFP", "RFP"]
    assert meta["ngff_version"] == "0.4"


def test_multiscale_levels_highest_resolution_first(tmp_path: Path) -> None:
    data = RNG.integers(0, 255, (3, 32, 32)).astype(np.uint8)
    p = _ngff04(tmp_path / "pyr.zarr", data, axes="zyx", scale=[2.0, 0.25, 0.25], levels=2)
    arr, axes, meta = read_ome_zarr(p)
    assert arr.shape == (3, 32, 32) and axes == "ZYX"
    assert meta["levels"] == 2 and meta["level_shapes"] == [(3, 32, 32), (3, 16, 16)]
    assert meta["pixel_size"]["X"] == pytest.approx(0.25)
    levels, _, _ = read_ome_zarr_levels(p)
    np.testing.assert_array_equal(levels[1].compute(), data[:, ::2, ::2])


def test_ngff05_zarr_v3_attributes_under_ome(tmp_path: Path) -> None:
    data = RNG.integers(0, 255, (4, 16, 16)).astype(np.uint8)
    root = zarr.open_group(str(tmp_path / "v3.zarr"), mode="w", zarr_format=3)
    root.create_array("s0", shape=data.shape, chunks=(1, 16, 16), dtype=data.dtype)[...] = data
    ax = [{"name": "z", "type": "space"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    ms = {
        "axes": ax,
        "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [3, 1, 1]}]}],
    }
    root.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}
    arr, axes, meta = open_image(tmp_path / "v3.zarr")
    assert axes == "ZYX" and meta["ngff_version"] == "0.5"
    assert meta["pixel_size"]["Z"] == 3
    np.testing.assert_array_equal(arr.compute(), data)


def test_plain_zarr_array_opens_without_axes(tmp_path: Path) -> None:
    """No OME metadata: readable (axes None, a note why) so the reader can guess and the user fix."""
    data = np.arange(2 * 8 * 8, dtype=np.uint16).reshape(2, 8, 8)
    zarr.create_array(str(tmp_path / "plain.zarr"), shape=data.shape, dtype=data.dtype)[...] = data
    arr, axes, meta = open_image(tmp_path / "plain.zarr")
    assert axes is None and meta["format"] == "zarr" and "without OME" in meta["note"]
    np.testing.assert_array_equal(arr.compute(), data)


def test_lazy_zarr_graph_pickles_for_distributed_workers(tmp_path: Path) -> None:
    p = write_ome_zarr(tmp_path / "a.zarr", np.ones((2, 8, 8), np.uint16), "ZYX")
    arr, _, _ = open_image(p)
    assert int(pickle.loads(pickle.dumps(arr)).sum().compute()) == 128


# --- refusals -------------------------------------------------------------------------------------


def test_group_without_multiscales_is_refused(tmp_path: Path) -> None:
    root = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=2)
    root.create_array("a", shape=(4, 4), dtype="u1")
    root.create_array("b", shape=(4, 4), dtype="u1")
    _refused(tmp_path / "g.zarr", "no OME-NGFF 'multiscales' metadata")


def test_folder_that_is_not_zarr(tmp_path: Path) -> None:
    d = tmp_path / "photos.zarr"
    d.mkdir()
    (d / "a.txt").write_text("hi")
    _refused(d, "not a Zarr store")


def test_axes_contradicting_the_data(tmp_path: Path) -> None:
    p = _ngff04(tmp_path / "bad.zarr", np.zeros((3, 8, 8), np.uint8), axes="zyx")
    attrs = json.loads((p / ".zattrs").read_text())
    attrs["multiscales"][0]["axes"] = attrs["multiscales"][0]["axes"][1:]  # says YX, data is 3-D
    (p / ".zattrs").write_text(json.dumps(attrs))
    _refused(p, "OME metadata lists 2 axes", "3 dimensions")


def test_scale_contradicting_the_data(tmp_path: Path) -> None:
    p = _ngff04(tmp_path / "bad.zarr", np.zeros((3, 8, 8), np.uint8), axes="zyx", scale=[1, 1, 1])
    attrs = json.loads((p / ".zattrs").read_text())
    attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] = [1, 1]
    (p / ".zattrs").write_text(json.dumps(attrs))
    _refused(p, "2 scale factors")


def test_missing_dataset(tmp_path: Path) -> None:
    p = _ngff04(tmp_path / "bad.zarr", np.zeros((3, 8, 8), np.uint8), axes="zyx")
    attrs = json.loads((p / ".zattrs").read_text())
    attrs["multiscales"][0]["datasets"][0]["path"] = "nope"
    (p / ".zattrs").write_text(json.dumps(attrs))
    _refused(p, "'nope'")


def test_mixed_pixel_types_across_levels_are_refused(tmp_path: Path) -> None:
    """Levels (and so channels across them) of different types mean a broken writer: no upcast."""
    p = _ngff04(tmp_path / "mixed.zarr", np.zeros((2, 8, 8), np.uint16), axes="cyx", levels=2)
    root = zarr.open_group(str(p), mode="r+")
    del root["1"]
    root.create_array("1", shape=(2, 4, 4), dtype="float32")
    _refused(p, "different pixel types", "float32", "uint16")


def test_six_dimensions_are_refused(tmp_path: Path) -> None:
    zarr.create_array(str(tmp_path / "six.zarr"), shape=(2,) * 4 + (4, 4), dtype="u1")
    _refused(tmp_path / "six.zarr", "6-D", "at most 5")


# --- our writer -----------------------------------------------------------------------------------


def test_write_read_round_trip_reorders_to_ngff(tmp_path: Path) -> None:
    data = RNG.integers(0, 9, (2, 3, 2, 16, 16)).astype(np.uint16)  # TZCYX: Z before C
    p = write_ome_zarr(
        tmp_path / "out.zarr",
        data,
        "TZCYX",
        pixel_size={"Z": 2.0, "Y": 0.3, "X": 0.3},
        unit="µm",
        name="cells",
        channel_names=["a", "b"],
    )
    attrs = json.loads((p / ".zattrs").read_text())
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4" and [a["name"] for a in ms["axes"]] == ["t", "c", "z", "y", "x"]
    assert ms["axes"][-1]["unit"] == "micrometer"
    assert json.loads((p / "0" / ".zarray").read_text())["dimension_separator"] == "/"
    arr, axes, meta = read_ome_zarr(p)
    assert axes == "TCZYX"
    np.testing.assert_array_equal(arr.compute(), data.transpose(0, 2, 1, 3, 4))
    assert meta["pixel_size"] == pytest.approx({"T": 1.0, "Z": 2.0, "Y": 0.3, "X": 0.3})
    assert meta["unit"] == "µm" and meta["channel_names"] == ["a", "b"] and meta["name"] == "cells"


def test_write_dask_block_by_block_labels(tmp_path: Path) -> None:
    labels = da.from_array(RNG.integers(0, 50, (4, 40, 40)).astype(np.int32), chunks=(1, 40, 40))
    p = write_ome_zarr(tmp_path / "labels.zarr", labels, "ZYX", chunks=(1, 16, 16), labels=True)
    arr, axes, meta = open_image(p)
    assert meta["labels"] is True and axes == "ZYX"
    assert arr.chunks[1][0] == 16
    np.testing.assert_array_equal(arr.compute(), labels.compute())


def test_writer_refuses_existing_unless_overwrite(tmp_path: Path) -> None:
    p = write_ome_zarr(tmp_path / "x.zarr", np.zeros((4, 4), np.uint8), "YX")
    with pytest.raises(FileExistsError):
        write_ome_zarr(p, np.ones((4, 4), np.uint8), "YX")
    write_ome_zarr(p, np.ones((4, 4), np.uint8), "YX", overwrite=True)
    assert int(read_ome_zarr(p)[0].sum().compute()) == 16
    assert sorted(x.name for x in tmp_path.iterdir()) == ["x.zarr"]


def test_streaming_writer_commits_only_on_clean_exit(tmp_path: Path) -> None:
    target = tmp_path / "stream.zarr"
    with pytest.raises(RuntimeError):
        with ome_zarr_writer(target, (3, 8, 8), np.uint32, "ZYX", (1, 8, 8), labels=True) as arr:
            arr[0] = 7
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []  # no store, no temp folder
    with ome_zarr_writer(target, (3, 8, 8), np.uint32, "ZYX", (1, 8, 8), pixel_size={"Z": 4.0}) as arr:
        assert not target.exists()  # still the hidden temp store
        arr[1] = 5
    back, _, meta = read_ome_zarr(target)
    assert back[1].compute().min() == 5 and back[0].compute().max() == 0
    assert meta["pixel_size"]["Z"] == 4.0


def test_interrupted_dask_write_leaves_no_store(tmp_path: Path) -> None:
    def boom(block: np.ndarray, block_info=None) -> np.ndarray:
        if block_info[0]["chunk-location"][0] == 2:
            raise KeyboardInterrupt
        return block

    data = da.zeros((4, 8, 8), dtype=np.uint16, chunks=(1, 8, 8)).map_blocks(boom, dtype=np.uint16)
    with pytest.raises(KeyboardInterrupt):
        write_ome_zarr(tmp_path / "half.zarr", data, "ZYX")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("axes", "match"),
    [("ZCYX", "NGFF order"), ("ZYX", "match|dimensions")],
)
def test_streaming_writer_refuses_bad_axes(tmp_path: Path, axes: str, match: str) -> None:
    shape = (2, 2, 4, 4)
    with pytest.raises(ValueError, match=match):
        with ome_zarr_writer(tmp_path / "a.zarr", shape, np.uint16, axes, None):
            pass
    assert list(tmp_path.iterdir()) == []


def test_labels_writer_refuses_float(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="integer"):
        write_ome_zarr(tmp_path / "f.zarr", np.zeros((4, 4), np.float32), "YX", labels=True)
    assert list(tmp_path.iterdir()) == []


def test_open_level_after_commit_is_writable(tmp_path: Path) -> None:
    """The streaming engine backs its Labels layer by the committed store, not the gone temp one."""
    from napari_unet.io.omezarr import open_level

    with ome_zarr_writer(tmp_path / "l.zarr", (2, 8, 8), np.uint32, "ZYX", None, labels=True) as arr:
        arr[0] = 3
    live = open_level(tmp_path / "l.zarr", mode="r+")
    live[1] = 9
    back = open_level(tmp_path / "l.zarr")
    assert back[0].max() == 3 and back[1].min() == 9
    with pytest.raises(ImageReadError, match="no resolution level 1"):
        open_level(tmp_path / "l.zarr", level=1)
