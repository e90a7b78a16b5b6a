"""Corrections to a better model: annotations -> samples, targets, augmentation, the training loop.

May import: ``common``, ``models``, ``engine``.
"""
