"""Chunked (lazy, memory-bounded) segmentation: equal to in-memory, one id across block borders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_unet.engine import predict
from napari_unet.engine.config import PredictConfig
from napari_unet.engine.metrics import match
from napari_unet.engine.object_scale import anisotropy_from_pixel_size
from napari_unet.engine.postprocess import ball
from napari_unet.engine.predict import segment
from napari_unet.models.registry import load_model
from napari_unet.samples.synthetic import nuclei_3d
from napari_unet.scale import chunked
from napari_unet.scale.blocks import plan_blocks
from napari_unet.scale.chunked import iter_segment_to_zarr, segment_chunked, segment_to_zarr

FP32 = PredictConfig(amp=False)


def same_up_to_relabelling(a: np.ndarray, b: np.ndarray) -> bool:
    """Same background and a one-to-one map between the ids of ``a`` and ``b``."""
    a, b = np.asarray(a).astype(np.int64), np.asarray(b).astype(np.int64)
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def shapes_image() -> np.ndarray:
    """Bright objects that cross block borders: discs, a long bar and a U whose arms meet only
    at its bottom (a block that sees only the arms labels them as two objects)."""
    img = np.zeros((96, 96), np.uint16)
    yy, xx = np.mgrid[:96, :96]
    for cy, cx, r in [(30, 30, 7), (31, 64, 8), (64, 31, 6), (70, 70, 9)]:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1000
    img[4:9, 5:90] = 1000  # a bar across three blocks
    img[12:60, 84:88] = 1000  # U: two arms ...
    img[12:60, 92:95] = 1000
    img[56:60, 84:95] = 1000  # ... joined at the bottom
    return img


# --------------------------------------------------------------------------- equal to in-memory


def test_chunked_equals_in_memory_on_a_small_stack(monkeypatch, tmp_path: Path) -> None:
    """The bundled model on a synthetic z-stack: same objects, chunked across Z, Y and X for
    post-processing and in Y/X for prediction, probabilities through a temporary store on disk."""
    model = load_model()
    s = nuclei_3d(shape=(16, 128, 128), z_spacing=3.0, seed=0)
    mem = segment(s.image, model=model, axes="ZYX")
    out = np.zeros(mem.shape, np.uint32)
    block, halo = (8, 48, 48), (4, 32, 32)
    monkeypatch.setattr(chunked, "PREDICT_BLOCK", 64)
    monkeypatch.setattr(chunked, "PROBS_IN_MEMORY", 0)
    segment_chunked(s.image, out, model, axes="ZYX", block=block, halo=halo, scratch=tmp_path)
    assert not list(tmp_path.iterdir())  # the temporary probabilities are gone
    m = match(mem, out)
    assert m.f1 == 1.0, m
    assert len(np.unique(out)) == len(np.unique(mem))
    # the test means something: objects of the in-memory result cross block borders
    borders = [b.core[1].start for b in plan_blocks(mem.shape, block, halo) if b.core[1].start > 0]
    assert any(len(np.unique(mem[:, y - 1 : y + 1][mem[:, y - 1 : y + 1] > 0])) > 0 for y in borders)


@pytest.mark.parametrize("block", [(1, 32, 32), (1, 20, 50), (1, 96, 40)])
def test_objects_crossing_block_borders_keep_one_id(blob_model, block, monkeypatch) -> None:
    image = shapes_image()
    mem = segment(image, model=blob_model, axes="YX", config=FP32)
    out = np.zeros(image.shape, np.uint32)
    joined = []
    real = chunked.compact_lut
    monkeypatch.setattr(
        chunked, "compact_lut", lambda joins, n: joined.append(dict(joins.parent)) or real(joins, n)
    )
    segment_chunked(image, out, blob_model, axes="YX", config=FP32, block=block[1:], halo=(0, 12, 12))
    if block == (1, 32, 32):  # the U's arms were two objects in the top block, joined below
        assert joined and joined[0]
    assert same_up_to_relabelling(mem, out)
    assert mem.max() == 6 and len(np.unique(out)) == 7
    assert len(np.unique(out[4:9, 5:90])) == 1  # the bar
    assert len(np.unique(out[12:60, 84:95][image[12:60, 84:95] > 0])) == 1  # the U


def test_zstack_split_along_z_keeps_one_id_through_z(blob_model) -> None:
    yy, xx = np.mgrid[:40, :40]
    stack = np.zeros((9, 40, 40), np.uint16)
    stack[:, (yy - 12) ** 2 + (xx - 12) ** 2 <= 36] = 1000  # a column through all of z
    stack[2:5, (yy - 28) ** 2 + (xx - 26) ** 2 <= 49] = 1000
    mem = segment(stack, model=blob_model, axes="ZYX", config=FP32)
    out = np.zeros(stack.shape, np.uint32)
    segment_chunked(stack, out, blob_model, axes="ZYX", config=FP32, block=(2, 24, 24), halo=(1, 8, 8))
    assert same_up_to_relabelling(mem, out)
    assert len(np.unique(out[:, 12, 12])) == 1 and out[0, 12, 12] > 0


def test_whole_frame_block_is_identical_to_in_memory(tiny_model_path: Path) -> None:
    """One block per frame: same bounds, tiles and post-processing, so the same ids."""
    model = load_model(tiny_model_path)
    image = np.random.default_rng(0).integers(0, 4000, (2, 3, 2, 40, 48)).astype(np.uint16)
    mem = segment(image, model=model, axes="TZCYX", channel=1, amp=False)
    out = np.zeros(mem.shape, np.uint32)
    segment_chunked(image, out, model, axes="TZCYX", channel=1, config=FP32)
    np.testing.assert_array_equal(out, mem)


def test_bounds_use_the_in_memory_strided_sample(monkeypatch) -> None:
    monkeypatch.setattr(chunked, "SAMPLE_VOXELS", 700)
    frame = np.random.default_rng(3).gamma(2.0, 100.0, (3, 37, 41)).astype(np.float32)
    blocks = plan_blocks(frame.shape, (2, 16, 13), (1, 4, 4))
    gen = chunked.frame_bounds(lambda box: frame[box][:, None], frame.shape, blocks, 1, 1.0, 99.8)
    with pytest.raises(StopIteration) as stop:
        while True:
            next(gen)
    got = stop.value.value
    step = frame.size // 700
    want = np.percentile(frame.reshape(-1)[::step], [1.0, 99.8])
    assert got == [(float(want[0]), float(want[1]))]


# --------------------------------------------------------------------------- memory bounded


class CountingArray:
    """A chunked array-like (as zarr) that records every read and refuses to be read whole."""

    def __init__(self, data: np.ndarray, chunks: tuple[int, ...]) -> None:
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.chunks = chunks
        self.reads: list[int] = []

    def __getitem__(self, index):
        part = self.data[index]
        self.reads.append(part.size)
        return part

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole image was materialised")


def test_reads_only_blocks_never_the_whole_image(blob_model) -> None:
    image = np.stack([shapes_image()] * 3)  # (T, Y, X)
    src = CountingArray(image, (1, 32, 32))
    out = np.zeros(image.shape, np.uint32)
    segment_chunked(src, out, blob_model, axes="TYX", config=FP32, block=(1, 32, 32), halo=(0, 8, 8))
    assert src.reads and max(src.reads) <= 32 * 32 < image[0].size
    mem = segment(image, model=blob_model, axes="TYX", config=FP32)
    assert all(same_up_to_relabelling(mem[t], out[t]) for t in range(3))


def test_zarr_in_and_out(tmp_path: Path, blob_model) -> None:
    zarr = pytest.importorskip("zarr")
    image = np.stack([shapes_image(), np.roll(shapes_image(), 5, axis=1)])
    src = zarr.open_array(
        str(tmp_path / "in.zarr"), mode="w", shape=image.shape, chunks=(1, 32, 32), dtype="u2"
    )
    src[:] = image
    dst = zarr.open_array(
        str(tmp_path / "out.zarr"), mode="w", shape=image.shape, chunks=(1, 32, 32), dtype="u4"
    )
    got = segment_chunked(src, dst, blob_model, axes="ZYX", config=FP32, block=(2, 40, 40), halo=(0, 12, 12))
    assert got is dst
    mem = segment(image, model=blob_model, axes="ZYX", config=FP32)
    assert same_up_to_relabelling(mem, dst[:])


def test_segment_to_zarr_and_stop_leaves_nothing_complete(tmp_path: Path, blob_model, monkeypatch) -> None:
    monkeypatch.setattr(chunked, "PROBS_IN_MEMORY", 0)  # probabilities in a temp store beside the output
    image = np.stack([shapes_image()] * 2)
    target = tmp_path / "labels.zarr"
    gen = iter_segment_to_zarr(image, target, blob_model, axes="TYX", config=FP32, block=(1, 32, 32))
    next(gen)
    next(gen)
    assert any(p.name.startswith(".napari-unet-probs") for p in tmp_path.iterdir())
    gen.close()  # Stop
    assert not target.exists()
    assert not any(p.name.startswith("labels") for p in tmp_path.iterdir())
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # the temp store is gone too
    path = segment_to_zarr(image, target, blob_model, axes="TYX", config=FP32, pixel_size=(1.0, 0.5, 0.5))
    assert path == target and target.is_dir()
    import zarr

    node = zarr.open(str(target), mode="r")
    arr = node["0"] if isinstance(node, zarr.Group) else node
    assert arr.dtype == np.uint32 and arr.shape == image.shape
    mem = segment(image, model=blob_model, axes="TYX", config=FP32)
    assert all(same_up_to_relabelling(mem[t], arr[t]) for t in range(2))


def test_bad_out_and_block_raise(blob_model) -> None:
    image = shapes_image()
    with pytest.raises(ValueError, match="shape"):
        segment_chunked(image, np.zeros((10, 10), np.uint32), blob_model, axes="YX")
    with pytest.raises(ValueError, match="integer"):
        segment_chunked(image, np.zeros(image.shape, np.float32), blob_model, axes="YX")
    with pytest.raises(ValueError, match="block"):
        segment_chunked(image, np.zeros(image.shape, np.uint32), blob_model, axes="YX", block=(0, 8, 8))


def test_constant_frame_gives_zeros(blob_model) -> None:
    out = np.full((2, 40, 40), 7, np.uint32)
    image = np.zeros((2, 40, 40), np.uint16)
    image[1, 10:20, 10:20] = 1000
    segment_chunked(image, out, blob_model, axes="TYX", config=FP32, block=(1, 16, 16), halo=(0, 4, 4))
    assert not out[0].any() and len(np.unique(out[1])) == 2


# --------------------------------------------------------------------------- time and 3D


def test_track_keeps_ids_over_time(blob_model) -> None:
    yy, xx = np.mgrid[:64, :64]
    movie = np.zeros((4, 64, 64), np.uint16)
    for t in range(4):
        movie[t][(yy - 20) ** 2 + (xx - 14 - 3 * t) ** 2 <= 49] = 1000  # drifts across a block border
        movie[t][(yy - 48) ** 2 + (xx - 48) ** 2 <= 36] = 1000
    movie[3][(yy - 50) ** 2 + (xx - 12) ** 2 <= 25] = 1000  # appears in the last frame
    out = np.zeros(movie.shape, np.uint32)
    segment_chunked(
        movie, out, blob_model, axes="TYX", config=FP32, block=(1, 32, 32), halo=(0, 10, 10), track=True
    )
    mover = {int(out[t, 20, 14 + 3 * t]) for t in range(4)}
    still = {int(out[t, 48, 48]) for t in range(4)}
    assert len(mover) == 1 and len(still) == 1 and mover != still and 0 not in mover | still
    assert int(out[3, 50, 12]) not in mover | still | {0}


def test_anisotropy_plumbing(monkeypatch, blob_model, tmp_path: Path) -> None:
    assert anisotropy_from_pixel_size({"Z": 2.0, "Y": 0.5, "X": 0.5}) == 4.0
    assert anisotropy_from_pixel_size((3.0, 1.0, 1.0)) == 3.0
    assert anisotropy_from_pixel_size((1.0, 1.0, 1.0)) is None  # napari's default scale: unknown
    assert anisotropy_from_pixel_size({"Y": 0.5, "X": 0.5}) is None
    with pytest.raises(ValueError, match="anisotropy"):
        PredictConfig(anisotropy=0.0)
    assert ball(5.0, 3.0).shape == (3, 11, 11) and ball(5.0, 1.0).shape == (11, 11, 11)
    seen = []
    real = chunked.instances_from_probabilities

    def spy(interior, foreground, params, **volume):
        seen.append(volume)
        return real(interior, foreground, params, **volume)

    monkeypatch.setattr(chunked, "instances_from_probabilities", spy)
    stack = np.zeros((4, 32, 32), np.uint16)
    stack[1:3, 8:20, 8:20] = 1000
    segment_to_zarr(
        stack, tmp_path / "a.zarr", blob_model, axes="ZYX", pixel_size={"Z": 2.0, "Y": 0.5, "X": 0.5}
    )
    assert seen[-1]["anisotropy"] == 4.0
    out = np.zeros(stack.shape, np.uint32)
    segment_chunked(stack, out, blob_model, axes="ZYX", config=PredictConfig(anisotropy=1.5))
    assert seen[-1]["anisotropy"] == 1.5
    segment_chunked(stack, out, blob_model, axes="ZYX")
    assert seen[-1]["anisotropy"] == predict.ASSUMED_ANISOTROPY
