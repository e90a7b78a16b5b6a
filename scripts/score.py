"""Score predicted instance labels against ground truth: F1, precision, recall at IoU 0.5.

python scripts/score.py TRUTH.tif PRED.tif
"""

from __future__ import annotations

import sys

from napari_unet.io import read_image
from napari_unet.metrics import match


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python scripts/score.py TRUTH PRED", file=sys.stderr)
        return 2
    truth, _, _ = read_image(args[0])
    pred, _, _ = read_image(args[1])
    m = match(truth, pred, 0.5)
    print(
        f"{args[1]}: F1@IoU0.5 {m.f1:.3f} (precision {m.precision:.3f}, recall {m.recall:.3f}; "
        f"{m.tp} matched, {m.fp} extra, {m.fn} missed)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
