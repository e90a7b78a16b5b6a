"""What becomes of a fine-tuned model: saved as a new version and selected in Segment, or,
when saving failed (a full disk, an unwritable folder), kept in memory for Save again, Save
elsewhere (a file of the user's choice, then selected in Segment) or Export (a copy only).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from napari_unet.models.registry import ModelSaveError, save_version
from napari_unet.training.card import finetune_advice

from . import _dialogs, _notify
from . import _finetune_plan as fp

if TYPE_CHECKING:
    from napari_unet.models.model_file import Model

    from ._model_state import ModelState


class ResultActions(QWidget):
    """The last fine-tuned model and the buttons for it: Segment again, Save again, Save elsewhere, Export."""

    def __init__(self, state: ModelState, status: QLabel) -> None:
        super().__init__()
        self.model_state = state
        self._status = status  # the dock's status line
        self.model: Model | None = None  # the last fine-tuned model (kept when saving failed)
        self.segment_again_button = QPushButton("Segment again")
        self.segment_again_button.setToolTip(
            "Segment the image with the fine-tuned model (edited labels are kept: a new layer is written)"
        )
        self.segment_again_button.setEnabled(False)
        self.save_again_button = QPushButton("Save again")
        self.save_again_button.setToolTip("Try again to save the fine-tuned model in the model folder")
        self.save_elsewhere_button = QPushButton("Save elsewhere...")
        self.save_elsewhere_button.setToolTip(
            "Write the fine-tuned model to a file of your choice and use it in Segment"
        )
        self.export_button = QPushButton("Export...")
        self.export_button.setToolTip("Write the last fine-tuned model to a file")
        self.export_button.setEnabled(False)
        self.save_again_button.setVisible(False)
        self.save_elsewhere_button.setVisible(False)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.segment_again_button)
        row.addWidget(self.save_again_button)
        row.addWidget(self.save_elsewhere_button)
        row.addWidget(self.export_button)
        # bound methods, not lambdas: a lambda holding ``self`` keeps the viewer alive after closing
        self.save_again_button.clicked.connect(self._on_save_again_clicked)
        self.save_elsewhere_button.clicked.connect(self._on_save_elsewhere_clicked)
        self.export_button.clicked.connect(self._on_export_clicked)

    def clear(self) -> None:
        """A new run starts: no result yet."""
        self.model = None
        self.segment_again_button.setEnabled(False)
        self._offer_saving(False)

    def _offer_saving(self, offer: bool) -> None:
        """Show or hide the buttons that save a model kept in memory after a failed save."""
        self.save_again_button.setVisible(offer)
        self.save_elsewhere_button.setVisible(offer)

    def finished(self, outcome: fp.FinetuneOutcome) -> None:
        """A run returned its model: say how it went, and whether it was saved."""
        self.model = outcome.model
        self.export_button.setEnabled(True)
        card = outcome.model.card
        ft = card.get("finetune") or {}
        how = "stopped" if ft.get("stopped_early") else "done"
        summary = (
            f"{how}: {ft.get('steps', 0)} steps in {ft.get('seconds', 0):.0f} s; {fp.result_summary(card)}"
        )
        advice = finetune_advice(card)  # the core's verdict, the CLI says the same
        if advice:
            summary = f"{summary}. {advice[0].upper()}{advice[1:]}"
        if outcome.saved is not None:
            self._saved(outcome.saved, summary, advice)
        else:
            self._save_failed(outcome.save_error or "unknown error", summary)

    def _saved(self, info: Any, summary: str, advice: str | None = None) -> None:
        if self.model is not None:
            self.model.card["name"] = info.name  # as in the saved file
            with contextlib.suppress(OSError):
                self.model_state.remember(str(info.path), self.model)
        self.model_state.changed()
        self.model_state.select(str(info.path))
        self.segment_again_button.setEnabled(True)
        self._offer_saving(False)
        self._status.setText(f"{summary}. Saved and selected in Segment as '{info.name}'.")
        # one notification (each costs the GUI thread a few ms): a warning when the run did not help
        text = f"fine-tuned model saved as {info.name} ({fp.result_summary(self.model.card)})"
        if advice:
            _notify.warning(f"{text}: {advice}")
        else:
            _notify.info(text)

    def _save_failed(self, error: str, summary: str) -> None:
        """Saving failed: the model stays in memory; one notification says so and what to do."""
        _notify.error(
            f"fine-tuned model not saved ({error}); it is kept in memory: "
            "Save again, Save elsewhere or Export it before closing napari"
        )
        self._offer_saving(True)
        self._status.setText(
            f"{summary}. NOT saved ({error}); kept in memory: Save again, Save elsewhere or Export it."
        )

    def save_result(self) -> bool:
        """Retry saving the last fine-tuned model (after a full disk or unwritable folder)."""

        if self.model is None:
            return False
        try:
            info = save_version(self.model)
        except (ModelSaveError, OSError, ValueError) as exc:
            self._save_failed(fp.one_line(exc), "save failed again")
            return False
        self._saved(info, "saved")
        return True

    def _on_save_again_clicked(self) -> None:
        self.save_result()

    def _on_save_elsewhere_clicked(self) -> None:
        self.save_elsewhere()

    def _on_export_clicked(self) -> None:
        self.export_result()

    def save_elsewhere(self, path: str | Path | None = None) -> Path | None:
        """Write the kept model to a file of the user's choice and select it in Segment.

        The way out when the model folder's disk is full: Segment again then works with the
        file, like a model loaded with "Load from file...".
        """
        if self.model is None:
            return None
        path = path or self._ask_export_path("Save the fine-tuned model")
        if not path:
            return None
        try:
            out = self.model.save(path)
        except OSError as exc:  # Model.save raises ModelSaveError for every write failure
            self._save_failed(exc.strerror or fp.one_line(exc), "save elsewhere failed")
            return None
        with contextlib.suppress(OSError):
            self.model_state.remember(str(out), self.model)
        self.model_state.select(str(out))
        self.segment_again_button.setEnabled(True)
        self._offer_saving(False)
        self._status.setText(f"Saved to {out} and selected in Segment.")
        _notify.info(f"fine-tuned model written to {out} and selected in Segment")
        return out

    def _ask_export_path(self, title: str = "Export the fine-tuned model") -> str | None:
        """The file dialog, apart so tests can replace it."""
        name = f"{self.model.card.get('name', 'model')}.pt" if self.model is not None else "model.pt"
        return _dialogs.ask_save_model(self, title, name)

    def export_result(self, path: str | Path | None = None) -> Path | None:
        """Write the last fine-tuned model to a file of the user's choice."""
        if self.model is None:
            return None
        path = path or self._ask_export_path()
        if not path:
            return None
        try:
            out = self.model.save(path)
        except OSError as exc:  # Model.save raises ModelSaveError for every write failure
            _notify.error(f"cannot export: {exc.strerror or fp.one_line(exc)}")
            return None
        _notify.info(f"model written to {out}")
        return out
