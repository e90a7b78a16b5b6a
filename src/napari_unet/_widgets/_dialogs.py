"""The file dialogs of both docks (kept apart so tests can replace them)."""

from __future__ import annotations

from qtpy.QtWidgets import QFileDialog, QWidget

MODEL_FILE_FILTER = "napari-unet model (*.pt);;All files (*)"
IMPORT_FILTER = "napari-unet model or bioimage.io package (*.pt *.zip);;All files (*)"
PACKAGE_FILTER = "bioimage.io model package (*.zip);;All files (*)"
TABLE_FILTER = "CSV table (*.csv);;All files (*)"


def ask_open_model(parent: QWidget) -> str | None:
    """A model file to load or import, or None when the user cancelled."""
    path, _ = QFileDialog.getOpenFileName(parent, "Load a napari-unet model", "", MODEL_FILE_FILTER)
    return path or None


def ask_import_model(parent: QWidget) -> str | None:
    """A model file or a bioimage.io package napari-unet exported, to import; None when cancelled."""
    path, _ = QFileDialog.getOpenFileName(parent, "Import a model", "", IMPORT_FILTER)
    return path or None


def ask_save_package(parent: QWidget, name: str) -> str | None:
    """Where to write a bioimage.io package (``name`` proposed), or None when the user cancelled."""
    path, _ = QFileDialog.getSaveFileName(parent, "Export as bioimage.io package", name, PACKAGE_FILTER)
    return path or None


def ask_save_model(parent: QWidget, title: str, name: str) -> str | None:
    """Where to write a model (``name`` proposed), or None when the user cancelled."""
    path, _ = QFileDialog.getSaveFileName(parent, title, name, MODEL_FILE_FILTER)
    return path or None


def ask_save_table(parent: QWidget, name: str) -> str | None:
    """Where to write a measurements table (``name`` proposed), or None when the user cancelled."""
    path, _ = QFileDialog.getSaveFileName(parent, "Save the objects table", name, TABLE_FILTER)
    return path or None
