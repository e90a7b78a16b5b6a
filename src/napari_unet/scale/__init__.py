"""Beyond one image in memory: the chunked engine (stitched blocks), batch runs over many files, Dask.

``chunked`` segments block by block (with ``blocks``, ``stitching`` and ``tracking``);
``batch`` runs many files (with ``batch_types``, ``batch_inputs``, ``batch_outputs``,
``batch_file``, ``batch_summary`` and ``cluster`` for Dask).

May import: ``common``, ``models``, ``engine``, ``io``.
"""
