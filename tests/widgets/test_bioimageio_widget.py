"""Segment's ``⋯`` menu and bioimage.io packages: export the selected model as a package (in a worker,
the dock stays usable), import it back through "Import model file...", refuse a foreign one in one line."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import yaml

WAIT_MS = 120_000


@pytest.fixture
def widget(make_napari_viewer, tiny_model_path: Path, qtbot):
    from napari_unet._widgets.segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w, name="Segment")
    w.models._select_model_at(w.model_combo.findData(str(tiny_model_path)))
    yield w
    qtbot.waitUntil(lambda: w.models.export_worker is None, timeout=WAIT_MS)  # no thread left running


def _menu_texts(widget) -> list[str]:
    return [a.text() for a in widget.models.models_button.menu().actions()]


def test_export_as_package_then_import_it_back(widget, qtbot, notes, tmp_path: Path, monkeypatch) -> None:
    from napari_unet.models.registry import load_model

    assert "Export as bioimage.io package..." in _menu_texts(widget)
    out = tmp_path / "tiny.zip"
    monkeypatch.setattr("napari_unet._widgets._dialogs.ask_save_package", lambda parent, name: str(out))
    widget.models.export_package_action.trigger()
    assert widget.models.export_worker is not None and not widget.models.export_package_action.isEnabled()
    qtbot.waitUntil(lambda: widget.models.export_worker is None, timeout=WAIT_MS)
    assert not notes["error"], notes["error"]
    assert notes["info"] == [f"napari-unet: bioimage.io package written to {out}"]
    assert widget.status_label.text() == "bioimage.io package written: tiny.zip"
    with zipfile.ZipFile(out) as zf:
        assert yaml.safe_load(zf.read("rdf.yaml"))["config"]["napari_unet"]["card"]["name"] == "tiny"

    monkeypatch.setattr(widget.models, "_ask_import_file", lambda: str(out))
    widget.models.import_action.trigger()
    assert not notes["error"], notes["error"]
    assert widget.model_combo.currentText() == "tiny-2"  # "tiny" is taken: the import never overwrites
    imported = load_model("tiny-2")
    assert imported.card == {**load_model("tiny").card, "name": "tiny-2"}
    assert widget.model_state.path == str(widget.model_combo.currentData())


def test_a_foreign_package_is_refused_in_one_notification(widget, notes, tmp_path: Path) -> None:
    foreign = tmp_path / "other.zip"
    rdf = {"format_version": "0.5.4", "type": "model", "name": "someone else's", "config": {}}
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("rdf.yaml", yaml.safe_dump(rdf))
    names = [widget.model_combo.itemText(i) for i in range(widget.model_combo.count())]
    assert not widget.models.import_model_file(foreign)
    assert len(notes["error"]) == 1 and "\n" not in notes["error"][0]
    assert "other.zip: " in notes["error"][0] and "not a napari-unet package" in notes["error"][0]
    assert [widget.model_combo.itemText(i) for i in range(widget.model_combo.count())] == names


def test_a_failed_export_is_one_notification_and_the_action_comes_back(
    widget, qtbot, notes, tmp_path: Path, monkeypatch
) -> None:
    from napari_unet.exchange.bioimageio_rdf import PackageError

    def refuse(*args, **kwargs):
        raise PackageError("tiny: only 'same'-padded U-Nets can be exported")

    monkeypatch.setattr("napari_unet._widgets._model_picker.export_bioimageio", refuse)
    widget.models.export_package(tmp_path / "x.zip")
    qtbot.waitUntil(lambda: widget.models.export_worker is None, timeout=WAIT_MS)
    assert notes["error"] == ["napari-unet: cannot export: tiny: only 'same'-padded U-Nets can be exported"]
    assert widget.models.export_package_action.isEnabled()
    assert not (tmp_path / "x.zip").exists()
