"""What the dock tests share: Segment and Fine-tune docked in one viewer with the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

WAIT_MS = 60_000  # ms a test waits for a worker (a run with the tiny model takes a fraction of a second)


@pytest.fixture
def docked(make_napari_viewer, tiny_model_path: Path, qtbot):
    """A viewer with Segment and Fine-tune docked from the manifest, the tiny model selected."""
    from napari_unet._widgets._model_state import model_state

    viewer = make_napari_viewer()
    model_state(viewer).select(str(tiny_model_path))
    _, seg = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    _, ft = viewer.window.add_plugin_dock_widget("napari-unet", "Fine-tune")
    assert seg.model_combo.currentData() == str(tiny_model_path)
    assert ft.model_label.text() == "tiny"
    yield viewer, seg, ft
    for w in (ft, seg):
        if w.worker is not None:  # never leave a thread running into the next test
            with qtbot.waitSignal(w.run_finished, timeout=WAIT_MS):
                w.stop()
