"""Proofreading in clicks: add, split, merge and delete objects with the net's own probabilities.

``session`` holds the :class:`Session` (an image, its labels, the probabilities kept per plane,
an undo history); ``operations`` the tools as pure functions; ``edits`` the :class:`Edit` they
return and the :class:`ProofreadError` they refuse with. The napari widget applies each edit as
one undo step.

May import: ``common``, ``models``, ``engine``. Never ``training``, ``io``, ``scale``, the CLI or
widgets.

Examples
--------
Two objects, the probabilities given (without them the model computes them for each plane):

>>> import numpy as np
>>> from napari_unet.proofread import Session
>>> labels = np.zeros((40, 60), np.uint16)
>>> labels[10:30, 5:25] = 1
>>> labels[10:30, 35:55] = 2
>>> probs = np.stack([labels == 0, labels > 0, np.zeros(labels.shape, bool)]).astype(np.float32)
>>> session = Session(labels.astype(np.float32), labels, axes="YX", probabilities=probs)
>>> sorted(np.unique(session.merge([(20, 15), (20, 45)])).tolist())
[0, 1]
>>> sorted(np.unique(session.split([(20, 10), (20, 50)])).tolist())
[0, 1, 3]
>>> sorted(np.unique(session.delete((20, 10))).tolist())
[0, 3]
>>> sorted(np.unique(session.undo()).tolist())
[0, 1, 3]
"""

from napari_unet.proofread.edits import Edit, ProofreadError
from napari_unet.proofread.session import Session

__all__ = ["Edit", "ProofreadError", "Session"]
