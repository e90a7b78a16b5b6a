"""Training core without Qt: targets, loss weighting, the step generator and its stop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.models.model_file import Model
from napari_unet.models.unet import UNet, UNetConfig
from napari_unet.training.loop import TrainConfig, iter_train, make_batch, weighted_loss
from napari_unet.training.sample import NoAnnotationError, Sample
from napari_unet.training.targets import (
    BACKGROUND,
    BOUNDARY,
    INTERIOR,
    encode_classes,
    inner_boundaries,
    touching_zone,
    weight_map,
)


def two_touching_squares() -> np.ndarray:
    lab = np.zeros((20, 30), np.int32)
    lab[5:15, 5:15] = 1
    lab[5:15, 15:25] = 2
    return lab


def test_encode_classes_separates_touching_objects() -> None:
    lab = two_touching_squares()
    cls = encode_classes(lab)
    assert cls[0, 0] == BACKGROUND
    assert cls[10, 10] == INTERIOR
    # the two columns where the squares meet are boundary, so interiors do not touch
    assert (cls[6:14, 14] == BOUNDARY).all() and (cls[6:14, 15] == BOUNDARY).all()
    from scipy import ndimage as ndi

    assert ndi.label(cls == INTERIOR)[1] == 2


@pytest.mark.parametrize("shape", [(1, 1), (7, 1), (33, 47), (5, 9, 11)])
def test_inner_boundaries_are_skimages(shape) -> None:
    from skimage.segmentation import find_boundaries

    rng = np.random.default_rng(len(shape))
    coarse = rng.integers(0, 4, size=tuple(max(1, n // 3) for n in shape))
    lab = np.kron(coarse, np.ones((3,) * len(shape), int))[tuple(slice(0, n) for n in shape)]
    lab = np.pad(lab, [(0, n - m) for n, m in zip(shape, lab.shape, strict=True)], mode="edge")
    expected = find_boundaries(lab, mode="inner")
    assert np.array_equal(inner_boundaries(lab) & (lab > 0), expected)


def test_elastic_field_upsampling_is_ndimage_zoom() -> None:
    from scipy import ndimage as ndi

    from napari_unet.training.augment import _upsampling_matrix

    field = np.random.default_rng(0).normal(0, 6, size=(4, 4)).astype(np.float32)
    a = _upsampling_matrix(4, 128)
    expected = ndi.zoom(field, 32, order=3, mode="nearest")[:128, :128]
    assert np.allclose(a @ field @ a.T, expected, atol=1e-4)


def test_touching_zone_and_weights() -> None:
    lab = two_touching_squares()
    zone = touching_zone(lab, radius=1)
    assert zone[10, 14] and zone[10, 15]
    assert not zone[10, 8] and not zone[0, 0]
    w = weight_map(lab, boundary_weight=2.0, touch_weight=6.0, touch_radius=1)
    assert w[0, 0] == 1.0 and w[10, 14] == 6.0 and w[5, 8] == 2.0


def synthetic_samples(n: int = 2, size: int = 48, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        lab = np.zeros((size, size), np.int32)
        yy, xx = np.mgrid[:size, :size]
        for i in range(1, 6):
            cy, cx = rng.integers(6, size - 6, 2)
            lab[(yy - cy) ** 2 + (xx - cx) ** 2 < 16] = i
        img = (lab > 0).astype(np.float32) + rng.normal(0, 0.05, lab.shape).astype(np.float32)
        out.append(Sample(img, lab))
    return out


def tiny_cfg(**kw) -> TrainConfig:
    base = {
        "steps": 40,
        "batch_size": 2,
        "crop": 32,
        "lr": 5e-3,
        "warmup": 1,
        "schedule": "constant",
        "amp": False,
    }
    base.update(kw)
    return TrainConfig(**base)


def test_a_few_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    model = Model(UNet(UNetConfig(base=4, depth=2)))
    losses = [s.loss for s in iter_train(model, synthetic_samples(), tiny_cfg(), device="cpu")]
    assert len(losses) == 40
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:8])
    assert not model.net.training, "the net is left in eval mode"


def _drift(anchor_decay: float) -> float:
    """How far 20 steps move the weights from where they started (L2 over all parameters)."""
    torch.manual_seed(0)
    model = Model(UNet(UNetConfig(base=4, depth=2)))
    start = [p.detach().clone() for p in model.net.parameters()]
    cfg = tiny_cfg(steps=20, anchor_decay=anchor_decay)
    for _ in iter_train(model, synthetic_samples(), cfg, device="cpu"):
        pass
    gaps = [((p.detach() - s) ** 2).sum() for p, s in zip(model.net.parameters(), start, strict=True)]
    return float(sum(gaps) ** 0.5)


def test_anchor_decay_keeps_the_weights_near_their_start() -> None:
    free, held = _drift(0.0), _drift(100.0)
    assert free > 0.05, "the weights move without the anchor"
    assert held < 0.5 * free, (free, held)


def test_stop_predicate_is_honoured() -> None:
    model = Model(UNet(UNetConfig(base=4, depth=1)))
    seen = []
    gen = iter_train(
        model, synthetic_samples(1), tiny_cfg(steps=100), stop=lambda: len(seen) >= 3, device="cpu"
    )
    for st in gen:
        seen.append(st.step)
    assert seen == [1, 2, 3]


def test_ignored_pixels_do_not_change_the_gradient() -> None:
    """Pixels of weight 0 ("not annotated") must not influence the update at all."""
    torch.manual_seed(0)
    net = UNet(UNetConfig(base=4, depth=1, norm="none"))
    x = torch.randn(1, 1, 16, 16)
    y = torch.randint(0, 3, (1, 16, 16))
    w = torch.zeros(1, 16, 16)
    w[:, :8] = 1.0
    y2 = y.clone()
    y2[:, 8:] = (y2[:, 8:] + 1) % 3  # change the labels only where ignored

    def grads(target):
        net.zero_grad()
        weighted_loss(net(x), target, w).backward()
        return [p.grad.clone() for p in net.parameters()]

    for a, b in zip(grads(y), grads(y2), strict=True):
        torch.testing.assert_close(a, b)
    # positive control: changing the labels where they count does change the gradient, so the
    # equality above is about the ignored pixels, not a loss that ignores the labels
    y3 = y.clone()
    y3[:, :8] = (y3[:, :8] + 1) % 3  # change the labels only where annotated
    assert any(not torch.allclose(a, b) for a, b in zip(grads(y), grads(y3), strict=True))


def test_mask_zeroes_weights_in_batches() -> None:
    s = synthetic_samples(1)[0]
    mask = np.zeros(s.labels.shape, bool)
    mask[:, :20] = True
    sample = Sample(s.image, s.labels, mask)
    x, y, w = make_batch([sample], tiny_cfg(), np.random.default_rng(1))
    assert x.shape == (2, 1, 32, 32) and y.dtype == torch.int64
    assert (w == 0).any() and (w > 0).any()


def test_no_annotation_is_refused() -> None:
    s = synthetic_samples(1)[0]
    empty = Sample(s.image, s.labels, np.zeros(s.labels.shape, bool))
    model = Model(UNet(UNetConfig(base=4, depth=1)))
    with pytest.raises(NoAnnotationError):
        next(iter_train(model, [empty], tiny_cfg(), device="cpu"))
    with pytest.raises(NoAnnotationError):
        next(iter_train(model, [], tiny_cfg(), device="cpu"))


def test_sample_shape_and_dtype_checks() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        Sample(np.zeros((10, 10), np.float32), np.zeros((10, 11), np.int32))
    with pytest.raises(ValueError, match="integers"):
        Sample(np.zeros((10, 10), np.float32), np.zeros((10, 10), np.float32))
