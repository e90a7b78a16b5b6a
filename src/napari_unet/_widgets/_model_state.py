"""What the plugin's dock widgets of one viewer share about models.

``Segment`` owns the model chooser; ``Fine-tune`` starts from the model chosen there and,
when it saves a new version, selects it so that the next Segment uses the improved model.
Both talk through this one object per viewer instead of finding each other in the window,
so either widget works alone and the two stay in step when both are docked.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

from qtpy.QtCore import QObject, Signal

from napari_unet.models.model_file import Model
from napari_unet.models.registry import load_model, resolve_model_path


class ModelState(QObject):
    """The selected model (a file path) and a cache of loaded models, shared per viewer."""

    #: a model file path was selected (by Segment's chooser or by a finished fine-tune)
    selected = Signal(str)
    #: models were saved, deleted or imported: choosers should list them again
    registry_changed = Signal()
    #: Fine-tune asks Segment to segment this image layer (its ``unique_id``) again
    resegment_requested = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.path: str | None = None
        self._cache: dict[tuple[str, float], Model] = {}
        #: labels layer id -> fingerprints of every plane Segment wrote there (see ``_plan.remember``):
        #: Fine-tune tells a user's edit from Segment's own write with it
        self.written: dict[Any, Any] = {}
        #: image layer id -> (PostprocessParams, PredictConfig, channel) Segment last ran it with:
        #: Proofread computes the probabilities Segment saw (same diameter, thresholds, channel)
        self.segmented_with: dict[Any, tuple[Any, Any, int | None]] = {}

    def select(self, path: str) -> None:
        """Make ``path`` the selected model and tell every widget."""
        if path != self.path:
            self.path = str(path)
            self.selected.emit(self.path)

    def load(self, path: str | None = None) -> Model:
        """Load (and cache) ``path`` or the selected model (the bundled one if none).

        A file changed on disk is read again; raises ``ModelFileError`` / ``OSError``.
        """

        p = Path(path or self.path or resolve_model_path(None))
        key = (str(p), p.stat().st_mtime if p.exists() else 0.0)
        if key not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k[0] != key[0]}
            self._cache[key] = load_model(p)
        return self._cache[key]

    def remember(self, path: str, model: Model) -> None:
        """Cache a model just saved at ``path`` (Fine-tune has it in memory): selecting it then
        reads no file on the GUI thread."""

        p = Path(path)
        key = (str(p), p.stat().st_mtime)
        self._cache = {k: v for k, v in self._cache.items() if k[0] != key[0]}
        self._cache[key] = model

    def forget(self, path: str) -> None:
        """Drop a deleted model from the cache (and from the selection)."""
        self._cache = {k: v for k, v in self._cache.items() if k[0] != str(path)}
        if self.path == str(path):
            self.path = None

    def changed(self) -> None:
        self.registry_changed.emit()


_STATES: weakref.WeakKeyDictionary[Any, ModelState] = weakref.WeakKeyDictionary()


def model_state(viewer: Any) -> ModelState:
    """The one :class:`ModelState` of ``viewer`` (created on first use)."""
    state = _STATES.get(viewer)
    if state is None:
        state = _STATES[viewer] = ModelState()
    return state
