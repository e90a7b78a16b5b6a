"""npe2 sample data: synthetic nuclei with their ground truth, and one real scikit-image image.

Each synthetic sample returns the image and its ground truth as a (hidden) Labels layer, so
a user can segment and then compare, and the end-to-end test can score the result. The
images are generated on demand from a fixed seed (see ``sample_data/README.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from skimage.data import _fetchers
from skimage.data import human_mitosis as _skimage_human_mitosis

from napari_unet.samples import synthetic

LayerData = tuple[np.ndarray, dict[str, Any], str]

_AXIS_LABELS = {"YX": ("y", "x"), "ZYX": ("z", "y", "x"), "TYX": ("t", "y", "x")}


def _layers(name: str, s: synthetic.SyntheticNuclei) -> list[LayerData]:
    common = {"scale": s.scale, "axis_labels": _AXIS_LABELS[s.axes]}
    image_kw = {**common, "name": name, "colormap": "gray", "metadata": {"axes": s.axes}}
    truth_kw = {**common, "name": f"{name} ground truth", "visible": False, "opacity": 0.5}
    return [(s.image, image_kw, "image"), (s.labels, truth_kw, "labels")]


def nuclei_2d() -> list[LayerData]:
    """512x512 widefield nuclei, ~60 objects, some touching."""
    return _layers("nuclei_2d", synthetic.nuclei_2d())


def nuclei_3d() -> list[LayerData]:
    """24x256x256 z-stack with z spacing 3x the xy pixel (shown to scale)."""
    return _layers("nuclei_3d", synthetic.nuclei_3d())


def nuclei_timelapse() -> list[LayerData]:
    """8 frames of 256x256 with drifting, bleaching nuclei; ground truth keeps ids over time."""
    return _layers("nuclei_timelapse", synthetic.nuclei_timelapse())


class SampleUnavailableError(RuntimeError):
    """A sample that needs a download which cannot happen here."""


def _skimage_cached(filename: str) -> Path | None:
    """The local copy of a scikit-image data file, without ever touching the network."""
    candidates = []
    if getattr(_fetchers, "_image_fetcher", None) is not None:
        candidates.append(Path(_fetchers._image_fetcher.path) / filename)
    for attr in ("_DISTRIBUTION_DIR", "_LEGACY_DATA_DIR"):
        base = getattr(_fetchers, attr, None)
        if base:
            candidates.append(Path(base).parent / filename)
            candidates.append(Path(base) / Path(filename).name)
    return next((p for p in candidates if p.is_file()), None)


def human_mitosis() -> list[LayerData]:
    """scikit-image's human mitosis image (real fluorescence nuclei, 512x512).

    scikit-image does not ship it: it is downloaded once into its cache. We only read the
    cache, so opening the sample never hangs on a missing network; without a cached copy it
    says how to get one.
    """
    if _skimage_cached("data/mitosis.tif") is None:
        raise SampleUnavailableError(
            "the scikit-image 'human_mitosis' image is not downloaded yet: run "
            '`python -c "import skimage.data; skimage.data.human_mitosis()"` once with internet access'
        )
    image = _skimage_human_mitosis()
    return [(image, {"name": "human mitosis", "colormap": "gray", "axis_labels": ("y", "x")}, "image")]
