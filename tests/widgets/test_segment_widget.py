"""The Segment widget: its pure decision helpers (no Qt), then the widget in a napari viewer.

Widget tests use a tiny random model (see conftest) so that a run takes well under a
second; what they check is the plumbing: layers, scale, undo, edits kept, Stop, errors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_unet._widgets import _plan
from napari_unet._widgets._plan import SCOPE_SLICE, SCOPE_STACK

# --------------------------------------------------------------------------- pure helpers


def test_axes_from_axis_labels() -> None:
    assert _plan.axes_from_labels(("t", "z", "y", "x"), 4) == "TZYX"
    assert _plan.axes_from_labels(("time", "y", "x"), 3) == "TYX"
    assert _plan.axes_from_labels(("-2", "-1"), 2) is None  # napari's defaults name nothing
    assert _plan.axes_from_labels(("y", "y"), 2) is None
    assert _plan.axes_from_labels(("y", "x"), 3) is None


def test_layer_axes_prefers_hint_then_labels() -> None:
    assert _plan.layer_axes((8, 64, 64), False, ("0", "1", "2"), "TYX") == "TYX"
    assert _plan.layer_axes((8, 64, 64), False, ("t", "y", "x"), None) == "TYX"
    assert _plan.layer_axes((64, 64, 3), True, ("y", "x"), None) == "YXC"


def test_channel_row_loose_for_segment_strict_for_finetune() -> None:
    assert _plan.channel_axis("cyx", (3, 8, 8), strict=False) == 0
    assert _plan.channel_axis("YXS", (8, 8, 3), strict=True) == 2
    assert _plan.channel_axis("ZYX", (3, 8, 8), strict=False) is None
    assert _plan.channel_axis("CYX", (8, 8), strict=False) is None, "one letter per dimension"
    assert _plan.channel_axis("CCX", (3, 8, 8), strict=False) == 0, "Segment does not validate"
    assert _plan.channel_axis("CCX", (3, 8, 8), strict=True) is None, "Fine-tune does"


def test_plan_current_slice_fixes_stack_axes_only() -> None:
    plan = _plan.plan_segmentation((5, 2, 24, 64, 64), "TCZYX", SCOPE_SLICE, (3.2, 1, 10.7, 5, 5))
    assert plan.source == (3, slice(None), 11, slice(None), slice(None))
    assert plan.axes == "CYX"
    assert plan.target == (3, 11, slice(None), slice(None))
    assert plan.labels_shape == (5, 24, 64, 64)
    assert plan.is_slice
    clipped = _plan.plan_segmentation((4, 32, 32), "ZYX", SCOPE_SLICE, (99.0, 0, 0))
    assert clipped.source[0] == 3


def test_plan_whole_stack_and_plain_2d() -> None:
    plan = _plan.plan_segmentation((24, 64, 64), "ZYX", SCOPE_STACK, (5, 0, 0))
    assert plan.axes == "ZYX" and not plan.is_slice and plan.labels_shape == (24, 64, 64)
    flat = _plan.plan_segmentation((64, 64, 3), "YXC", SCOPE_SLICE, (1, 1))
    assert not flat.is_slice and flat.axes == "YXC" and flat.labels_shape == (64, 64)
    with pytest.raises(ValueError, match="axes"):
        _plan.plan_segmentation((64, 64), "ZYX", SCOPE_STACK, None)


def test_next_free_name() -> None:
    assert _plan.next_free_name("a labels", ["a"]) == "a labels"
    assert _plan.next_free_name("a labels", ["a labels"]) == "a labels [2]"
    assert _plan.next_free_name("a labels", ["a labels", "a labels [2]", "a labels [5]"]) == "a labels [6]"


def test_merge_slice_offsets_ids_and_keeps_other_planes() -> None:
    plan = _plan.plan_segmentation((3, 4, 4), "ZYX", SCOPE_SLICE, (1, 0, 0))
    current = np.zeros((3, 4, 4), np.uint16)
    current[0, 0, 0] = 7
    current[1, 2, 2] = 9  # old result in the plane being replaced: not counted for the offset
    result = np.zeros((4, 4), np.uint16)
    result[1, 1] = 1
    result[3, 3] = 2
    out = _plan.merge_result(current, result, plan)
    assert out[0, 0, 0] == 7 and out[1, 2, 2] == 0
    assert set(np.unique(out[1])) == {0, 8, 9}
    assert current[1, 2, 2] == 9, "the layer's array is not modified"
    fresh = _plan.merge_result(None, result, plan)
    assert fresh.shape == (3, 4, 4) and not fresh[0].any() and not fresh[2].any()
    big = _plan.merge_result(np.full((3, 4, 4), 65534, np.uint16), result, plan)
    assert big.dtype == np.uint32 and big.max() == 65536


def test_fingerprint_detects_edits_per_plane() -> None:
    labels = np.zeros((3, 8, 8), np.uint16)
    labels[:, 2:4, 2:4] = 1
    written = _plan.remember(None, _plan.fingerprint(labels))
    plane1 = _plan.plan_segmentation((3, 8, 8), "ZYX", SCOPE_SLICE, (1, 0, 0)).target
    everything = (slice(None),) * 3
    assert _plan.untouched_since_written(labels, written, everything)
    labels[2, 5, 5] = 4  # the user paints in plane 2
    assert not _plan.untouched_since_written(labels, written, everything)
    assert _plan.untouched_since_written(labels, written, plane1), "plane 1 may still be rewritten"
    labels[1] = 0  # an emptied plane holds nothing to lose
    assert _plan.untouched_since_written(labels, written, plane1)
    assert not _plan.untouched_since_written(labels, {}, plane1), "not ours: never overwrite"


def test_an_earlier_result_brought_back_by_undo_is_still_ours() -> None:
    first = np.zeros((8, 8), np.uint16)
    first[1:3, 1:3] = 1
    second = first.copy()
    second[5:7, 5:7] = 2
    everything = (slice(None), slice(None))
    written = _plan.remember(_plan.remember(None, _plan.fingerprint(first)), _plan.fingerprint(second))
    assert _plan.untouched_since_written(first, written, everything)
    assert _plan.untouched_since_written(second, written, everything)
    first[0, 0] = 3
    assert not _plan.untouched_since_written(first, written, everything)


def test_changed_indices_is_the_diff() -> None:
    a = np.zeros((4, 4), np.uint16)
    b = a.copy()
    b[1, 2] = 3
    idx = _plan.changed_indices(a, b)
    assert [i.tolist() for i in idx] == [[1], [2]]


# --------------------------------------------------------------------------- the widget

WAIT_MS = 60_000


@pytest.fixture
def viewer_widget(make_napari_viewer, tiny_model_path: Path, qtbot):
    """A viewer with the Segment widget docked and the tiny model selected."""
    from napari_unet._widgets.segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    index = widget.model_combo.findData(str(tiny_model_path))
    assert index >= 0, "the saved tiny model is listed"
    widget.models._select_model_at(index)
    yield viewer, widget
    if widget.worker is not None:  # never leave a thread running into the next test
        with qtbot.waitSignal(widget.run_finished, timeout=WAIT_MS):
            widget.stop()


def _blobs(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    from napari_unet.samples.synthetic import nuclei_2d

    s = nuclei_2d(shape=shape[-2:], n_nuclei=8, radius=(6, 10), seed=seed)
    return np.broadcast_to(s.image, shape).copy()


def _run(qtbot, widget) -> None:
    with qtbot.waitSignal(widget.run_finished, timeout=WAIT_MS):
        widget.segment_button.click()
    assert widget.worker is None
    assert widget.segment_button.isEnabled() and not widget.stop_button.isEnabled()


def test_model_defaults_come_from_the_card(viewer_widget) -> None:
    _, widget = viewer_widget
    assert widget.threshold_spin.value() == pytest.approx(0.4)
    assert widget.min_size_spin.value() == 3
    assert widget.model_combo.itemText(widget.model_combo.count() - 1) == "Load from file..."
    assert widget.segment_button.text() == "Segment" and widget.stop_button.text() == "Stop"


def test_layer_chooser_follows_the_layer_list(viewer_widget) -> None:
    viewer, widget = viewer_widget

    def names() -> list[str]:
        return [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())]

    assert names() == [] and not widget.segment_button.isEnabled()
    a = viewer.add_image(np.zeros((32, 32)), name="a")
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="not an image")
    viewer.add_image(np.zeros((32, 32)), name="b")
    assert names() == ["a", "b"] and widget.segment_button.isEnabled()
    assert widget.selected_image().name == "a", "adding a layer keeps the user's choice"
    a.name = "renamed"
    assert names() == ["renamed", "b"]
    assert widget.selected_image().name == "renamed"
    viewer.layers.remove("renamed")
    assert names() == ["b"] and widget.selected_image().name == "b"


def test_segment_2d_writes_labels_with_the_image_scale(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    viewer.add_image(_blobs((128, 160)), name="cells", scale=(0.5, 0.25), translate=(10, 20))
    widget.threshold_spin.setValue(0.3)
    widget.min_size_spin.setValue(2)
    assert widget.scope_combo.isHidden(), "no scope choice for a 2D image"
    _run(qtbot, widget)
    labels = viewer.layers["cells labels"]
    assert labels.data.shape == (128, 160)
    assert labels.data.dtype.kind in "ui"
    assert tuple(labels.scale) == (0.5, 0.25)
    assert tuple(labels.translate) == (10, 20)
    assert "objects" in widget.status_label.text()


def test_a_new_labels_layers_tool_overlays_are_built_when_their_mode_is_chosen(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    viewer.add_image(_blobs((64, 64)), name="cells")
    _run(qtbot, widget)
    layer = viewer.layers["cells labels"]
    visuals = viewer.window._qt_viewer.canvas._layer_overlay_to_visual.get(layer, {})
    polygon, brush = layer._overlays["polygon"], layer._overlays["brush_stroke"]
    assert polygon not in visuals and brush not in visuals, "no overlay visual until it is used"
    layer.mode = "polygon"
    assert polygon.visible and polygon.enabled and polygon in visuals
    assert visuals[polygon]._on_mouse_press in layer.mouse_drag_callbacks
    layer.mode = "paint"
    assert brush.visible and brush in visuals and not polygon.enabled
    layer.mode = "pan_zoom"
    assert polygon.visible and brush.visible, "built once, kept"


def test_diameter_spin_sets_the_predict_config(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    assert widget.diameter_spin.value() == 0 and widget.params.predict_config().diameter is None
    widget.diameter_spin.setValue(40)
    assert widget.params.predict_config().diameter == pytest.approx(40)
    viewer.add_image(_blobs((96, 112)), name="cells")
    _run(qtbot, widget)
    assert viewer.layers["cells labels"].data.shape == (96, 112), "labels keep the image's size"
    assert "object size" not in widget.status_label.toolTip(), "a given diameter is not estimated"
    widget.diameter_spin.setValue(0)
    assert widget.params.predict_config().diameter is None
    assert widget.diameter_spin.specialValueText() == "auto"
    assert widget.params.predict_config().accurate is False
    widget.params.accurate.value = True
    assert widget.params.predict_config().accurate is True
    widget.params.accurate.value = False
    _run(qtbot, widget)
    # the estimate (or why there is none) in the tooltip, and in a few words in the status line
    assert "object size" in widget.status_label.toolTip()
    assert "objects in 'cells labels'" in widget.status_label.text()
    assert "object" in widget.status_label.text().split(";")[-1], widget.status_label.text()


def test_rerun_updates_in_place_with_one_undo_step(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    viewer.add_image(_blobs((96, 96)), name="cells")
    widget.threshold_spin.setValue(0.2)
    _run(qtbot, widget)
    layer = viewer.layers["cells labels"]
    first = np.array(layer.data)
    widget.threshold_spin.setValue(0.8)
    _run(qtbot, widget)
    assert len(viewer.layers) == 2, "no second labels layer"
    assert viewer.layers["cells labels"] is layer
    second = np.array(layer.data)
    assert not np.array_equal(first, second), "the tiny model's output depends on the threshold"
    layer.undo()
    assert np.array_equal(layer.data, first), "Ctrl+Z brings back the previous result"
    _run(qtbot, widget)
    assert len(viewer.layers) == 2, "an undone result is ours, not a user edit"
    assert np.array_equal(layer.data, second)


def test_edited_labels_are_kept_and_a_new_layer_written(viewer_widget, qtbot, notes) -> None:
    viewer, widget = viewer_widget
    viewer.add_image(_blobs((96, 96)), name="cells")
    _run(qtbot, widget)
    layer = viewer.layers["cells labels"]
    layer.paint((40, 40), 99, refresh=False)  # a user correction
    edited = np.array(layer.data)
    _run(qtbot, widget)
    assert np.array_equal(layer.data, edited), "the user's edit survives"
    assert "cells labels [2]" in viewer.layers
    assert any("cells labels [2]" in n for n in notes["info"])
    # the next run updates the new layer, not the edited one
    _run(qtbot, widget)
    assert [lyr.name for lyr in viewer.layers] == ["cells", "cells labels", "cells labels [2]"]


def test_a_foreign_layer_with_our_name_is_not_overwritten(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    viewer.add_image(_blobs((64, 64)), name="cells")
    mine = np.ones((64, 64), np.uint8)
    viewer.add_labels(mine.copy(), name="cells labels")
    _run(qtbot, widget)
    assert np.array_equal(viewer.layers["cells labels"].data, mine)
    assert "cells labels [2]" in viewer.layers


def test_current_slice_of_a_zstack(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    viewer.add_image(_blobs((6, 64, 64)), name="stack", scale=(3.0, 1.0, 1.0))
    assert widget.axes_edit.text() == "ZYX"
    assert not widget.scope_combo.isHidden()
    widget.scope_combo.setCurrentText(SCOPE_SLICE)
    widget.threshold_spin.setValue(0.2)
    viewer.dims.set_current_step(0, 2)
    _run(qtbot, widget)
    layer = viewer.layers["stack labels"]
    assert layer.data.shape == (6, 64, 64)
    assert tuple(layer.scale) == (3.0, 1.0, 1.0)
    filled = [z for z in range(6) if layer.data[z].any()]
    assert filled == [2]
    viewer.dims.set_current_step(0, 4)
    _run(qtbot, widget)
    assert viewer.layers["stack labels"] is layer
    assert [z for z in range(6) if layer.data[z].any()] == [2, 4]
    assert not set(np.unique(layer.data[2])[1:]) & set(np.unique(layer.data[4])[1:]), "new ids per slice"
    layer.undo()
    assert [z for z in range(6) if layer.data[z].any()] == [2], "Ctrl+Z takes back the slice"


def test_whole_stack_of_a_zstack(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    viewer.add_image(_blobs((4, 64, 64)), name="stack", scale=(3.0, 1.0, 1.0))
    widget.scope_combo.setCurrentText(SCOPE_STACK)
    _run(qtbot, widget)
    layer = viewer.layers["stack labels"]
    assert layer.data.shape == (4, 64, 64) and tuple(layer.scale) == (3.0, 1.0, 1.0)


def test_multichannel_image_asks_for_a_channel(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    two = np.stack([np.zeros((64, 64), np.uint16), _blobs((64, 64))])
    viewer.add_image(two, name="two channels")
    assert widget.channel_spin.isHidden(), "a 3D array is a z-stack until the user says otherwise"
    widget.axes_edit.setText("CYX")
    assert not widget.channel_spin.isHidden() and widget.channel_spin.maximum() == 1
    assert widget.scope_combo.isHidden()
    widget.channel_spin.setValue(1)
    _run(qtbot, widget)
    assert viewer.layers["two channels labels"].data.shape == (64, 64)


def test_rgb_image(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    rgb = np.repeat((_blobs((64, 64)) // 8).astype(np.uint8)[..., None], 3, axis=-1)
    viewer.add_image(rgb, name="rgb", rgb=True, scale=(2.0, 2.0))
    assert widget.axes_edit.text() == "YXC"
    assert not widget.channel_spin.isHidden()
    _run(qtbot, widget)
    layer = viewer.layers["rgb labels"]
    assert layer.data.shape == (64, 64) and tuple(layer.scale) == (2.0, 2.0)


def test_stop_writes_nothing(viewer_widget, qtbot) -> None:
    viewer, widget = viewer_widget
    viewer.add_image(_blobs((1024, 1024)), name="big")  # many tiles: Stop lands mid-run
    with qtbot.waitSignal(widget.run_finished, timeout=WAIT_MS):
        widget.segment_button.click()
        assert widget.stop_button.isEnabled() and not widget.segment_button.isEnabled()
        widget.stop_button.click()
        assert not widget.stop_button.isEnabled()
    assert "big labels" not in viewer.layers
    assert widget.segment_button.isEnabled() and not widget.stop_button.isEnabled()
    assert "stopped" in widget.status_label.text()


def test_error_in_the_worker_is_a_notification(viewer_widget, qtbot, notes) -> None:
    viewer, widget = viewer_widget
    bad = _blobs((64, 64)).astype(np.float32)
    bad[3, 3] = np.nan
    viewer.add_image(bad, name="bad")
    _run(qtbot, widget)
    assert len(notes["error"]) == 1 and "NaN" in notes["error"][0]
    assert "\n" not in notes["error"][0]
    assert "bad labels" not in viewer.layers


def test_bad_axes_are_refused_before_running(viewer_widget, notes) -> None:
    viewer, widget = viewer_widget
    viewer.add_image(np.zeros((32, 32)), name="img")
    widget.axes_edit.setText("ZYX")
    widget.segment_button.click()
    assert widget.worker is None and len(notes["error"]) == 1


def test_bad_model_file_is_an_error_not_a_crash(viewer_widget, qtbot, notes, tmp_path, monkeypatch) -> None:
    viewer, widget = viewer_widget
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"this is not a model")
    monkeypatch.setattr(widget.models, "_ask_model_file", lambda: str(bad))
    before = widget.model_combo.currentText()
    widget.models._on_model_activated(widget.model_combo.count() - 1)  # the "Load from file..." item
    assert len(notes["error"]) == 1 and "broken.pt" in notes["error"][0]
    assert widget.model_combo.currentText() == before, "the chooser stays on a usable model"
    viewer.add_image(_blobs((64, 64)), name="cells")
    _run(qtbot, widget)
    assert "cells labels" in viewer.layers


def test_load_a_good_model_file(viewer_widget, tmp_path, tiny_model_path, monkeypatch) -> None:
    import shutil

    _, widget = viewer_widget
    other = tmp_path / "elsewhere" / "mine.pt"
    other.parent.mkdir()
    shutil.copy(tiny_model_path, other)
    monkeypatch.setattr(widget.models, "_ask_model_file", lambda: str(other))
    widget.models._on_model_activated(widget.model_combo.count() - 1)
    assert widget.model_combo.currentData() == str(other)
    assert "mine.pt" in widget.model_combo.currentText()
    assert widget.selected_model().name == "tiny"


def test_full_indices_place_a_plane_in_the_stack() -> None:
    plan = _plan.plan_segmentation((3, 4, 5), "ZYX", SCOPE_SLICE, (2, 0, 0))
    labels = np.zeros((3, 4, 5), np.uint16)
    values = np.zeros((4, 5), np.uint16)
    values[1, 3] = 6
    local = np.nonzero(values)
    idx = _plan.full_indices(plan.target, local)
    labels[idx] = values[local]
    assert labels[2, 1, 3] == 6 and labels.sum() == 6


def test_a_runtime_error_in_the_worker_still_reaches_the_user(
    viewer_widget, qtbot, notes, monkeypatch
) -> None:
    """superqt drops RuntimeError (torch's out-of-memory type) silently; the job converts it."""
    from napari_unet.engine import predict

    def boom(*args, **kwargs):
        raise RuntimeError("out of memory: tried to allocate 9 GiB\nlong torch traceback text")
        yield  # pragma: no cover - makes this a generator like iter_segment

    monkeypatch.setattr(predict, "iter_segment", boom)
    viewer, widget = viewer_widget
    viewer.add_image(_blobs((64, 64)), name="cells")
    _run(qtbot, widget)
    assert notes["error"] == ["napari-unet: segmentation failed: out of memory: tried to allocate 9 GiB"]
    assert "cells labels" not in viewer.layers


def test_labels_take_the_image_units(viewer_widget, qtbot) -> None:
    """A calibrated image (e.g. from the reader) gives calibrated labels: napari would otherwise
    warn that units are inconsistent and drop them from the rendering."""
    viewer, widget = viewer_widget
    viewer.add_image(_blobs((64, 64)), name="cal", scale=(0.5, 0.5), units=("um", "um"))
    _run(qtbot, widget)
    labels = viewer.layers["cal labels"]
    assert tuple(str(u) for u in labels.units) == tuple(str(u) for u in viewer.layers["cal"].units)
    assert tuple(labels.scale) == (0.5, 0.5)


def test_the_form_keeps_the_cards_seed_and_waist_settings(qtbot) -> None:
    """Threshold and min size come from the form; the card's other settings (the bundled model's
    waist cutting) must reach the engine too, or the widget would segment worse than the CLI."""
    from napari_unet._widgets._params import SegmentParams
    from napari_unet.models.model_file import Model
    from napari_unet.models.unet import UNet, UNetConfig

    card = {"postprocess": {"threshold": 0.6, "seed_threshold": 0.45, "min_size": 30, "split_depth": 1.0}}
    model = Model(UNet(UNetConfig(base=4, depth=1)), card)
    form = SegmentParams(["plane"])
    form.apply_card(card)
    form.threshold.native.setValue(0.7)
    params = form.postprocess_params(model)
    assert (params.threshold, params.min_size) == (0.7, 30)
    assert (params.seed_threshold, params.split_depth) == (0.45, 1.0)
