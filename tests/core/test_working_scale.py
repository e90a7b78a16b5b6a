"""The working scale of a fine-tune: objects resized to the parent's size, the scale in the card,
prediction applying it by itself; BatchNorm statistics re-estimated on the new images; the
default recipe against the former one on large, low-contrast objects."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from napari_unet.common.generators import drain
from napari_unet.engine import object_scale
from napari_unet.engine.predict import segment
from napari_unet.models.model_file import Model
from napari_unet.models.unet import UNet, UNetConfig
from napari_unet.samples.synthetic import nuclei_2d
from napari_unet.training.annotations import samples_from_arrays
from napari_unet.training.card import median_object_diameter
from napari_unet.training.finetune import FINETUNE_DEFAULTS, iter_finetune
from napari_unet.training.loop import TrainConfig
from napari_unet.training.working_scale import choose_working_zoom, reestimate_batchnorm, rescale_samples


def parent(norm: str = "batch", diameter: float = 12.0) -> Model:
    torch.manual_seed(0)
    card = {"name": "p", "object_diameter": diameter, "postprocess": {"min_size": 3}}
    return Model(UNet(UNetConfig(base=4, depth=2, norm=norm)), card)


def discs(size: int = 160, radius: int = 12, n: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Large, low-contrast discs on a mid-grey background (a phase-contrast-like world)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((size, size), np.int32)
    yy, xx = np.mgrid[:size, :size]
    placed = 0
    for _ in range(200):
        cy, cx = rng.integers(radius + 2, size - radius - 2, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
        if (lab[disc] > 0).any():
            continue
        placed += 1
        lab[disc] = placed
        if placed == n:
            break
    img = (1000 + 60 * (lab > 0) + rng.normal(0, 15, lab.shape)).astype(np.uint16)
    return img, lab


def cfg(**kw) -> TrainConfig:
    base = {
        "steps": 4,
        "time_budget": None,
        "batch_size": 2,
        "crop": 32,
        "lr": 1e-3,
        "warmup": 1,
        "amp": False,
    }
    base.update(kw)
    return TrainConfig(freeze_batchnorm=True, **base)


def test_the_zoom_gives_the_objects_the_parents_size() -> None:
    img, lab = discs(radius=12)
    samples = samples_from_arrays(img, lab, parent(), axes="YX")
    diameter = median_object_diameter(samples)
    assert diameter == pytest.approx(24.0, abs=1.0)
    assert choose_working_zoom(parent(diameter=12.0), samples) == pytest.approx(12.0 / diameter)
    assert choose_working_zoom(parent(diameter=diameter * 1.05), samples) == 1.0  # close enough
    assert choose_working_zoom(parent(diameter=1000.0), samples) == object_scale.MAX_ZOOM  # clipped
    few = samples_from_arrays(img, np.where(lab <= 2, lab, 0), parent(), axes="YX")
    assert choose_working_zoom(parent(), few) == 1.0  # too few objects to know their size


def test_rescaled_samples_keep_objects_and_the_annotated_part() -> None:
    img, lab = discs(radius=12)
    mask = np.zeros(lab.shape, bool)
    mask[:, :80] = True
    samples = samples_from_arrays(img, lab, parent(), axes="YX", reviewed=mask)
    (half,) = rescale_samples(samples, 0.5)
    assert half.image.shape == (1, 80, 80) and half.labels.shape == (80, 80) and half.mask.shape == (80, 80)
    assert half.image.dtype == np.float32 and half.labels.dtype == samples[0].labels.dtype
    assert set(np.unique(half.labels)) <= set(np.unique(samples[0].labels))  # no blended ids
    assert half.mask[:, :38].all() and not half.mask[:, 42:].any()
    whole = samples_from_arrays(img, lab, parent(), axes="YX")
    halved = rescale_samples(whole, 0.5)
    assert median_object_diameter(halved) == pytest.approx(median_object_diameter(whole) / 2, rel=0.1)
    assert rescale_samples(samples, 1.0)[0] is samples[0]


def test_batchnorm_statistics_are_reestimated_on_the_new_images() -> None:
    model = parent()
    model.net.eval()  # as a loaded model is
    img, lab = discs()
    samples = samples_from_arrays(img, lab, model, axes="YX")
    first = next(m for m in model.net.modules() if isinstance(m, nn.BatchNorm2d))
    weights = {k: v.clone() for k, v in model.net.state_dict().items() if "running" not in k}
    assert torch.equal(first.running_mean, torch.zeros_like(first.running_mean))  # never trained
    assert reestimate_batchnorm(model.net, samples, cfg())
    assert not torch.equal(first.running_mean, torch.zeros_like(first.running_mean))
    assert first.momentum == 0.1 and not model.net.training
    after = model.net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in weights.items() if "num_batches" not in k), (
        "no weight moved"
    )
    assert not reestimate_batchnorm(parent(norm="none").net, samples, cfg())


def test_a_fine_tune_at_the_working_scale_records_it_and_prediction_applies_it() -> None:
    """The card says the zoom; segment() with no diameter zooms new images by it (and the parent
    model, whose card has none, is not zoomed)."""
    img, lab = discs(radius=12)
    samples = samples_from_arrays(img, lab, parent(), axes="YX")
    gen = iter_finetune(parent(), samples, cfg(working_scale=True, adapt_batchnorm=True), holdout=0.0)
    try:
        while True:
            next(gen)
    except StopIteration as done:
        tuned = done.value
    d = median_object_diameter(samples)
    assert tuned.card["working_zoom"] == pytest.approx(12.0 / d, abs=1e-3)
    assert tuned.card["object_diameter"] == pytest.approx(d, abs=0.1)
    # the object-size estimate's reference: equal discs read the same in both statistics
    assert tuned.card["typical_diameter"] == pytest.approx(d, rel=0.05)
    assert tuned.card["finetune"]["batchnorm"] == "re-estimated"
    assert object_scale.zoom_factor(tuned, None) == pytest.approx(12.0 / d, abs=1e-3)
    assert object_scale.trained_diameter(tuned) == pytest.approx(12.0, abs=0.1)
    assert object_scale.zoom_factor(tuned, 2 * d) == pytest.approx(6.0 / d, abs=1e-3)  # diameter= overrides
    assert object_scale.zoom_factor(parent(), None) is None


def test_without_the_working_scale_the_card_keeps_the_native_size() -> None:
    img, lab = discs(radius=12)
    samples = samples_from_arrays(img, lab, parent(), axes="YX")
    gen = iter_finetune(parent(), samples, replace(cfg(), steps=2), holdout=0.0)
    try:
        while True:
            next(gen)
    except StopIteration as done:
        tuned = done.value
    assert tuned.card["working_zoom"] == 1.0
    assert object_scale.zoom_factor(tuned, None) is None
    assert object_scale.trained_diameter(tuned) == pytest.approx(median_object_diameter(samples), abs=0.1)


def test_a_bad_working_zoom_in_a_card_means_none() -> None:
    model = parent()
    for bad in ("x", float("nan"), -2.0, 0.0, None):
        model.card["working_zoom"] = bad
        assert object_scale.working_zoom(model) == 1.0


def test_the_fine_tune_preview_sees_the_working_scale() -> None:
    """Fine-tune's live preview predicts the window as prediction will: zoomed by the card's
    working scale, labels back at the window's size."""
    from napari_unet._widgets._finetune_plan import PlanePreview, PreviewTarget

    img, _ = discs(size=96)
    model = parent()
    model.net.eval()
    seen = []
    real_forward = model.net.forward

    def spy(x):
        seen.append(tuple(x.shape[-2:]))
        return real_forward(x)

    model.net.forward = spy
    model.card["working_zoom"] = 0.5
    result = PlanePreview(img, "YX", None, PreviewTarget((), (0, 96, 0, 80)))(model)
    assert result.labels.shape == (96, 80)
    assert seen and all(h < 96 for h, _ in seen), "the net saw the window at half size"


# --------------------------------------------------------------------------- the recipe
# The failure found on real phase-contrast cells, reproduced small: a parent whose BatchNorm
# statistics come from small bright nuclei on black, fine-tuned with the former recipe (native
# scale, BatchNorm frozen with those statistics, lr 1e-3), learns next to nothing in a short
# budget; the default recipe (working scale, statistics re-estimated and learning, lr 3e-3) learns
# the objects. Tiny nets, fixed seeds, one thread: deterministic.

FORMER = replace(
    FINETUNE_DEFAULTS,
    lr=1e-3,
    freeze_batchnorm=True,
    working_scale=False,
    adapt_batchnorm=False,
    calibrate_postprocess=False,
)


@pytest.fixture(scope="module")
def nuclei_parent() -> Model:
    """A tiny net whose BatchNorm statistics describe small bright nuclei on a dark background."""
    torch.manual_seed(0)
    card = {"name": "p", "object_diameter": 11.0, "postprocess": {"min_size": 3}}
    model = Model(UNet(UNetConfig(base=8, depth=2)), card)
    syn = nuclei_2d(shape=(256, 256), n_nuclei=40, radius=(4.0, 7.0))
    samples = samples_from_arrays(syn.image, syn.labels, model, axes="YX")
    reestimate_batchnorm(model.net, samples, replace(FINETUNE_DEFAULTS, crop=64, batch_size=4))
    return model


def foreground_iou(cfg, parent: Model) -> tuple[float, Model]:
    img, lab = discs(size=192, radius=20, n=10, seed=1)
    test_img, test_lab = discs(size=192, radius=20, n=10, seed=2)
    samples = samples_from_arrays(img, lab, parent, axes="YX")
    run = replace(cfg, steps=60, time_budget=None, crop=64, batch_size=4, amp=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tuned = drain(iter_finetune(parent, samples, run, device="cpu"))
    finally:
        torch.set_num_threads(threads)
    # at the model's own scale: what it learnt, not what the object-size estimate makes of it
    pred = segment(test_img, model=tuned, axes="YX", device="cpu", estimate_size=False) > 0
    truth = test_lab > 0
    return float((pred & truth).sum() / (pred | truth).sum()), tuned


def test_the_default_recipe_learns_large_low_contrast_objects(nuclei_parent) -> None:
    iou, tuned = foreground_iou(FINETUNE_DEFAULTS, nuclei_parent)
    assert iou >= 0.6, f"default recipe: foreground IoU {iou:.2f}"
    assert tuned.card["working_zoom"] == pytest.approx(11.0 / 40.0, rel=0.1)
    assert tuned.card["finetune"]["batchnorm"] == "re-estimated"


def test_the_former_recipe_did_not(nuclei_parent) -> None:
    iou, _ = foreground_iou(FORMER, nuclei_parent)
    assert iou < 0.35, f"the former recipe now learns these objects (IoU {iou:.2f}): re-check the test"


def test_auto_start_uses_random_weights_only_when_the_parent_finds_nothing() -> None:
    from napari_unet.training.finetune import start_from_scratch
    from napari_unet.training.holdout import HeldOutScore

    auto = replace(FINETUNE_DEFAULTS, start="auto")
    from napari_unet.training.finetune import MIN_SCRATCH_STEPS, planned_steps

    assert start_from_scratch(auto, HeldOutScore(1.0, 0.0, 16))
    assert not start_from_scratch(auto, HeldOutScore(1.0, 0.0, 16), steps=MIN_SCRATCH_STEPS - 1)  # short run
    budget = replace(auto, steps=None, time_budget=120.0)
    assert planned_steps(budget, 0.1) == pytest.approx(400.0)  # a step ~ 3 forward passes
    assert planned_steps(replace(budget, steps=50), 0.1) == 50
    assert planned_steps(budget, None) == 0.0  # pace unknown: keep the parent
    assert not start_from_scratch(auto, HeldOutScore(1.0, 0.36, 51))  # EM: the parent helps
    assert not start_from_scratch(auto, HeldOutScore(1.0, 0.0, 3))  # too few objects to judge
    assert not start_from_scratch(auto, None)
    assert start_from_scratch(replace(auto, start="scratch"), HeldOutScore(1.0, 0.9, 50))
    assert not start_from_scratch(replace(auto, start="parent"), HeldOutScore(1.0, 0.0, 50))
    with pytest.raises(ValueError, match="start must be"):
        start_from_scratch(replace(auto, start="nuclei"), None)


def test_a_scratch_start_trains_random_weights_and_says_so(nuclei_parent) -> None:
    img, lab = discs(size=192, radius=20, n=10, seed=1)
    samples = samples_from_arrays(img, lab, nuclei_parent, axes="YX")
    run = replace(
        FINETUNE_DEFAULTS,
        start="scratch",
        seed=1,
        steps=2,
        time_budget=None,
        crop=64,
        batch_size=2,
        amp=False,
    )
    tuned = drain(iter_finetune(nuclei_parent, samples, run, device="cpu", holdout=0.0))
    assert tuned.card["finetune"]["start"] == "random weights (asked)"
    assert tuned.card["finetune"]["anchor_decay"] == 0.0, "random weights are no anchor"
    first = next(iter(nuclei_parent.net.state_dict()))
    new, old = tuned.net.state_dict()[first], nuclei_parent.net.state_dict()[first]
    assert (new - old).norm() > 0.5 * old.norm(), "two small steps from the parent stay near it"
