"""Segment's model chooser and its ``⋯`` menu: import, export (a .pt or a bioimage.io package), delete
a version, roll back.

The choice is shared through :class:`._model_state.ModelState`, so Fine-tune starts from it
and a model Fine-tune saves shows up (and is selected) here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.qt.threading import create_worker
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QMenu, QMessageBox, QToolButton, QWidget

from napari_unet.exchange.bioimageio_export import export_bioimageio
from napari_unet.exchange.bioimageio_import import import_package, is_package
from napari_unet.models.model_file import ModelFileError
from napari_unet.models.registry import delete_model, export_model, import_model, list_models

from . import _dialogs, _notify
from ._plan import one_line

if TYPE_CHECKING:
    from napari_unet.models.model_file import Model

    from ._model_state import ModelState

LOAD_FROM_FILE = "Load from file..."


class ModelCombo(QComboBox):
    """A combo box that refreshes its items just before it opens (new saved models appear)."""

    about_to_show = Signal()

    def showPopup(self) -> None:
        self.about_to_show.emit()
        super().showPopup()


class ModelPicker(QWidget):
    """The model combo box (saved versions, files loaded, "Load from file...") and its menu."""

    #: a model was selected: its card (for the threshold and min size it was tuned with)
    card_loaded = Signal(object)
    #: something to tell the user in the dock's status line
    problem = Signal(str)

    def __init__(self, state: ModelState) -> None:
        super().__init__()
        self.model_state = state
        self._extra_models: list[tuple[str, str]] = []  # (label, path) loaded from files
        self._model_index = 0
        self.model_combo = ModelCombo()
        self.models_button = QToolButton()
        self.models_button.setText("\u22ef")
        self.models_button.setToolTip("Manage models: import, export, delete a saved version, roll back")
        self.models_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.models_button.setStyleSheet("QToolButton::menu-indicator { image: none; }")  # "⋯" says it
        menu = QMenu(self.models_button)
        self.import_action = menu.addAction("Import model file...")
        self.export_action = menu.addAction("Export selected model...")
        self.export_package_action = menu.addAction("Export as bioimage.io package...")
        self.delete_action = menu.addAction("Delete selected version...")
        self.rollback_action = menu.addAction("Roll back to the bundled model")
        self.models_button.setMenu(menu)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.models_button)

        menu.aboutToShow.connect(self._update_model_actions)
        self.model_combo.activated.connect(self._on_model_activated)
        self.model_combo.about_to_show.connect(self._refresh_models)
        state.registry_changed.connect(self._refresh_models)
        state.selected.connect(self._on_model_selected_elsewhere)
        self.import_action.triggered.connect(lambda: self.import_model_file())
        self.export_action.triggered.connect(lambda: self.export_selected())
        self.export_package_action.triggered.connect(lambda: self.export_package())
        self.export_worker: Any = None  # the bioimage.io export running, if any
        self.delete_action.triggered.connect(lambda: self.delete_selected())
        self.rollback_action.triggered.connect(self.use_bundled)

    def select_initial(self) -> None:
        """List the models and select the shared choice (the bundled model if none)."""
        self._refresh_models()
        start = self.model_combo.findData(self.model_state.path) if self.model_state.path else -1
        self._select_model_at(max(start, 0))

    def _refresh_models(self) -> None:

        current = self.model_combo.currentData()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for info in list_models():
            label = f"{info.name} (bundled)" if info.bundled else info.name
            self.model_combo.addItem(label, str(info.path))
        for label, path in self._extra_models:
            self.model_combo.addItem(label, path)
        self.model_combo.addItem(LOAD_FROM_FILE, None)
        index = self.model_combo.findData(current) if current is not None else -1
        self.model_combo.setCurrentIndex(max(index, 0))
        self._model_index = self.model_combo.currentIndex()
        self.model_combo.blockSignals(False)
        if current is not None and index < 0:  # the selected model was deleted elsewhere
            self._select_model_at(0)

    def _on_model_activated(self, index: int) -> None:
        if self.model_combo.itemData(index) is None:
            self.model_combo.setCurrentIndex(self._model_index)
            path = self._ask_model_file()
            if path:
                self.load_model_file(path)
            return
        self._select_model_at(index)

    def _update_model_actions(self) -> None:
        self.delete_action.setEnabled(self._selected_version() is not None)
        self.export_package_action.setEnabled(self.export_worker is None)
        self.rollback_action.setEnabled(self._model_index != 0)

    def _selected_path(self) -> str | None:
        return self.model_combo.itemData(self._model_index)

    def _selected_version(self) -> str | None:
        """Name of the selected model if it is a saved version (the only kind one may delete)."""

        path = self._selected_path()
        return next((i.name for i in list_models() if not i.bundled and str(i.path) == path), None)

    def import_model_file(self, path: str | Path | None = None) -> bool:
        """Copy a model file into the saved models (checked first) and select it."""

        path = path or self._ask_import_file()
        if not path:
            return False
        try:
            info = import_package(path) if is_package(path) else import_model(path)
        except (ModelFileError, OSError, ValueError) as exc:
            _notify.error(f"cannot import {Path(path).name}: {one_line(exc)}")
            return False
        self.model_state.changed()
        self._select_model_at(self.model_combo.findData(str(info.path)))
        _notify.info(f"imported {Path(path).name} as {info.name}")
        return True

    def export_selected(self, path: str | Path | None = None) -> Path | None:
        """Write the selected model to a file the user picks (to share or archive it)."""

        src = self._selected_path()
        if path is None:
            path = _dialogs.ask_save_model(self, "Export napari-unet model", Path(src).name)
        if not path:
            return None
        try:
            dest = export_model(src, path)
        except (ModelFileError, OSError, ValueError) as exc:
            _notify.error(f"cannot export: {one_line(exc)}")
            return None
        _notify.info(f"model written to {dest}")
        return dest

    def export_package(self, path: str | Path | None = None) -> Any:
        """Write the selected model as a bioimage.io package, in a worker (it runs the net; with
        bioimageio.core installed it also runs bioimage.io's model test). Returns the worker."""

        src = self._selected_path()
        if self.export_worker is not None or src is None:
            return None
        if path is None:
            path = _dialogs.ask_save_package(self, f"{Path(src).stem}.zip")
        if not path:
            return None
        worker = create_worker(export_bioimageio, src, path, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(self._on_package_written)
        worker.errored.connect(self._on_export_errored)
        worker.finished.connect(self._on_export_finished)
        self.export_worker = worker
        self.export_package_action.setEnabled(False)
        self.problem.emit(f"exporting {Path(src).stem} as a bioimage.io package...")
        worker.start()
        return worker

    def _on_package_written(self, dest: Path) -> None:
        _notify.info(f"bioimage.io package written to {dest}")
        self.problem.emit(f"bioimage.io package written: {Path(dest).name}")

    def _on_export_errored(self, exc: BaseException) -> None:
        _notify.error(f"cannot export: {one_line(exc)}")
        self.problem.emit("bioimage.io export failed")

    def _on_export_finished(self) -> None:
        self.export_worker = None
        self.export_package_action.setEnabled(True)

    def delete_selected(self, confirm: bool = True) -> bool:
        """Delete the selected saved version and go back to the bundled model."""

        name = self._selected_version()
        if name is None:
            _notify.warning("only saved versions can be deleted (not the bundled model or a file)")
            return False
        if confirm:
            answer = QMessageBox.question(self, "Delete model", f"Delete the saved model {name!r}?")
            if answer != QMessageBox.StandardButton.Yes:
                return False
        path = self._selected_path()
        try:
            delete_model(name)
        except (OSError, ValueError) as exc:
            _notify.error(f"cannot delete {name}: {one_line(exc)}")
            return False
        self.model_state.forget(path)
        self.model_state.changed()
        self.use_bundled()
        _notify.info(f"deleted {name}; using the bundled model")
        return True

    def use_bundled(self) -> None:
        """Roll back: segment with the bundled model again (saved versions are kept)."""
        self._refresh_models()
        self._select_model_at(0)

    def _ask_model_file(self) -> str | None:
        """The file dialog, apart so tests can replace it."""
        return _dialogs.ask_open_model(self)

    def _ask_import_file(self) -> str | None:
        """The import dialog (model files and bioimage.io packages), apart so tests can replace it."""
        return _dialogs.ask_import_model(self)

    def _on_model_selected_elsewhere(self, path: str) -> None:
        """Fine-tune saved a version (or another widget chose a model): use it from now on."""
        if path == self._selected_path():
            return
        self._refresh_models()
        index = self.model_combo.findData(path)
        if index < 0:  # a file outside the model folder: list it like "Load from file..."
            self.load_model_file(path)
        else:
            self._select_model_at(index)

    def load_model_file(self, path: str | Path) -> bool:
        """Add a model file to the chooser and select it; a bad file is reported, not raised."""

        try:
            model = self.model_state.load(str(path))
        except (ModelFileError, OSError) as exc:
            _notify.error(one_line(exc))
            self.problem.emit("model not loaded")
            return False
        entry = (f"{model.name} ({Path(path).name})", str(Path(path)))
        if entry not in self._extra_models:
            self._extra_models.append(entry)
        self._refresh_models()
        self._select_model_at(self.model_combo.findData(entry[1]))
        return True

    def _select_model_at(self, index: int) -> None:
        """Make ``index`` current and announce its model card (threshold, min size).

        A model that cannot be used (a broken file, bad architecture arguments, NaN weights:
        :meth:`Model.load` checks before it builds anything) is refused in one notification and
        the choice goes back to the model selected before, else to the bundled one.
        """

        if index < 0 or self.model_combo.itemData(index) is None:
            return
        card: dict[str, Any] | None = None
        chosen = index
        for candidate in dict.fromkeys((index, self._model_index, 0)):  # the choice, then fallbacks
            path = self.model_combo.itemData(candidate)
            if path is None:
                continue
            try:
                card = self.model_state.load(path).card
            except (ModelFileError, OSError, MemoryError) as exc:
                if candidate == index:
                    name = self.model_combo.itemText(index)
                    _notify.error(f"cannot use model {name}: {one_line(exc)}")
                    self.problem.emit(f"model not loaded: {one_line(exc)}")
                continue
            chosen = candidate
            break
        self.model_combo.setCurrentIndex(chosen)
        self._model_index = chosen
        self.model_state.select(self.model_combo.itemData(chosen))
        self.card_loaded.emit(card or {})  # no usable model at all: Segment says why when run

    def selected_model(self) -> Model:
        """The chosen model, loaded (cached, shared with Fine-tune); raises ``ModelFileError``."""
        return self.model_state.load(self._selected_path())
