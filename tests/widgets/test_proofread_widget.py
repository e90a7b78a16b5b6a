"""Proofread dock: clicks in a real viewer add, delete, merge and split, each one undo step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk

CENTRES = [(30, 30), (30, 90), (90, 40), (90, 100)]


def blob_image() -> tuple[np.ndarray, np.ndarray]:
    image = np.zeros((128, 140), np.float32)
    truth = np.zeros(image.shape, np.uint16)
    for i, c in enumerate(CENTRES, 1):
        rr, cc = disk(c, 10, shape=image.shape)
        image[rr, cc] = 1.0
        truth[rr, cc] = i
    return image, truth


@pytest.fixture
def setup(make_napari_viewer, qtbot, blob_model, model_dir: Path):
    from napari_unet._widgets.proofread_widget import ProofreadWidget

    path = blob_model.save(model_dir / "blobs.pt")
    viewer = make_napari_viewer(show=True)
    image, truth = blob_image()
    viewer.add_image(image, name="img")
    labels = truth.copy()
    labels[labels == 3] = 0  # object 3 was missed
    layer = viewer.add_labels(labels, name="img labels")
    w = ProofreadWidget(viewer)
    viewer.window.add_dock_widget(w, name="Proofread")
    w.model_state.select(str(path))
    w.labels_combo.setCurrentIndex(w.labels_combo.findText("img labels"))
    w.image_combo.setCurrentIndex(w.image_combo.findText("img"))
    w.toggle_button.setChecked(True)
    qtbot.waitUntil(lambda: not w.busy and w.session.has_probabilities(()), timeout=20000)
    return viewer, w, layer, truth


def test_add_then_undo_is_one_step_and_counts_as_an_edit(setup, notes):
    _viewer, w, layer, truth = setup
    painted = []
    layer.events.paint.connect(lambda e: painted.append(e))
    w.click((90.0, 40.0))
    new = int(layer.data[90, 40])
    assert new == 5
    added = layer.data == new
    assert (added & (truth == 3)).sum() / (added | (truth == 3)).sum() >= 0.8
    assert len(painted) == 1  # Fine-tune's planes panel listens to this
    layer.undo()
    assert not np.any(layer.data == new)
    assert not notes["error"] and not notes["warning"]


def test_delete_merge_and_split(setup, notes):
    _viewer, w, layer, _truth = setup
    w.click((30.0, 90.0), {"Control"})
    assert not np.any(layer.data == 2)
    layer.undo()
    w.click((30.0, 30.0))  # choose object 1 ...
    w.click((30.0, 90.0))  # ... and merge object 2 into it
    assert not np.any(layer.data == 2) and np.any(layer.data == 1)
    ids_before = set(np.unique(layer.data))
    w.click((30.0, 28.0), {"Shift"})
    w.click((30.0, 92.0), {"Shift"})
    w._on_enter(layer)
    ids_after = set(np.unique(layer.data))
    assert len(ids_after) == len(ids_before) + 1
    assert layer.data[30, 28] != layer.data[30, 92] and layer.data[30, 92] != 0
    assert not notes["error"] and not notes["warning"]


def test_refusals_notify_and_change_nothing(setup, notes):
    _viewer, w, layer, _truth = setup
    before = layer.data.copy()
    w.click((5.0, 5.0))  # background with no support
    w.click((30.0, 30.0), {"Shift"})
    w._on_enter(layer)  # split with one point
    w.click((5.0, 5.0), {"Control"})  # delete on background
    assert np.array_equal(layer.data, before)
    assert len(notes["warning"]) == 3
    assert "no object here" in notes["warning"][0]
    assert "two or more points" in notes["warning"][1]


def test_a_real_mouse_click_on_the_canvas_adds(setup, qtbot):
    from qtpy.QtCore import QPoint, Qt

    viewer, _w, layer, _truth = setup
    viewer.reset_view()
    canvas = viewer.window._qt_viewer.canvas
    x, y = canvas.view.scene.transform.map([40.0, 90.0])[:2]  # scene (x=col, y=row) -> canvas px
    ratio = canvas.native.devicePixelRatio() if hasattr(canvas.native, "devicePixelRatio") else 1.0
    qtbot.mouseClick(canvas.native, Qt.MouseButton.LeftButton, pos=QPoint(round(x / ratio), round(y / ratio)))
    qtbot.waitUntil(lambda: layer.data[90, 40] != 0, timeout=5000)


def test_stop_removes_the_click_tools(setup):
    _viewer, w, layer, _truth = setup
    assert w._on_mouse in layer.mouse_drag_callbacks
    w.toggle_button.setChecked(False)
    assert w._on_mouse not in layer.mouse_drag_callbacks
    before = layer.data.copy()
    w.click((90.0, 40.0))
    assert np.array_equal(layer.data, before)


def test_a_new_model_chosen_in_segment_gives_a_new_session(setup, qtbot, tiny_model_path):
    _viewer, w, _layer, _truth = setup
    old = w.session
    w.model_state.select(str(tiny_model_path))
    qtbot.waitUntil(lambda: not w.busy, timeout=20000)
    assert w.session is not old and w.toggle_button.isChecked()


def test_the_session_uses_the_settings_segment_last_ran_the_image_with(setup, qtbot):
    from napari_unet.engine.config import PredictConfig
    from napari_unet.engine.postprocess import PostprocessParams

    viewer, w, _layer, _truth = setup
    image = viewer.layers["img"]
    params, config = PostprocessParams(threshold=0.3), PredictConfig(diameter=25.0, estimate_size=False)
    w.model_state.segmented_with[image.unique_id] = (params, config, None)
    w.toggle_button.setChecked(False)
    w.toggle_button.setChecked(True)
    qtbot.waitUntil(lambda: not w.busy, timeout=20000)
    # Segment's thresholds, its sizes read at the image's scale (nuclei of 25 px for a 20 px model)
    assert w.session.params == params.for_zoom(20.0 / 25.0)
    assert w.session.config is config
