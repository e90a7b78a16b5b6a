"""Small pieces every layer shares: atomic file writes, generator driving, image axes.

Imports nothing else of napari_unet (the bottom layer).
"""
