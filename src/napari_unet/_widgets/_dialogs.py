"""The model file dialogs of both docks (kept apart so tests can replace them)."""

from __future__ import annotations

from qtpy.QtWidgets import QFileDialog, QWidget

MODEL_FILE_FILTER = "napari-unet model (*.pt);;All files (*)"


def ask_open_model(parent: QWidget) -> str | None:
    """A model file to load or import, or None when the user cancelled."""
    path, _ = QFileDialog.getOpenFileName(parent, "Load a napari-unet model", "", MODEL_FILE_FILTER)
    return path or None


def ask_save_model(parent: QWidget, title: str, name: str) -> str | None:
    """Where to write a model (``name`` proposed), or None when the user cancelled."""
    path, _ = QFileDialog.getSaveFileName(parent, title, name, MODEL_FILE_FILTER)
    return path or None
