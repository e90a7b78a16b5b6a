"""What a proofreading operation returns: the changed box of the labels, before and after.

An :class:`Edit` is computed without touching the labels, so the caller decides how to apply
it: the :class:`~napari_unet.proofread.session.Session` writes it into its array, the napari
widget hands the changed pixels to ``Labels.data_setitem`` (one undo step, and the paint event
that tells Fine-tune the plane was edited).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Edit", "ProofreadError"]


class ProofreadError(ValueError):
    """A proofreading tool cannot act here; the message says why in one line. Nothing changed."""


@dataclass(frozen=True)
class Edit:
    """A change of the labels inside one box: ``region`` (slices of the whole labels array).

    ``before`` and ``after`` are the box's values; ``ids`` the object ids the edit created or
    changed (for the status line and for tests), ``message`` a one-line description.
    """

    region: tuple[slice, ...]
    before: np.ndarray
    after: np.ndarray
    ids: tuple[int, ...]
    message: str

    @property
    def changed(self) -> np.ndarray:
        """Boolean mask (box-sized) of the pixels whose id changes."""
        return self.before != self.after

    @property
    def n_changed(self) -> int:
        """How many pixels change."""
        return int(np.count_nonzero(self.changed))

    def indices(self) -> tuple[np.ndarray, ...]:
        """Coordinates (in the whole array) of the changed pixels, as napari's ``data_setitem`` takes."""
        local = np.nonzero(self.changed)
        return tuple(idx + (s.start or 0) for idx, s in zip(local, self.region, strict=True))

    def values(self) -> np.ndarray:
        """The new ids of the changed pixels, in the order of :meth:`indices`."""
        return self.after[self.changed]

    def apply(self, labels: np.ndarray) -> None:
        """Write the edit into ``labels`` (in place)."""
        self._write(labels, self.after)

    def revert(self, labels: np.ndarray) -> None:
        """Take the edit back out of ``labels`` (in place)."""
        self._write(labels, self.before)

    def _write(self, labels: np.ndarray, values: np.ndarray) -> None:
        box = labels[self.region]
        mask = self.changed
        box[mask] = values[mask]
