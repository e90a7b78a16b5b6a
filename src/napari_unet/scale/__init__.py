"""Beyond one image in memory: the chunked engine (stitched blocks), batch runs over many files, Dask.

May import: ``common``, ``models``, ``engine``, ``io``.
"""
