"""Training samples from image + corrected labels: what counts as annotation, and refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.common.axes import AxesError
from napari_unet.engine.normalize import normalize
from napari_unet.models.model_file import Model
from napari_unet.models.unet import UNet, UNetConfig
from napari_unet.training.annotations import AnnotationError, samples_from_arrays
from napari_unet.training.loop import TrainConfig, make_batch, weighted_loss
from napari_unet.training.sample import NoAnnotationError

RNG = np.random.default_rng(0)


def tiny(in_channels: int = 1) -> Model:
    torch.manual_seed(0)
    card = {"name": "tiny", "normalization": {"low": 1.0, "high": 99.8}}
    return Model(UNet(UNetConfig(in_channels=in_channels, base=4, depth=2)), card)


def blobs(shape=(48, 64), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for i in range(1, 5):
        cy, cx = rng.integers(8, shape[0] - 8), rng.integers(8, shape[1] - 8)
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 < 25] = i
    img = (100 + 400 * (lab > 0) + rng.normal(0, 10, shape)).astype(np.uint16)
    return img, lab


def test_2d_sample_is_normalised_like_prediction() -> None:
    img, lab = blobs()
    (s,) = samples_from_arrays(img, lab, tiny())
    assert s.image.shape == (1, *img.shape) and s.image.dtype == np.float32
    np.testing.assert_allclose(s.image[0], normalize(img, 1.0, 99.8), rtol=1e-5, atol=1e-5)
    assert s.mask is None and s.annotated_pixels == img.size
    np.testing.assert_array_equal(s.labels, lab)


def test_zyx_stack_uses_stack_wide_percentiles_and_selected_slices() -> None:
    planes = [blobs(seed=i) for i in range(4)]
    img = np.stack([p[0] for p in planes])
    img[2] = img[2] // 4  # a dim slice: normalised with the stack's bounds, not its own
    lab = np.stack([p[1] for p in planes])
    samples = samples_from_arrays(img, lab, tiny(), axes="ZYX", slices=[2, 0])
    assert [s.plane for s in samples] == ["z=2", "z=0"]
    whole = normalize(img, 1.0, 99.8)
    np.testing.assert_allclose(samples[0].image[0], whole[2], rtol=1e-5, atol=1e-5)


def test_stack_without_selection_takes_labelled_slices() -> None:
    planes = [blobs(seed=i) for i in range(3)]
    img = np.stack([p[0] for p in planes])
    lab = np.stack([p[1] for p in planes])
    lab[1] = 0  # never touched
    samples = samples_from_arrays(img, lab, tiny(), axes="ZYX")
    assert [s.plane for s in samples] == ["z=0", "z=2"]


def test_tyx_frames_are_normalised_per_frame() -> None:
    planes = [blobs(seed=i) for i in range(2)]
    img = np.stack([planes[0][0], planes[1][0] * 3])
    lab = np.stack([p[1] for p in planes])
    samples = samples_from_arrays(img, lab, tiny(), axes="TYX", slices=[1])
    np.testing.assert_allclose(samples[0].image[0], normalize(img[1], 1.0, 99.8), rtol=1e-5, atol=1e-5)
    assert samples[0].plane == "t=1"


def test_multichannel() -> None:
    img, lab = blobs()
    rgb = np.stack([img // 2, img, img * 0 + 7], axis=-1)
    (one,) = samples_from_arrays(rgb, lab, tiny(), axes="YXC", channel=1)
    np.testing.assert_allclose(one.image[0], normalize(img, 1.0, 99.8), rtol=1e-5, atol=1e-5)
    (three,) = samples_from_arrays(rgb, lab, tiny(in_channels=3), axes="YXC")
    assert three.image.shape == (3, *img.shape)
    assert (three.image[2] == 0).all()  # a constant channel becomes 0, as in prediction
    with pytest.raises(AxesError, match="choose one"):
        samples_from_arrays(rgb, lab, tiny(), axes="YXC")


def test_ignore_label_and_reviewed_mask() -> None:
    img, lab = blobs()
    lab = lab.copy()
    lab[:, 40:] = 9999
    (s,) = samples_from_arrays(img, lab, tiny(), ignore_label=9999)
    assert s.mask is not None and not s.mask[:, 40:].any() and s.mask[:, :40].all()
    assert (s.labels[:, 40:] == 0).all()
    reviewed = np.zeros(lab.shape, bool)
    reviewed[:24] = True
    (r,) = samples_from_arrays(img, lab, tiny(), ignore_label=9999, reviewed=reviewed)
    assert r.annotated_pixels == 24 * 40


def test_ignored_pixels_have_no_effect_on_training() -> None:
    """Whatever lies under ignored pixels, the batch, the loss and the gradient are the same."""
    img, lab = blobs()
    a = lab.copy()
    a[:, 40:] = -1
    c = lab.copy()
    c[:, 40:] = RNG.integers(0, 7, c[:, 40:].shape)  # garbage where not reviewed
    reviewed = np.ones(lab.shape, bool)
    reviewed[:, 40:] = False
    sa = samples_from_arrays(img, a, tiny(), ignore_label=-1)
    sc = samples_from_arrays(img, c, tiny(), reviewed=reviewed)
    cfg = TrainConfig(batch_size=2, crop=32, amp=False)
    net = tiny().net.train()
    grads = []
    for samples in (sa, sc):
        torch.manual_seed(0)
        x, y, w = make_batch(samples, cfg, np.random.default_rng(3))
        net.zero_grad()
        weighted_loss(net(x), y, w).backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for ga, gc in zip(*grads, strict=True):
        torch.testing.assert_close(ga, gc)
    # positive control: other labels where they count (objects and background swapped in the
    # reviewed part) do change the gradient, so the equality above is about the ignored pixels
    d = c.copy()
    d[:, :40] = np.where(lab[:, :40] > 0, 0, 1)
    sd = samples_from_arrays(img, d, tiny(), reviewed=reviewed)
    torch.manual_seed(0)
    x, y, w = make_batch(sd, cfg, np.random.default_rng(3))
    net.zero_grad()
    weighted_loss(net(x), y, w).backward()
    assert any(not torch.allclose(gc, p.grad) for gc, p in zip(grads[1], net.parameters(), strict=True))


def test_all_background_needs_review() -> None:
    img, lab = blobs()
    empty = np.zeros_like(lab)
    with pytest.raises(NoAnnotationError, match="reviewed"):
        samples_from_arrays(img, empty, tiny())
    (s,) = samples_from_arrays(img, empty, tiny(), reviewed=True)  # "there is nothing here"
    assert s.annotated_pixels == img.size and not s.labels.any()
    stack = np.stack([img, img])
    (z1,) = samples_from_arrays(stack, np.zeros((2, *lab.shape), np.int32), tiny(), axes="ZYX", slices=[1])
    assert z1.plane == "z=1"


@pytest.mark.parametrize(
    ("labels", "kwargs", "error", "match"),
    [
        (np.zeros((48, 63), np.int32), {}, AnnotationError, "shape"),
        (np.zeros((48, 64), np.float32), {}, AnnotationError, "floating point"),
        (np.ones((48, 64), np.int32), {}, AnnotationError, "one object"),
        (np.full((48, 64), -1, np.int32), {}, AnnotationError, "negative"),
        (np.full((48, 64), 7, np.int32), {"ignore_label": 7}, NoAnnotationError, "ignore label"),
        (np.zeros((48, 64), np.int32), {"reviewed": np.zeros((48, 64), bool)}, NoAnnotationError, "annot"),
        (np.zeros((48, 64), np.int32), {"reviewed": np.ones((4, 4), bool)}, AnnotationError, "reviewed"),
        (np.zeros((48, 64), np.int32), {"slices": [0]}, AnnotationError, "single 2D plane"),
    ],
)
def test_bad_annotation_is_one_line(labels, kwargs, error, match) -> None:
    img, _ = blobs()
    with pytest.raises(error, match=match) as info:
        samples_from_arrays(img, labels, tiny(), **kwargs)
    assert "\n" not in str(info.value)


def test_stack_selection_errors() -> None:
    img = np.stack([blobs(seed=i)[0] for i in range(3)])
    lab = np.zeros(img.shape, np.int32)
    with pytest.raises(NoAnnotationError, match="no slice"):
        samples_from_arrays(img, lab, tiny(), axes="ZYX")
    with pytest.raises(AnnotationError, match="no slices selected"):
        samples_from_arrays(img, lab, tiny(), axes="ZYX", slices=[])
    with pytest.raises(AnnotationError, match="outside"):
        samples_from_arrays(img, lab, tiny(), axes="ZYX", slices=[3])
    tz = np.stack([img, img])
    with pytest.raises(AnnotationError, match=r"\(t, z\) pairs"):
        samples_from_arrays(tz, np.zeros(tz.shape, np.int32), tiny(), axes="TZYX", slices=[1])
    (s,) = samples_from_arrays(tz, np.zeros(tz.shape, np.int32), tiny(), axes="TZYX", slices=[(1, 2)])
    assert s.plane == "t=1, z=2"


def test_bool_labels_are_objects_by_connectivity() -> None:
    img, lab = blobs()
    (s,) = samples_from_arrays(img, lab > 0, tiny())
    assert s.labels.max() >= 1 and s.labels.dtype.kind == "i"
