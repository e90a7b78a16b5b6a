"""Qt widgets and worker glue for napari. Nothing in the core imports this package.

The package itself imports no Qt, so the pure decision helpers in :mod:`._plan`,
:mod:`._finetune_plan` and :mod:`._finetune_request` can be tested without a display;
``SegmentWidget`` and ``FinetuneWidget`` are loaded on first use.

Each dock is a short composition of parts with one job each: the image picker (both docks),
the model picker (Segment), the magicgui parameter forms (:mod:`._params`), the labels writer
(Segment), the annotation picker, planes panel, run progress, preview layer and result
actions (Fine-tune), and the close guard (both).
"""

from __future__ import annotations

from typing import Any

__all__ = ["FinetuneWidget", "SegmentWidget"]


def __getattr__(name: str) -> Any:
    if name == "SegmentWidget":
        from .segment_widget import (
            SegmentWidget,  # local: Qt and the docks load only when napari asks for one
        )

        return SegmentWidget
    if name == "FinetuneWidget":
        from .finetune_widget import (
            FinetuneWidget,  # local: Qt and the docks load only when napari asks for one
        )

        return FinetuneWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
