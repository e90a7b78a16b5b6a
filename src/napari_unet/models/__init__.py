"""What a model is: the U-Net, its self-describing file, the bundled weights and saved versions.

May import: ``common``. Nothing here runs a model on an image (that is ``engine``).
"""
