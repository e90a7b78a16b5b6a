"""Proofreading in clicks: add, split, merge and delete objects with the net's own probabilities.

``session`` holds the :class:`Session` (an image, its labels, the probabilities kept per plane,
an undo history); ``operations`` the tools as pure functions; ``edits`` the :class:`Edit` they
return and the :class:`ProofreadError` they refuse with. The napari widget applies each edit as
one undo step.

May import: ``common``, ``models``, ``engine``. Never ``training``, ``io``, ``scale``, the CLI or
widgets.
"""

from napari_unet.proofread.edits import Edit, ProofreadError
from napari_unet.proofread.session import Session

__all__ = ["Edit", "ProofreadError", "Session"]
