"""The automatic object size: the estimate recovers known scales, avoids the texture trap, and
reaches every engine (``diameter=`` overrides it; ``estimate_size=False`` turns it off)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_unet.common.generators import drain
from napari_unet.engine import object_size
from napari_unet.engine.config import PredictConfig
from napari_unet.engine.metrics import match
from napari_unet.engine.object_size import SizeEstimate, estimate_size
from napari_unet.engine.postprocess import PostprocessParams
from napari_unet.engine.predict import iter_segment, segment
from napari_unet.engine.setup import default_params
from napari_unet.models.model_file import Model
from napari_unet.models.registry import load_model
from napari_unet.models.unet import UNet, UNetConfig
from napari_unet.samples import synthetic
from napari_unet.scale.chunked import iter_segment_chunked


def _median_diameter(labels: np.ndarray) -> float:
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    return float(np.median(2.0 * np.sqrt(areas / np.pi)))


def _nuclei(radius: float, seed: int = 1) -> synthetic.SyntheticNuclei:
    """Synthetic nuclei of about ``2 * radius`` px, a quarter of the image covered."""
    side = int(np.clip(radius * 28, 256, 1152))
    n = int(0.25 * side * side / (np.pi * radius * radius))
    return synthetic.nuclei_2d(shape=(side, side), n_nuclei=n, radius=(0.8 * radius, 1.2 * radius), seed=seed)


@pytest.fixture(scope="module")
def bundled() -> Model:
    return load_model()


@pytest.mark.parametrize("radius", [4.0, 10.0, 25.0, 40.0])
def test_estimate_recovers_the_nuclei_size_at_several_zooms(bundled, radius) -> None:
    """Nuclei from ~7 to ~70 px across (0.35x to 3.5x the bundled model's 20 px)."""
    s = _nuclei(radius)
    truth = _median_diameter(s.labels)
    est = estimate_size(bundled, s.image[None], default_params(bundled))
    assert est.diameter is not None, est
    assert 0.85 < est.diameter / truth < 1.2, (truth, est)
    assert est.objects >= object_size.MIN_PROBE_OBJECTS and len(est.zooms) <= object_size.MAX_PROBES
    near = 0.5 < truth / 20.0 < object_size.KEEP_WITHIN
    assert (est.applied is None) == near, est  # rescaled only when far from the trained size


def _fragmenting_net(truth: float, trained: float = 20.0):
    """A stand-in for ``_probe``: a net that finds objects seen between 6 and 40 px whole (a
    little small), misses smaller ones, and cuts larger ones into ~10 px pieces of texture,
    as the bundled model does with large textured nuclei."""

    def probe(model, plane, zoom, params, config):
        seen = truth * zoom
        if seen < 6.0:
            return None, 0, None
        if seen > 2.0 * trained:
            return 10.0 / zoom, 40, None  # pieces that look like objects of about the trained size
        return 0.9 * truth, 20, None

    return probe


@pytest.mark.parametrize("truth", [8.0, 20.0, 45.0, 80.0])
def test_estimate_is_not_caught_by_texture_pieces(monkeypatch, truth) -> None:
    """Starting at the model's own scale, 80 px objects would be read as 10 px pieces, zoomed
    in further, read as pieces again (a false fixed point): the coarse first probe (half the
    model's scale: objects up to 4x the trained size are seen whole) avoids it."""
    monkeypatch.setattr(object_size, "_probe", _fragmenting_net(truth))
    model = Model(UNet(UNetConfig(base=4, depth=2)), {"object_diameter": 20.0})
    est = estimate_size(model, np.zeros((1, 64, 64), np.float32), PostprocessParams())
    assert est.diameter is not None and 0.8 < est.diameter / truth < 1.25, est


def test_a_blank_or_objectless_plane_gives_no_estimate(bundled) -> None:
    est = estimate_size(bundled, np.full((1, 300, 300), 7, np.uint16), default_params(bundled))
    assert est.diameter is None and est.applied is None
    assert "not estimated" in est.describe() and "model's scale kept" in est.describe()


def test_the_probes_do_not_cut_waists(bundled, monkeypatch) -> None:
    """The estimate's objects are the post-processing's without the waist cut, whatever the card
    says: large textured nuclei probed too large have waists, and their pieces would pass for
    objects of the trained size."""
    depths = []
    real = object_size.instances

    def spy(probs, params, *args, **kwargs):
        depths.append(params.split_depth)
        return real(probs, params, *args, **kwargs)

    monkeypatch.setattr(object_size, "instances", spy)
    s = _nuclei(12.0, seed=4)
    params = replace(default_params(bundled), split_depth=1.0)
    assert estimate_size(bundled, s.image[None], params).diameter is not None
    assert depths and set(depths) == {0.0}


def test_the_probe_windows_are_small(bundled, monkeypatch) -> None:
    """The estimate reads and runs the net on windows of a few hundred px, not the plane."""
    seen = []
    real = object_size.iter_probabilities

    def spy(model, image, config):
        seen.append(image.shape[-2:])
        return real(model, image, config)

    monkeypatch.setattr(object_size, "iter_probabilities", spy)
    s = synthetic.nuclei_2d(shape=(1500, 1500), n_nuclei=600, radius=(8, 12), seed=2)
    est = estimate_size(bundled, s.image[None], default_params(bundled))
    assert est.diameter is not None
    assert seen and all(max(hw) <= object_size.MAX_PROBE_PX for hw in seen), seen


def _steps(gen):
    """What a generator yields, and what it returns."""
    steps: list = []
    return steps, drain(gen, steps.append)


def test_segment_estimates_by_default_and_reports_it_first(bundled) -> None:
    s = _nuclei(25.0, seed=3)  # ~50 px nuclei: 2.5x the trained size
    steps, labels = _steps(iter_segment(s.image, bundled, axes="YX"))
    assert steps[0].stage == "size" and isinstance(steps[0].detail, SizeEstimate)
    est = steps[0].detail
    assert est.applied is not None and "rescaled" in est.describe()
    assert [p.stage for p in steps[1:]].count("size") == 0
    from napari_unet.engine.metrics import match  # local: only this test scores

    assert match(s.labels, labels).f1 >= 0.95
    # the estimate's own gain, without the waist cut (which also rescues these nuclei unscaled)
    plain = PostprocessParams(threshold=0.6, seed_threshold=0.6, min_size=30)
    own = segment(s.image, model=bundled, axes="YX", estimate_size=False, params=plain)
    scaled = segment(s.image, model=bundled, axes="YX", params=plain)
    assert match(s.labels, scaled).f1 > match(s.labels, own).f1 + 0.1


@pytest.mark.parametrize(
    ("kwargs", "stage_expected"),
    [({"diameter": 30.0}, False), ({"estimate_size": False}, False), ({}, True)],
)
def test_diameter_or_estimate_size_false_skip_the_estimate(bundled, kwargs, stage_expected) -> None:
    s = _nuclei(10.0, seed=4)
    config = PredictConfig(**kwargs)
    steps, _ = _steps(iter_segment(s.image, bundled, axes="YX", config=config))
    assert any(p.stage == "size" for p in steps) == stage_expected


def test_the_chunked_engine_uses_the_estimate(bundled) -> None:
    s = _nuclei(25.0, seed=5)
    out = np.zeros(s.image.shape, np.uint32)
    steps, _ = _steps(iter_segment_chunked(s.image, out, bundled, axes="YX"))
    sizes = [p.detail for p in steps if p.stage == "size"]
    assert len(sizes) == 1 and sizes[0].applied is not None
    in_memory = segment(s.image, model=bundled, axes="YX")
    from napari_unet.engine.metrics import match  # local: only this test scores

    assert match(in_memory, out).f1 > 0.95  # the same scale, so (nearly) the same objects


def test_a_z_stack_is_estimated_once_from_its_middle_plane(bundled, monkeypatch) -> None:
    planes = []
    real = object_size.estimate_size

    def spy(model, plane, params, config=PredictConfig()):
        planes.append(np.asarray(plane).copy())
        return real(model, plane, params, config)

    from napari_unet.engine import setup  # local: the name the engine calls

    monkeypatch.setattr(setup, "estimate_size", spy)
    torch.manual_seed(0)
    stack = np.stack([np.full((64, 64), z, np.uint16) for z in range(5)])
    segment(stack, model=bundled, axes="ZYX")
    assert len(planes) == 1 and planes[0].shape == (1, 64, 64) and (planes[0] == 2).all()


def test_a_small_image_at_the_model_scale_costs_no_second_pass(bundled, monkeypatch) -> None:
    """The estimate's last probe covered the whole plane at the model's own scale: those are
    the plane's probabilities, so the net runs only for the probes, and the labels are exactly
    those of a run without the estimate."""
    from napari_unet.engine import inference  # local: the engine's runner, counted here only
    from napari_unet.engine.predict import estimate_object_size  # local: the public wrapper

    s = _nuclei(10.0, seed=6)  # ~18 px nuclei: the bundled model's own scale
    image = s.image[:256, :256]
    passes = []
    run = inference.Runner.__call__
    monkeypatch.setattr(inference.Runner, "__call__", lambda self, b: passes.append(b.shape) or run(self, b))
    est = estimate_object_size(image, bundled, axes="YX")
    assert est.applied is None and est.probs is not None
    probing = len(passes)
    passes.clear()
    steps, labels = _steps(iter_segment(image, bundled, axes="YX"))
    assert steps[0].stage == "size" and len(passes) == probing, "no pass beyond the probes"
    passes.clear()
    plain = segment(image, model=bundled, axes="YX", estimate_size=False)
    assert passes, "without the estimate the net runs its own pass"
    assert np.array_equal(labels, plain)


def test_a_fine_tuned_card_is_compared_in_the_statistic_the_probes_measure(monkeypatch) -> None:
    """Objects of widely varying size (EM profiles) read larger in the probes' statistic than
    their median: a card that records both makes an image like its training images keep the
    model's scale, where the median alone would shrink it."""
    card = {"object_diameter": 27.6, "typical_diameter": 50.0, "working_zoom": 0.725}
    model = Model(UNet(UNetConfig(base=4, depth=2)), card)
    monkeypatch.setattr(object_size, "_probe", lambda m, p, zoom, params, config: (50.0, 40, None))
    est = estimate_size(model, np.zeros((1, 64, 64), np.float32), PostprocessParams())
    assert est.applied is None and est.diameter == pytest.approx(27.6, rel=0.01), est
    del card["typical_diameter"]
    est = estimate_size(Model(model.net, card), np.zeros((1, 64, 64), np.float32), PostprocessParams())
    assert est.applied == pytest.approx(50.0), "without it the median is the reference"


def test_postprocess_sizes_follow_the_zoom() -> None:
    params = PostprocessParams(min_size=30, min_seed_size=4, split_depth=1.0)
    assert params.for_zoom(None) is params
    small = params.for_zoom(2.0)  # an image enlarged 2x for the net: its objects are small
    assert (small.min_size, small.min_seed_size, small.split_depth) == (8, 1, 0.5)
    large = params.for_zoom(0.5)
    assert (large.min_size, large.min_seed_size, large.split_depth) == (120, 16, 2.0)
    assert PostprocessParams(min_size=0).for_zoom(3.0).min_size == 0  # off stays off


def test_small_nuclei_are_kept_when_the_image_is_enlarged_for_them(bundled, monkeypatch) -> None:
    """Nuclei ~8 px across (area ~50 px) enlarged ~2.5x for the net: a minimum size of 80 px at
    the model's scale is ~13 px here, so they survive; read as 80 image px it drops most."""
    s = _nuclei(4.5, seed=2)
    params = replace(default_params(bundled), min_size=80)
    diameter = _median_diameter(s.labels)
    f1 = match(s.labels, segment(s.image, bundled, axes="YX", params=params, diameter=diameter)).f1
    monkeypatch.setattr(PostprocessParams, "for_zoom", lambda self, zoom: self)  # sizes as image px
    f1_image_px = match(s.labels, segment(s.image, bundled, axes="YX", params=params, diameter=diameter)).f1
    assert f1 > 0.6 and f1 > f1_image_px + 0.3, (f1, f1_image_px)
