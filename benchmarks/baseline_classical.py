"""Classical baseline on the DSB held-out experiments: Otsu threshold + distance-transform watershed.

    python benchmarks/baseline_classical.py [--data ../shared/data/dsb2018-train]

Gives the figure the bundled U-Net must beat (same validation split, same F1 at IoU 0.5).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu
from skimage.segmentation import watershed

from napari_unet.engine.metrics import Matching, match
from napari_unet.engine.postprocess import remove_small

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from train_bundled import load_dsb  # noqa: E402


def otsu_watershed(image: np.ndarray, min_distance: int = 5, min_size: int = 30) -> np.ndarray:
    smooth = gaussian(image.astype(np.float32), 1.0)
    mask = smooth > threshold_otsu(smooth)
    dist = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(dist, min_distance=min_distance, labels=ndi.label(mask)[0], exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return remove_small(watershed(-dist, markers, mask=mask), min_size)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("NAPARI_UNET_DSB") or str(ROOT.parent / "shared" / "data" / "dsb2018-train")
    ap.add_argument("--data", default=default_data)
    args = ap.parse_args(argv)
    if not Path(args.data, "index.csv").is_file():
        print(f"skipped: no DSB data folder at {args.data}")
        return 0
    _, val = load_dsb(Path(args.data))
    for min_distance in (3, 5, 8):
        total = Matching(0, 0, 0)
        for _, img, lab in val:
            total = total + match(lab, otsu_watershed(img, min_distance))
        print(f"Otsu + watershed (min_distance {min_distance}): F1@0.5 {total.f1:.4f} on {len(val)} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
