"""Image in, labels out: normalisation, overlap tiling, inference (generators), post-processing.

``predict`` is the API (``segment``, ``iter_segment``); ``setup`` resolves a call into a
``SegmentJob`` that the in-memory and the chunked engines share; ``config`` holds
``PredictConfig`` and ``Progress``; ``normalize``, ``object_scale`` (zoom, anisotropy),
``tiling``, ``inference`` (the net), ``postprocess``, ``metrics`` and ``devices`` do one
job each.

May import: ``common``, ``models``. Never ``training``, ``io``, ``scale``, the CLI or widgets.
"""
