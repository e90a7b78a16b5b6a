"""Synthetic nuclei with ground truth, and napari's sample-data contributions built from them.

May import: ``common``.
"""
