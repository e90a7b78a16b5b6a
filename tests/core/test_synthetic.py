"""The synthetic nuclei: deterministic, plausible, with ground truth that matches the image."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.samples import synthetic
from napari_unet.samples.napari_samples import (
    SampleUnavailableError,
    human_mitosis,
    nuclei_2d,
    nuclei_3d,
    nuclei_timelapse,
)


def _touching_pairs(labels: np.ndarray) -> int:
    """Pairs of different objects that share an edge (4-connectivity in the last two axes)."""
    pairs = set()
    for axis in (-1, -2):
        a = labels
        b = np.roll(labels, -1, axis=axis)
        edge = [slice(None)] * labels.ndim
        edge[axis] = slice(0, -1)
        a, b = a[tuple(edge)], b[tuple(edge)]
        m = (a > 0) & (b > 0) & (a != b)
        pairs |= {tuple(sorted(p)) for p in zip(a[m].tolist(), b[m].tolist(), strict=True)}
    return len(pairs)


def _connected(labels: np.ndarray) -> bool:
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        if box is not None and ndi.label(labels[box] == i)[1] != 1:
            return False
    return True


def test_2d_is_deterministic_and_realistic() -> None:
    a, b = synthetic.nuclei_2d(seed=3), synthetic.nuclei_2d(seed=3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, synthetic.nuclei_2d(seed=4).image)
    assert a.image.shape == a.labels.shape == (512, 512)
    assert a.image.dtype == np.uint16 and a.labels.dtype.kind == "u"
    assert a.axes == "YX" and a.scale == (1.0, 1.0)
    assert 40 <= a.n_objects <= 80
    assert _touching_pairs(a.labels) >= 3, "some nuclei must touch: the hard case"
    assert _connected(a.labels)
    ids = np.unique(a.labels)
    assert np.array_equal(ids, np.arange(ids.size)), "ids are 0..n without gaps"
    # nuclei are bright, background dark, with noise everywhere
    fg, bg = (
        a.image[a.labels > 0].astype(float),
        a.image[ndi.binary_dilation(a.labels > 0, iterations=6) == 0],
    )
    assert fg.mean() > bg.mean() + 8 * bg.std()
    assert bg.std() > 2, "camera noise is present"
    radii = np.sqrt(np.bincount(a.labels.ravel())[1:] / np.pi)
    assert 5 < np.median(radii) < 20


def test_3d_stack_is_anisotropic_with_one_id_per_nucleus() -> None:
    s = synthetic.nuclei_3d()
    assert s.image.shape == s.labels.shape == (24, 256, 256)
    assert s.axes == "ZYX" and s.scale == (3.0, 1.0, 1.0)
    assert s.n_objects >= 25
    assert _connected(s.labels), "one connected 3D object per id, through z"
    z_extent = [box[0].stop - box[0].start for box in ndi.find_objects(s.labels) if box is not None]
    xy_extent = [box[2].stop - box[2].start for box in ndi.find_objects(s.labels) if box is not None]
    assert 2 <= np.median(z_extent) < np.median(xy_extent) / 2, "z spacing 3x: fewer slices than pixels"
    assert s.image[s.labels > 0].mean() > s.image[s.labels == 0].mean() * 1.5


def test_timelapse_drifts_and_keeps_ids() -> None:
    s = synthetic.nuclei_timelapse()
    assert s.image.shape == s.labels.shape == (8, 256, 256)
    assert s.axes == "TYX"
    com0 = np.array(ndi.center_of_mass(s.labels[0] > 0, s.labels[0], [1, 2, 3]))
    com7 = np.array(ndi.center_of_mass(s.labels[7] > 0, s.labels[7], [1, 2, 3]))
    shift = np.linalg.norm(com7 - com0, axis=1)
    assert np.all((shift > 2) & (shift < 20)), "nuclei move a little, and the ids follow them"
    ids0 = set(np.unique(s.labels[0])) - {0}
    assert len(ids0 & set(np.unique(s.labels[7]))) >= 0.8 * len(ids0)
    assert s.image[7].astype(float).mean() < s.image[0].astype(float).mean(), "photobleaching"


def test_generation_is_fast() -> None:
    import time

    for make in (synthetic.nuclei_2d, synthetic.nuclei_3d, synthetic.nuclei_timelapse):
        t = time.perf_counter()
        make()
        # generous: tests assert behaviour, this only guards against an accidental O(n^2)
        assert time.perf_counter() - t < 10


@pytest.mark.parametrize(
    ("sample", "name", "ndim", "scale"),
    [
        (nuclei_2d, "nuclei_2d", 2, (1.0, 1.0)),
        (nuclei_3d, "nuclei_3d", 3, (3.0, 1.0, 1.0)),
        (nuclei_timelapse, "nuclei_timelapse", 3, (1.0, 1.0, 1.0)),
    ],
)
def test_samples_give_image_and_ground_truth(sample, name: str, ndim: int, scale: tuple) -> None:
    (image, image_kw, image_type), (truth, truth_kw, truth_type) = sample()
    assert (image_type, truth_type) == ("image", "labels")
    assert image_kw["name"] == name and truth_kw["name"] == f"{name} ground truth"
    assert image.ndim == truth.ndim == ndim and image.shape == truth.shape
    assert tuple(image_kw["scale"]) == tuple(truth_kw["scale"]) == scale
    assert len(image_kw["axis_labels"]) == ndim


def test_human_mitosis_never_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    from napari_unet.samples import napari_samples as _sample_data

    monkeypatch.setattr(_sample_data, "_skimage_cached", lambda name: None)
    with pytest.raises(SampleUnavailableError, match="not downloaded"):
        human_mitosis()


def test_generator_samples_and_widget_rules_import_no_gui() -> None:
    """synthetic, the sample contributions and the widget's decision rules stay Qt-free."""
    import subprocess
    import sys

    code = (
        "import sys, napari_unet.samples.synthetic, napari_unet.samples.napari_samples\n"
        "import napari_unet._widgets._plan\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', "
        "'PySide6', 'napari', 'magicgui', 'torch'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
