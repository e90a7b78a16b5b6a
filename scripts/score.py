"""Score predicted instance labels against ground truth: F1, precision, recall at IoU 0.5.

python scripts/score.py TRUTH.tif PRED.tif
"""

from __future__ import annotations

import sys

import numpy as np

from napari_unet.engine.metrics import Matching, match
from napari_unet.io.images import read_image


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python scripts/score.py TRUTH PRED", file=sys.stderr)
        return 2
    truth, axes, _ = read_image(args[0])
    pred, _, _ = read_image(args[1])
    if axes and "T" in axes:
        frames = zip(
            np.moveaxis(truth, axes.index("T"), 0), np.moveaxis(pred, axes.index("T"), 0), strict=True
        )
        m = Matching(0, 0, 0)
        for a, b in frames:
            m = m + match(a, b, 0.5)
    else:
        m = match(truth, pred, 0.5)
    print(
        f"{args[1]}: F1@IoU0.5 {m.f1:.3f} (precision {m.precision:.3f}, recall {m.recall:.3f}; "
        f"{m.tp} matched, {m.fp} extra, {m.fn} missed)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
