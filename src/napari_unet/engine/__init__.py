"""Image in, labels out: normalisation, overlap tiling, inference (generators), post-processing.

``predict`` is the API (``segment``, ``iter_segment``); ``setup`` resolves a call into a
``SegmentJob`` that the in-memory and the chunked engines share; ``config`` holds
``PredictConfig`` and ``Progress``; ``normalize``, ``object_scale`` (zoom, anisotropy),
``tiling``, ``inference`` (the net), ``postprocess``, ``metrics`` and ``devices`` do one
job each. ``measure`` makes the per-object table from ``object_stats`` (sums over each
object's pixels, in one pass) and ``convex_hull`` (every object's convex hull, for solidity).

May import: ``common``, ``models``. Never ``training``, ``io``, ``scale``, the CLI or widgets.
"""
