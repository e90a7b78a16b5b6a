"""Prediction engine and segmentation API, with tiny nets (no bundled weights, no data)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_unet.common.axes import AxesError
from napari_unet.engine import inference, object_scale, predict
from napari_unet.engine.config import PredictConfig, Progress
from napari_unet.engine.devices import autocast_dtype
from napari_unet.engine.inference import iter_probabilities
from napari_unet.engine.normalize import BadImageError
from napari_unet.engine.postprocess import PostprocessParams
from napari_unet.engine.predict import iter_segment, segment
from napari_unet.models.model_file import Model
from napari_unet.models.unet import UNet, UNetConfig

FP32 = PredictConfig(amp=False)


@pytest.fixture
def tiny() -> Model:
    torch.manual_seed(0)
    net = UNet(UNetConfig(base=4, depth=2))
    for m in net.modules():  # non-trivial statistics, so BatchNorm folding is really tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return Model(net.eval(), {"name": "tiny"})


def drain(gen):
    steps = []
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as stop:
            return steps, stop.value


def discs(shape: tuple[int, int], centres, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape, np.uint16)
    for cy, cx in centres:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 1000
    return img


# --------------------------------------------------------------------------- probabilities


@pytest.mark.parametrize("batch_size", [1, 3])
def test_iter_probabilities_yields_once_per_batch(tiny, batch_size):
    image = np.random.default_rng(0).random((1, 70, 90)).astype(np.float32)
    config = PredictConfig(tile=32, overlap=16, batch_size=batch_size, amp=False)
    steps, probs = drain(iter_probabilities(tiny, image, config))
    total = steps[-1].total
    assert total == len(inference.tile_grid(tiny, (70, 90), config)) > 1
    assert len(steps) == math.ceil(total / batch_size)
    assert [s.done for s in steps] == [min((i + 1) * batch_size, total) for i in range(len(steps))]
    assert all(s.stage == "predict" and s.total == total for s in steps)
    assert probs.shape == (3, 70, 90) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)


def whole_image_probs(model: Model, image: np.ndarray) -> np.ndarray:
    """Reference: the plain module on the whole image, mirror-padded to the net's multiple."""
    m = model.net.multiple
    h, w = image.shape[-2:]
    x = np.pad(image, ((0, 0), (0, -h % m), (0, -w % m)), mode="reflect")
    with torch.inference_mode():
        out = model.net.eval()(torch.from_numpy(x)[None])
    return torch.softmax(out, 1)[0, :, :h, :w].numpy()


def test_tiles_are_seamless(tiny):
    """Small tiles with overlap beyond the receptive field == whole-image prediction."""
    image = np.random.default_rng(1).random((1, 150, 230)).astype(np.float32)
    ref = whole_image_probs(tiny, image)
    config = PredictConfig(tile=48, overlap=64, batch_size=2, amp=False)
    steps, tiled = drain(iter_probabilities(tiny, image, config))
    assert steps[-1].total > 4
    np.testing.assert_allclose(tiled, ref, atol=1e-5)


@pytest.mark.skipif(autocast_dtype(torch.device("cpu")) is None, reason="no native bf16 on this CPU")
def test_bf16_close_to_fp32(tiny):
    image = np.random.default_rng(2).random((1, 64, 80)).astype(np.float32)
    ref = whole_image_probs(tiny, image)
    _, probs = drain(iter_probabilities(tiny, image, PredictConfig(amp=None)))
    assert np.abs(probs - ref).max() < 0.05


def test_inference_net_leaves_training_weights_alone(tiny):
    tiny.net.train()
    before = {k: v.clone() for k, v in tiny.net.state_dict().items()}
    runner = inference.make_runner(tiny, FP32)
    assert tiny.net.training  # the model's own net keeps its mode
    for k, v in tiny.net.state_dict().items():
        assert torch.equal(v, before[k])
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in runner.module.modules())
    assert inference.make_runner(tiny, FP32) is runner  # cached
    with torch.no_grad():
        next(tiny.net.parameters()).add_(0.1)  # in-place update, as an optimiser step does
    assert inference.make_runner(tiny, FP32) is not runner


def test_runner_matches_module(tiny):
    runner = inference.make_runner(tiny, FP32)
    x = np.random.default_rng(3).random((2, 1, 32, 48)).astype(np.float32)
    with torch.inference_mode():
        ref = tiny.net.eval()(torch.from_numpy(x))
    got = runner(x).float()
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_valid_padding_net():
    torch.manual_seed(0)
    model = Model(UNet(UNetConfig(base=2, depth=2, padding="valid", norm="none")))
    image = np.random.default_rng(4).random((1, 37, 41)).astype(np.float32)
    config = PredictConfig(tile=20, batch_size=1, amp=False)
    steps, probs = drain(iter_probabilities(model, image, config))
    assert probs.shape == (3, 37, 41) and len(steps) == steps[-1].total > 1
    labels = segment(image[0], model=model, amp=False)
    assert labels.shape == (37, 41)


# --------------------------------------------------------------------------- segmentation


@pytest.mark.parametrize(
    ("shape", "axes", "channel", "expected"),
    [
        ((40, 50), None, None, (40, 50)),
        ((40, 50), "XY", None, (40, 50)),
        ((2, 40, 50), "CYX", 1, (40, 50)),
        ((40, 50, 3), "YXC", 0, (40, 50)),
        ((40, 50, 3), "YXS", 2, (40, 50)),
        ((3, 40, 50), None, None, (3, 40, 50)),
        ((2, 40, 50), "TYX", None, (2, 40, 50)),
        ((2, 3, 32, 36), "TZYX", None, (2, 3, 32, 36)),
        ((3, 2, 32, 36), "ZCYX", 1, (3, 32, 36)),
    ],
)
def test_output_shapes(tiny, shape, axes, channel, expected):
    image = np.random.default_rng(5).integers(0, 255, shape).astype(np.uint8)
    labels = segment(image, model=tiny, axes=axes, channel=channel, amp=False)
    assert labels.shape == expected
    assert labels.dtype.kind in "ui"


def test_axes_order_is_kept(blob_model):
    image = discs((40, 60), [(10, 12), (28, 45)], 6)
    yx = segment(image, model=blob_model)
    xy = segment(image.T, model=blob_model, axes="XY")
    assert yx.max() == 2
    np.testing.assert_array_equal(xy.T > 0, yx > 0)


def test_zstack_gets_one_id_per_object_through_z(blob_model):
    """Nucleus B is alone in the upper slices: per-slice labelling would renumber it."""
    a, b = (12, 12), (40, 40)
    stack = np.stack([discs((56, 56), [a, b] if z < 3 else [b], 7) for z in range(6)])
    labels = segment(stack, model=blob_model, axes="ZYX")
    assert labels.shape == stack.shape
    ids_b = {int(v) for v in np.unique(labels[:, b[0], b[1]])}
    ids_a = {int(v) for v in np.unique(labels[:3, a[0], a[1]])}
    assert len(ids_b) == 1 and len(ids_a) == 1 and ids_a != ids_b and 0 not in ids_a | ids_b
    assert set(np.unique(labels)) == {0} | ids_a | ids_b
    # the same data as a time-lapse: frames are independent, so B is 1 where it is alone
    movie = segment(stack, model=blob_model, axes="TYX")
    assert movie[5, b[0], b[1]] == 1 and movie[0, b[0], b[1]] == 2


def test_progress_counts_tiles_of_all_planes(tiny):
    image = np.random.default_rng(6).integers(0, 255, (2, 3, 40, 40)).astype(np.uint8)
    config = PredictConfig(tile=16, overlap=16, batch_size=1, amp=False)
    steps, labels = drain(iter_segment(image, tiny, axes="TZYX", config=config))
    pred = [s for s in steps if s.stage == "predict"]
    post = [s for s in steps if s.stage == "postprocess"]
    tiles = len(inference.tile_grid(tiny, (40, 40), config))
    assert pred[-1] == Progress(2 * 3 * tiles, 2 * 3 * tiles, "predict")
    assert len(pred) == 2 * 3 * tiles
    assert post == [Progress(1, 2, "postprocess"), Progress(2, 2, "postprocess")]
    assert labels.shape == (2, 3, 40, 40)


def test_auto_batch_shares_passes_between_small_slices(tiny):
    stack = np.random.default_rng(9).integers(0, 255, (6, 32, 32)).astype(np.uint8)
    steps, _ = drain(iter_segment(stack, tiny, axes="ZYX", config=PredictConfig(tile=64, overlap=0)))
    assert [s.done for s in steps if s.stage == "predict"] == [4, 6]  # 64x64 px = four 32x32 slices
    big = np.zeros((100, 100), np.uint8)
    big[::7] = 9
    config = PredictConfig(tile=32, overlap=16)
    steps, _ = drain(iter_segment(big, tiny, config=config))
    assert len([s for s in steps if s.stage == "predict"]) == len(
        inference.tile_grid(tiny, (100, 100), config)
    )


def test_cancel_by_closing(tiny):
    image = np.random.default_rng(7).random((64, 64)).astype(np.float32)
    config = PredictConfig(tile=16, overlap=16, batch_size=1, amp=False, estimate_size=False)
    gen = iter_segment(image, tiny, config=config)
    first = next(gen)
    assert first.stage == "predict" and first.done < first.total
    gen.close()
    with pytest.raises(StopIteration):
        next(gen)


def test_constant_image_gives_zeros(tiny, blob_model):
    for value in (0, 7):
        labels = segment(np.full((30, 40), value, np.uint16), model=tiny)
        assert labels.shape == (30, 40) and not labels.any()
    movie = np.stack([np.full((40, 40), 3, np.uint16), discs((40, 40), [(20, 20)], 6)])
    labels = segment(movie, model=blob_model, axes="TYX")
    assert not labels[0].any() and labels[1].max() == 1


@pytest.mark.parametrize("dtype", [bool, np.float16, np.int64, np.float64])
def test_any_numeric_dtype(blob_model, dtype):
    image = discs((40, 40), [(20, 20)], 6).astype(bool).astype(dtype)
    assert segment(image, model=blob_model).max() == 1


def test_sparse_image_still_segmented(blob_model):
    """Fewer bright pixels than the high percentile: fall back to the min/max range."""
    image = discs((200, 200), [(100, 100)], 3)  # 29 of 40000 pixels
    assert segment(image, model=blob_model, min_size=5).max() == 1


@pytest.mark.parametrize(
    ("image", "kwargs", "error", "match"),
    [
        (np.full((20, 20), np.nan, np.float32), {}, BadImageError, "NaN"),
        (np.zeros((0, 20)), {}, BadImageError, "empty"),
        (np.zeros((20, 20), dtype=object), {}, BadImageError, "non-numeric"),
        (np.zeros((20, 20, 3), np.uint8), {}, AxesError, "looks like RGB"),
        (np.zeros((2, 2, 2, 20, 20), np.uint8), {}, AxesError, "give axes"),
        (np.zeros((3, 20, 20), np.uint8), {"axes": "CYX"}, AxesError, "choose one with channel="),
        (np.zeros((3, 20, 20), np.uint8), {"axes": "CYX", "channel": 3}, AxesError, "does not exist"),
        (np.zeros((20, 20), np.uint8), {"channel": 1}, AxesError, "no channel axis"),
        (np.zeros((20, 20), np.uint8), {"axes": "ZYX"}, AxesError, "3 letters"),
    ],
)
def test_bad_inputs(tiny, image, kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        segment(image, model=tiny, **kwargs)
    assert "\n" not in str(info.value)


def test_multichannel_model_takes_all_channels():
    torch.manual_seed(0)
    model = Model(UNet(UNetConfig(in_channels=2, base=4, depth=1)))
    image = np.random.default_rng(8).random((2, 24, 24)).astype(np.float32)
    assert segment(image, model=model, axes="CYX", amp=False).shape == (24, 24)
    with pytest.raises(BadImageError, match="expects 2 channels"):
        segment(image[:1], model=model, axes="CYX")
    with pytest.raises(AxesError, match="leave channel=None"):
        segment(image, model=model, axes="CYX", channel=0)


def test_postprocess_parameters(blob_model):
    image = discs((40, 60), [(10, 12), (28, 45)], 3)  # two objects of 29 px
    assert segment(image, model=blob_model).max() == 2  # card: min_size 10
    assert segment(image, model=blob_model, min_size=50).max() == 0
    with pytest.raises(ValueError, match="threshold must be between 0 and 1"):
        segment(image, model=blob_model, threshold=1.5)  # silently nothing, before: now refused
    _steps, labels = drain(iter_segment(image, blob_model, params=PostprocessParams(min_size=1000)))
    assert labels.max() == 0
    with pytest.raises(TypeError, match="unexpected keyword"):
        segment(image, model=blob_model, tile_size=5)


def test_segment_lists_its_keywords_and_keeps_config_fields_not_given(tiny, monkeypatch):
    import inspect

    sig = inspect.signature(segment)
    names = (
        "tile",
        "overlap",
        "batch_size",
        "amp",
        "diameter",
        "anisotropy",
        "seed_threshold",
        "min_seed_size",
        "split_depth",
    )
    for name in (*names, "config", "params"):
        assert sig.parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert repr(sig.parameters["tile"].default) == "512"  # help() shows the real default
    seen = []
    real = predict.iter_segment
    monkeypatch.setattr(predict, "iter_segment", lambda *a: seen.append(a) or real(*a))
    image = np.zeros((16, 16), np.uint8)  # constant: nothing for the net to do
    segment(image, tiny, axes="YX", config=PredictConfig(tile=32, amp=False), overlap=8, seed_threshold=0.7)
    segment(image, tiny, axes="YX", config=PredictConfig(tile=32, amp=False), split_depth=1.5)
    params, config = seen[0][4], seen[0][5]
    assert (config.tile, config.overlap, config.amp, config.device) == (32, 8, False, "auto")
    assert params.seed_threshold == 0.7 and params.split_depth == 0.0
    assert seen[1][4].split_depth == 1.5


def test_dask_input_loads_frame_by_frame(blob_model):
    da = pytest.importorskip("dask.array")
    movie = np.stack([discs((40, 40), [(12, 12), (28, 28)], 5)] * 3)
    lazy = da.from_array(movie, chunks=(1, 40, 40))
    np.testing.assert_array_equal(
        segment(lazy, model=blob_model, axes="TYX"), segment(movie, model=blob_model, axes="TYX")
    )


# --------------------------------------------------------------------------- post-processing


def _reference_instances(interior, foreground, params):
    """The straightforward algorithm: one seeded watershed over the whole image."""
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    from napari_unet.engine.postprocess import remove_small

    mask = foreground > params.threshold
    if not mask.any():
        return np.zeros(interior.shape, np.uint16)
    seeds, n = ndi.label((interior > params.seed_threshold) & mask)
    if n == 0:
        seeds, n = ndi.label(mask)
    else:
        seeds = remove_small(seeds, params.min_seed_size).astype(np.int32)
        comps, nc = ndi.label(mask)
        has_seed = np.zeros(nc + 1, bool)
        has_seed[np.unique(comps[seeds > 0])] = True
        has_seed[0] = True
        orphan = ~has_seed[comps]
        if orphan.any():
            extra, _ = ndi.label(orphan)
            seeds = np.where(extra > 0, extra + seeds.max(), seeds).astype(np.int32)
    return remove_small(watershed(-interior, markers=seeds, mask=mask), params.min_size)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_postprocess_equals_whole_image_watershed(ndim, seed):
    from scipy import ndimage as ndi

    from napari_unet.engine.postprocess import instances_from_probabilities

    rng = np.random.default_rng(seed)
    shape = (96, 128) if ndim == 2 else (12, 64, 64)
    centres = rng.uniform(0, 1, (40 if ndim == 2 else 15, ndim)) * np.array(shape)
    grid = np.indices(shape).reshape(ndim, -1).T
    dist = np.min(np.linalg.norm(grid[:, None, :] - centres[None], axis=2), axis=1).reshape(shape)
    blobs = np.clip(1.2 - dist / rng.uniform(5, 8), 0, 1)  # touching discs, peaked at centres
    interior = np.clip(ndi.gaussian_filter(blobs, 1) ** 2 + rng.normal(0, 0.1, shape), 0, 1)
    foreground = np.clip(ndi.gaussian_filter(blobs, 1) * 1.5 + rng.normal(0, 0.1, shape), 0, 1)
    for params in [
        PostprocessParams(),
        PostprocessParams(threshold=0.3, seed_threshold=0.6, min_size=30, min_seed_size=8),
        PostprocessParams(seed_threshold=1.5),  # no seeds at all: components are the objects
        PostprocessParams(threshold=0.2, seed_threshold=0.4, min_size=1, min_seed_size=1),
    ]:
        expected = _reference_instances(interior, foreground, params)
        got = instances_from_probabilities(interior, foreground, params)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
        assert expected.max() > 1


# --------------------------------------------------------------------------- object diameter


def test_zoom_is_trained_over_given_diameter_clipped(tiny):
    assert predict.trained_diameter(tiny) == 20.0
    assert object_scale.zoom_factor(tiny, None) is None
    assert object_scale.zoom_factor(tiny, 40) == pytest.approx(0.5)
    assert object_scale.zoom_factor(tiny, 10) == pytest.approx(2.0)
    assert object_scale.zoom_factor(tiny, 1000) == object_scale.MIN_ZOOM
    assert object_scale.zoom_factor(tiny, 1) == object_scale.MAX_ZOOM
    assert (
        object_scale.zoom_factor(tiny, 20.5) is None and object_scale.zoom_factor(tiny, 19.5) is None
    )  # within 5%
    card = Model(tiny.net, {"object_diameter": 30.0})
    assert object_scale.zoom_factor(card, 60) == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [0, -3, math.nan, math.inf])
def test_bad_diameter_is_refused(bad):
    with pytest.raises(ValueError, match="diameter"):
        PredictConfig(diameter=bad)


@pytest.mark.parametrize(
    ("shape", "axes"), [((50, 70), "YX"), ((3, 50, 70), "ZYX"), ((2, 2, 30, 34), "TZYX")]
)
@pytest.mark.parametrize("diameter", [8.0, 45.0, 500.0])
def test_diameter_keeps_the_label_shape_and_progress(tiny, shape, axes, diameter):
    image = np.random.default_rng(1).integers(0, 255, shape).astype(np.uint8)
    config = PredictConfig(tile=32, overlap=16, amp=False, diameter=diameter)
    steps, labels = drain(iter_segment(image, tiny, axes=axes, config=config))
    assert labels.shape == shape
    pred = [s for s in steps if s.stage == "predict"]
    assert pred[-1].done == pred[-1].total and all(s.total == pred[-1].total for s in pred)
    zoom = object_scale.zoom_factor(tiny, diameter)
    h, w = shape[-2:]
    tiles = len(inference.tile_grid(tiny, (round(h * zoom), round(w * zoom)), config))
    planes = math.prod(shape[:-2])
    assert pred[-1].total == planes * tiles


def test_diameter_none_or_as_trained_changes_nothing(tiny):
    image = np.random.default_rng(2).integers(0, 255, (2, 48, 56)).astype(np.uint8)
    before = segment(image, model=tiny, axes="ZYX", amp=False, threshold=0.3)
    for diameter in [None, 20.0, 20.5]:
        got = segment(image, model=tiny, axes="ZYX", amp=False, threshold=0.3, diameter=diameter)
        np.testing.assert_array_equal(got, before)


def test_diameter_rescales_what_the_net_sees(tiny, monkeypatch):
    seen: list[tuple[int, ...]] = []
    call = inference.Runner.__call__

    def spy(self, batch):
        seen.append(batch.shape[-2:])
        return call(self, batch)

    monkeypatch.setattr(inference.Runner, "__call__", spy)
    image = np.random.default_rng(3).integers(0, 255, (64, 96)).astype(np.uint8)
    sizes = {}
    for diameter in [None, 40.0, 10.0]:
        seen.clear()  # None: the model's own scale (the estimate is tested in test_object_size)
        segment(image, model=tiny, amp=False, tile=512, diameter=diameter, estimate_size=False)
        assert len(seen) == 1  # one tile: its input is the (padded) rescaled image
        sizes[diameter] = seen[0]
    assert sizes[None][0] >= 64 and sizes[None][1] >= 96
    assert sizes[40.0][0] < 64 and sizes[40.0][1] < 96  # shrunk by 0.5 (plus padding)
    assert sizes[10.0][0] >= 128 and sizes[10.0][1] >= 192  # grown by 2


def test_rescaled_probabilities_land_back_in_place(blob_model):
    """The blob model marks bright pixels: zooming in and out keeps objects where they were."""
    image = discs((80, 100), [(25, 30), (55, 70)], 14)
    plain = segment(image, model=blob_model)
    for diameter in [50.0, 8.0]:
        got = segment(image, model=blob_model, diameter=diameter)
        assert got.shape == image.shape and got.max() == 2
        inter = np.logical_and(got > 0, plain > 0).sum()
        union = np.logical_or(got > 0, plain > 0).sum()
        assert inter / union > 0.9, diameter
        assert got[25, 30] != got[55, 70] and 0 not in (got[25, 30], got[55, 70])


# --------------------------------------------------------------------------- accurate mode


def test_accurate_mode_averages_the_mirror_images(tiny):
    """The flipped passes are mirrored back before the mean: equal to doing it by hand, and
    exactly mirror-symmetric (a mirrored input gives the mirrored output)."""
    x = np.random.default_rng(5).random((2, 1, 32, 48)).astype(np.float32)
    plain = inference.Runner(tiny.net, torch.device("cpu"), None)
    tta = inference.Runner(tiny.net, torch.device("cpu"), None, flips=True)
    by_hand = sum(
        torch.flip(plain(np.ascontiguousarray(np.flip(x, d))), d) if d else plain(x) for d in inference.FLIPS
    ) / len(inference.FLIPS)
    got = tta(x)
    torch.testing.assert_close(got, by_hand, rtol=1e-5, atol=1e-5)
    mirrored = tta(np.ascontiguousarray(x[..., ::-1]))
    torch.testing.assert_close(torch.flip(mirrored, (3,)), got, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(plain(x), got, atol=1e-4), "the mean differs from one pass"


def test_accurate_segment_keeps_shapes_and_differs_only_a_little(blob_model):
    image = discs((96, 80), [(30, 30), (60, 50)], 12)
    fast = segment(image, model=blob_model, estimate_size=False)
    accurate = segment(image, model=blob_model, estimate_size=False, accurate=True)
    assert accurate.shape == fast.shape and accurate.max() == fast.max() == 2
    assert np.mean((accurate > 0) == (fast > 0)) > 0.98
