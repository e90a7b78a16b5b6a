"""Write the synthetic samples as ImageJ TIFF files into ``sample_data/`` (image + ground truth).

    python scripts/make_samples.py [--out sample_data]

The files are what ``napari-unet segment`` and ImageJ/Fiji users can open directly; napari's
File > Open Sample generates the same images on demand (same seeds).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_unet.io.labels import write_labels
from napari_unet.samples import synthetic

SAMPLES = {
    "nuclei_2d": synthetic.nuclei_2d,
    "nuclei_3d": synthetic.nuclei_3d,
    "nuclei_timelapse": synthetic.nuclei_timelapse,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "sample_data"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import tifffile

    for name, make in SAMPLES.items():
        s = make()
        meta = {"axes": s.axes}
        if "Z" in s.axes:
            meta["spacing"] = s.scale[s.axes.index("Z")]
            meta["unit"] = "pixel"
        tifffile.imwrite(out / f"{name}.tif", s.image, imagej=True, metadata=meta, compression="zlib")
        write_labels(out / f"{name}_truth.tif", s.labels, axes=s.axes)
        print(f"{out / name}.tif: {s.axes} {s.image.shape} {s.image.dtype}, {s.n_objects} objects")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
