"""Fine-tuning: a copy learns, the caller's model stays, Stop and the best weights, the card."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

import napari_unet
from napari_unet.engine.predict import segment
from napari_unet.models.model_file import Model
from napari_unet.models.unet import UNet, UNetConfig
from napari_unet.training import finetune as finetuning
from napari_unet.training.annotations import samples_from_arrays
from napari_unet.training.card import median_object_diameter
from napari_unet.training.finetune import FinetuneStep, finetune, iter_finetune
from napari_unet.training.holdout import HeldOutScore, split_holdout
from napari_unet.training.loop import TrainConfig
from napari_unet.training.sample import NoAnnotationError, Sample


def tiny() -> Model:
    torch.manual_seed(0)
    card = {
        "name": "tiny",
        "normalization": {"low": 1.0, "high": 99.8},
        "postprocess": {"min_size": 3},
        "metrics": {"val_f1_iou50": 0.5},
    }
    return Model(UNet(UNetConfig(base=4, depth=2)), card, source="tiny.pt")


def blobs(size: int = 96, seed: int = 0, n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lab = np.zeros((size, size), np.int32)
    yy, xx = np.mgrid[:size, :size]
    for i in range(1, n + 1):
        cy, cx = rng.integers(8, size - 8, 2)
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 < 30] = i
    img = (100 + 400 * (lab > 0) + rng.normal(0, 10, lab.shape)).astype(np.uint16)
    return img, lab


def cfg(**kw) -> TrainConfig:
    base = {
        "steps": 20,
        "time_budget": None,
        "batch_size": 2,
        "crop": 32,
        "lr": 5e-3,
        "warmup": 1,
        "amp": False,
    }
    base.update(kw)
    return TrainConfig(**base)


def drain(gen) -> tuple[list[FinetuneStep], Model]:
    steps = []
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as done:
            return steps, done.value


def state(model: Model) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.net.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def samples(n: int = 2, size: int = 128) -> list[Sample]:
    out = []
    for i in range(n):
        img, lab = blobs(size, seed=i)
        out += samples_from_arrays(img, lab, tiny(), source=f"img{i}")
    return out


def test_a_few_steps_lower_the_loss_and_leave_the_callers_model_alone() -> None:
    model = tiny()
    before, card = state(model), dict(model.card)
    steps, tuned = drain(iter_finetune(model, samples(), cfg(steps=40), device="cpu", holdout=0))
    losses = [s.loss for s in steps]
    assert len(losses) == 40
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:8])
    assert same(state(model), before) and model.card == card
    assert tuned is not model and tuned.net is not model.net
    assert not same(state(tuned), before)
    assert not tuned.net.training


def test_a_trained_parents_batchnorm_statistics_are_kept() -> None:
    """Fine-tuning trains weights under the parent's BatchNorm statistics (see FINETUNE_DEFAULTS)."""
    parent = tiny()
    parent.net.train()
    with torch.no_grad():
        parent.net(torch.rand(2, 1, 32, 32) * 3)  # the parent has seen data: statistics exist
    parent.net.eval()
    stats = {k: v.clone() for k, v in parent.net.state_dict().items() if "running" in k}
    _, tuned = drain(
        iter_finetune(
            parent, samples(), replace(cfg(steps=5), freeze_batchnorm=True), device="cpu", holdout=0
        )
    )
    for k, v in stats.items():
        torch.testing.assert_close(tuned.net.state_dict()[k], v)
    assert not same(state(tuned), state(parent))  # the convolutions did learn
    fresh = tiny()  # never saw data: its BatchNorm must learn statistics, not keep the defaults
    _, tuned = drain(
        iter_finetune(fresh, samples(), replace(cfg(steps=5), freeze_batchnorm=True), device="cpu", holdout=0)
    )
    assert not torch.equal(
        tuned.net.state_dict()["down.0.1.running_mean"], fresh.net.state_dict()["down.0.1.running_mean"]
    )


def test_stop_at_once_returns_the_parents_weights() -> None:
    model = tiny()
    steps, tuned = drain(iter_finetune(model, samples(), cfg(), stop=lambda: True, device="cpu"))
    assert steps == [] and tuned.card["finetune"]["steps"] == 0
    assert tuned.card["finetune"]["stopped_early"]
    assert same(state(tuned), state(model))


def test_stop_predicate_is_checked_before_each_step() -> None:
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    steps, tuned = drain(iter_finetune(tiny(), samples(), cfg(steps=50), stop=stop, device="cpu", holdout=0))
    assert [s.step for s in steps] == [1, 2, 3]
    assert tuned.card["finetune"]["stopped_early"]


def test_best_weights_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """The weights returned are those of the lowest held-out loss, not the last ones."""
    losses = iter([1.0, 0.8, 0.3, 0.6, 0.9, 0.95, 0.97, 0.99, 1.1, 1.2, 1.3, 1.4])
    snapshots: list[dict] = []

    def fake_eval(model, held, config, device) -> HeldOutScore:
        snapshots.append(state(model))
        return HeldOutScore(next(losses), 0.5, 3)

    monkeypatch.setattr(finetuning, "evaluate_heldout", fake_eval)
    steps, tuned = drain(iter_finetune(tiny(), samples(), cfg(steps=20), device="cpu"))
    scored = [s for s in steps if s.heldout is not None]
    assert [s.step for s in scored][:3] == [2, 4, 6]
    assert steps[-1].best_step == 4
    assert same(state(tuned), snapshots[2])  # before, step 2, step 4 (the best)
    assert tuned.card["finetune"]["best_step"] == 4
    assert tuned.card["metrics"]["heldout_loss_before"] == 1.0
    assert tuned.card["metrics"]["heldout_loss_after"] == 0.3


def test_parent_is_kept_when_nothing_beats_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        finetuning, "evaluate_heldout", lambda *a: HeldOutScore(0.1 if not calls else 1.0, 0, 1)
    )
    calls: list[int] = []
    model = tiny()
    gen = iter_finetune(model, samples(), cfg(steps=6), device="cpu")
    first = next(gen)
    calls.append(first.step)
    _, tuned = drain(gen)
    assert same(state(tuned), state(model))
    assert tuned.card["finetune"]["best_step"] == 0


def test_holdout_split_and_too_little() -> None:
    train_s, held, note = split_holdout(samples(2, 128), 0.2)
    assert held and "held back" in note
    for t, h in zip(train_s, held, strict=True):
        assert t.mask is not None and t.annotated_pixels > 0 and h.mask.sum() >= 256
    small = samples(1, 40)
    train_s, held, note = split_holdout(small, 0.2)
    assert held == [] and "too little" in note and train_s[0] is small[0]
    _, tuned = drain(iter_finetune(tiny(), small, cfg(steps=2), device="cpu"))
    assert "too little" in tuned.card["finetune"]["holdout"] and tuned.card["metrics"] == {}


def test_card_records_parent_data_and_scores() -> None:
    _, tuned = drain(iter_finetune(tiny(), samples(), cfg(steps=4), device="cpu"))
    card = tuned.card
    assert card["parent"]["name"] == "tiny" and card["parent"]["source"] == "tiny.pt"
    assert card["parent"]["metrics"] == {"val_f1_iou50": 0.5}
    assert card["normalization"] == {"low": 1.0, "high": 99.8}
    ft = card["finetune"]
    assert ft["images"] == 2 and ft["planes"] == 2 and ft["annotated_objects"] > 0
    assert ft["annotated_pixels"] == 2 * 128 * 128 and ft["steps"] == 4 and ft["seconds"] > 0
    assert {"heldout_f1_before", "heldout_f1_after"} <= set(card["metrics"])
    assert "created" in card
    assert card["object_diameter"] == pytest.approx(median_object_diameter(samples()), abs=0.1)


def test_refusals() -> None:
    with pytest.raises(NoAnnotationError):
        next(iter_finetune(tiny(), [], cfg(), device="cpu"))
    s = samples(1)[0]
    empty = Sample(s.image, s.labels, np.zeros(s.labels.shape, bool))
    with pytest.raises(NoAnnotationError):
        next(iter_finetune(tiny(), [empty], cfg(), device="cpu"))
    two = Model(UNet(UNetConfig(out_channels=2, base=4, depth=1)))
    with pytest.raises(ValueError, match="3-class"):
        next(iter_finetune(two, samples(1), cfg(), device="cpu"))
    with pytest.raises(ValueError, match="steps or a time budget"):
        next(iter_finetune(tiny(), samples(1), cfg(steps=None, time_budget=None), device="cpu"))


def test_finetune_api_on_arrays_and_stacks(tmp_path) -> None:
    assert napari_unet.finetune is finetune
    model = tiny()
    before = state(model)
    imgs, labs = zip(*(blobs(seed=i) for i in range(2)), strict=True)
    seen: list[FinetuneStep] = []
    tuned = finetune(
        model, list(imgs), list(labs), time_budget=None, steps=3, device="cpu", progress=seen.append
    )
    assert [s.step for s in seen] == [1, 2, 3]
    assert same(state(model), before)
    path = tuned.save(tmp_path / "tuned.pt")
    loaded = Model.load(path)
    assert segment(imgs[0], model=loaded, device="cpu").shape == imgs[0].shape
    stack, stack_lab = np.stack(imgs), np.stack(labs)
    tuned = finetune(model, stack, stack_lab, axes="ZYX", slices=[1], steps=2, time_budget=None, device="cpu")
    assert tuned.card["finetune"]["planes_used"] == ["image 0 z=1"]
    with pytest.raises(ValueError, match="label image"):
        finetune(model, list(imgs), [labs[0]], steps=1, device="cpu")


def test_time_budget_ends_training() -> None:
    steps, tuned = drain(
        iter_finetune(tiny(), samples(), cfg(steps=None, time_budget=0.5), device="cpu", holdout=0)
    )
    assert steps and steps[-1].elapsed < 5
    assert not tuned.card["finetune"]["stopped_early"]


def test_card_records_the_size_of_the_objects_it_learnt() -> None:
    """Disks of radius 12 (diameter 24): the fine-tuned card says ~24, so Segment's *diameter*
    rescales relative to what this model saw, not to its parent's 20 px."""
    lab = np.zeros((128, 128), np.int32)
    yy, xx = np.mgrid[:128, :128]
    for i, (cy, cx) in enumerate([(20, 20), (20, 70), (70, 20), (70, 70), (105, 45), (40, 108)], 1):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= 144] = i
    sample = Sample(np.zeros((1, 128, 128), np.float32), lab)
    assert median_object_diameter([sample]) == pytest.approx(24.0, abs=0.5)
    few = Sample(np.zeros((1, 128, 128), np.float32), np.where(lab <= 2, lab, 0))
    assert median_object_diameter([few]) is None  # too few objects to say: keep the parent's
    masked = Sample(sample.image, lab, mask=np.zeros((128, 128), bool))
    assert median_object_diameter([masked]) is None  # nothing reviewed, nothing measured


def test_a_strong_start_trains_a_short_run_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """A parent that already finds most held-back objects trains STRONG_START_STEPS at most."""
    monkeypatch.setattr(finetuning, "STRONG_START_STEPS", 5)
    monkeypatch.setattr(finetuning, "evaluate_heldout", lambda *a: HeldOutScore(0.5, 0.95, 12))
    steps, tuned = drain(iter_finetune(tiny(), samples(), cfg(steps=20), device="cpu"))
    assert steps[-1].step == 5
    assert tuned.card["finetune"]["anchor_decay"] == finetuning.STRONG_START_ANCHOR > 0
    assert "5 steps at most" in tuned.card["finetune"]["start"]
    assert "0.95" in tuned.card["finetune"]["start"]


def test_a_weak_or_thin_start_trains_the_full_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(finetuning, "STRONG_START_STEPS", 5)
    for score in (HeldOutScore(0.5, 0.6, 12), HeldOutScore(0.5, 1.0, 3)):  # weak; too few objects
        monkeypatch.setattr(finetuning, "evaluate_heldout", lambda *a, s=score: s)
        steps, tuned = drain(iter_finetune(tiny(), samples(), cfg(steps=8), device="cpu"))
        assert steps[-1].step == 8
        assert "start" not in tuned.card["finetune"]
        assert tuned.card["finetune"]["anchor_decay"] == 0.0


def test_strong_start_rule() -> None:
    assert finetuning.strong_start(HeldOutScore(0.1, 0.9, 10), scratch=False)
    assert not finetuning.strong_start(HeldOutScore(0.1, 0.89, 50), scratch=False)
    assert not finetuning.strong_start(HeldOutScore(0.1, 1.0, 9), scratch=False)  # too few to judge
    assert not finetuning.strong_start(HeldOutScore(0.1, 1.0, 50), scratch=True)  # random weights
    assert not finetuning.strong_start(None, scratch=False)  # nothing held back
