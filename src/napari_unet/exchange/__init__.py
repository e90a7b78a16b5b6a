"""Models that travel: bioimage.io model packages out (export) and back in (import).

A package is a model plus a real image run through the engine (its test input and output), so
this room sits above ``engine`` and ``samples``. May import: ``common``, ``models``, ``engine``,
``samples``. Nothing here needs bioimage.io's own libraries except the optional check
(:mod:`napari_unet.exchange.bioimageio_check`).
"""
