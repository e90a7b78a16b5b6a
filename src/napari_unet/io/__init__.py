"""Files in and out: TIFF / OME-TIFF and plain images, OME-Zarr, label writers, napari's reader/writer glue.

``images`` dispatches a path to its reader (``tiff``, ``plain``, ``omezarr``), all raising the one
error of ``errors``; ``labels`` and ``omezarr`` write label images.

May import: ``common``. The napari glue (``napari_reader``, ``napari_writer``) returns plain
layer-data tuples and does not import napari.
"""
