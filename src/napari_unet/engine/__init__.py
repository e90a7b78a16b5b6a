"""Image in, labels out: normalisation, overlap tiling, inference (generators), post-processing.

May import: ``common``, ``models``. Never ``training``, ``io``, ``scale``, the CLI or widgets.
"""
