"""Segment's model menu: import, export, delete a saved version, roll back; shared model state."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def widget(make_napari_viewer):
    from napari_unet._widgets.segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w, name="Segment")
    return w


def _names(widget) -> list[str]:
    return [widget.model_combo.itemText(i) for i in range(widget.model_combo.count())]


def test_import_export_delete_and_roll_back(widget, tiny_model_path: Path, tmp_path: Path, notes) -> None:
    from napari_unet.models.registry import list_models

    tiny_model_path.rename(tmp_path / "shared.pt")  # a file from a colleague, not yet a saved model
    widget.models._refresh_models()
    assert widget.models.import_model_file(tmp_path / "shared.pt")
    assert widget.model_combo.currentText() == "shared"
    assert widget.model_state.path == str(widget.model_combo.currentData())
    assert any(i.name == "shared" for i in list_models())

    out = widget.models.export_selected(tmp_path / "copy.pt")
    assert out is not None and out.is_file()

    assert widget.models.delete_selected(confirm=False)
    assert "shared" not in _names(widget)
    assert widget.models._model_index == 0 and widget.model_combo.currentText() == "nuclei (bundled)"
    assert widget.model_state.path == str(widget.model_combo.itemData(0))
    assert not notes["error"]


def test_the_bundled_model_cannot_be_deleted(widget, notes) -> None:
    widget.models.use_bundled()
    assert not widget.models.delete_selected(confirm=False)
    assert notes["warning"] and "only saved versions" in notes["warning"][0]
    widget.models._update_model_actions()
    assert not widget.models.delete_action.isEnabled()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch, about our hand-made pickle
def test_importing_a_malicious_file_is_refused(widget, tmp_path: Path, notes) -> None:
    import pickle

    class Boom:
        def __reduce__(self):
            return (exec, ("open('pwned', 'w').write('x')",))

    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"weights": Boom()}))
    assert not widget.models.import_model_file(bad)
    assert notes["error"] and notes["error"][0].count("\n") == 0 and "evil.pt" in notes["error"][0]
    assert not Path("pwned").exists()
    assert _names(widget)[0] == "nuclei (bundled)" and len(_names(widget)) == 2  # + "Load from file..."


def test_a_version_saved_elsewhere_is_listed_and_selected(widget, tiny_model_path: Path) -> None:
    """What Fine-tune does after saving: the state says so and Segment follows."""
    widget.model_state.changed()
    assert "tiny" in _names(widget)
    widget.model_state.select(str(tiny_model_path))
    assert widget.model_combo.currentText() == "tiny"
    assert widget.selected_model().config.base == 4


def test_a_model_deleted_elsewhere_falls_back_to_the_bundled_one(widget, tiny_model_path: Path) -> None:
    widget.model_state.changed()
    widget.model_state.select(str(tiny_model_path))
    tiny_model_path.unlink()  # e.g. `napari-unet models delete tiny` in a terminal
    widget.model_state.changed()
    assert widget.model_combo.currentText() == "nuclei (bundled)"
    assert widget.model_state.path == str(widget.model_combo.itemData(0))
