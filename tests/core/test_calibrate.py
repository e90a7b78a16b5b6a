"""Post-processing thresholds fitted on the held-back annotation of a fine-tune."""

from __future__ import annotations

import numpy as np
import torch

from napari_unet.engine.postprocess import PostprocessParams
from napari_unet.models.model_file import Model
from napari_unet.models.unet import UNet, UNetConfig
from napari_unet.training import calibrate
from napari_unet.training.holdout import HeldOut
from napari_unet.training.loop import TrainConfig


def _held(n_objects: int) -> list[HeldOut]:
    lab = np.zeros((64, 64 * n_objects), np.int32)
    for i in range(n_objects):
        lab[20:44, 64 * i + 20 : 64 * i + 44] = i + 1
    image = np.zeros((1, *lab.shape), np.float32)
    return [HeldOut(image, lab, np.ones(lab.shape, bool))]


def _model(threshold: float) -> Model:
    torch.manual_seed(0)
    card = {"postprocess": {"threshold": threshold, "seed_threshold": 0.5, "min_size": 3}}
    return Model(UNet(UNetConfig(base=4, depth=1)), card)


def _fake_probs(foreground: float):
    """Probabilities whose foreground inside the truth squares is ``foreground`` (0.1 outside)."""

    def fake(model, image, config):
        lab = _held_labels[0]
        probs = np.zeros((3, *lab.shape), np.float32)
        inside = lab > 0
        probs[0] = np.where(inside, 1.0 - foreground, 0.9)
        probs[1] = np.where(inside, foreground - 0.02, 0.05)
        probs[2] = 1.0 - probs[0] - probs[1]
        return probs
        yield  # pragma: no cover - a generator like iter_probabilities

    return fake


_held_labels: list[np.ndarray] = []


def test_thresholds_move_when_the_parents_find_nothing(monkeypatch) -> None:
    """Foreground probability 0.55 under a threshold of 0.7: no object with the parent's
    thresholds, all of them with a lower one; enough objects, so the new ones are adopted."""
    held = _held(calibrate.MIN_OBJECTS)
    _held_labels[:] = [held[0].labels]
    monkeypatch.setattr(calibrate, "iter_probabilities", _fake_probs(0.55))
    cal = calibrate.calibrate_postprocess(_model(0.7), held, TrainConfig(amp=False), torch.device("cpu"))
    assert cal.objects == calibrate.MIN_OBJECTS
    assert cal.f1_parent == 0.0 and cal.f1_chosen == 1.0 and cal.adopted
    assert cal.params.threshold <= 0.5 and cal.params.min_size == 3


def test_too_few_objects_keep_the_parents_thresholds(monkeypatch) -> None:
    held = _held(calibrate.MIN_OBJECTS - 1)
    _held_labels[:] = [held[0].labels]
    monkeypatch.setattr(calibrate, "iter_probabilities", _fake_probs(0.55))
    cal = calibrate.calibrate_postprocess(_model(0.7), held, TrainConfig(amp=False), torch.device("cpu"))
    assert not cal.adopted and cal.params == PostprocessParams(0.7, 0.5, 3)
    assert cal.f1_chosen == 1.0, "what was found is still reported"


def test_good_parent_thresholds_are_kept(monkeypatch) -> None:
    held = _held(calibrate.MIN_OBJECTS)
    _held_labels[:] = [held[0].labels]
    monkeypatch.setattr(calibrate, "iter_probabilities", _fake_probs(0.9))
    cal = calibrate.calibrate_postprocess(_model(0.5), held, TrainConfig(amp=False), torch.device("cpu"))
    assert cal.f1_parent == 1.0 and not cal.adopted and cal.params.threshold == 0.5


def test_nothing_held_back_nothing_calibrated() -> None:
    assert calibrate.calibrate_postprocess(_model(0.5), [], TrainConfig(), torch.device("cpu")) is None


def _dumbbells(n_objects: int) -> list[HeldOut]:
    """Single cells shaped like two discs joined by a wide neck: waist cutting splits them."""
    yy, xx = np.mgrid[:64, :64]
    one = ((yy - 32) ** 2 + (xx - 20) ** 2 < 121) | ((yy - 32) ** 2 + (xx - 44) ** 2 < 121)
    one |= (abs(yy - 32) < 5) & (xx > 20) & (xx < 44)
    lab = np.zeros((64, 64 * n_objects), np.int32)
    for i in range(n_objects):
        lab[:, 64 * i : 64 * (i + 1)][one] = i + 1
    return [HeldOut(np.zeros((1, *lab.shape), np.float32), lab, np.ones(lab.shape, bool))]


def test_a_parents_waist_cutting_is_turned_off_for_cells_with_waists(monkeypatch) -> None:
    held = _dumbbells(calibrate.MIN_OBJECTS)
    _held_labels[:] = [held[0].labels]
    monkeypatch.setattr(calibrate, "iter_probabilities", _fake_probs(0.9))
    parent = _model(0.5)
    parent.card["postprocess"]["split_depth"] = 0.5
    cal = calibrate.calibrate_postprocess(parent, held, TrainConfig(amp=False), torch.device("cpu"))
    assert cal.f1_parent < 0.7, "each cell cut in two by the parent's settings"
    assert cal.adopted and cal.params.split_depth == 0.0 and cal.f1_chosen == 1.0
