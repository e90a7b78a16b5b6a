"""The Fine-tune widget: its pure helpers (no Qt), the preview hook of the core, then the
widget docked in a napari viewer with a tiny random model (a run is a fraction of a second).

What is checked is the plumbing a user relies on: edited planes are found and only they are
used, reviewed regions restrict training, Stop keeps and saves the result, Segment follows
the new version, errors are one line and leave the widget usable, closing mid-run ends it.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_unet._widgets import _finetune_plan as fp

WAIT_MS = 60_000

# --------------------------------------------------------------------------- pure helpers


def _history(shape: tuple[int, ...], edit) -> list:
    """What napari's Labels ``paint`` event carries for ``edit(layer)``."""
    from napari.layers import Labels

    layer = Labels(np.zeros(shape, np.uint16))
    got: list = []
    layer.events.paint.connect(lambda e: got.append(e.value))
    edit(layer)
    return got


def test_painted_planes_from_brush_fill_and_data_setitem() -> None:
    shape = (5, 32, 32)
    brush = _history(shape, lambda lyr: lyr.paint((2, 10, 10), 3))
    assert [fp.painted_planes(item, shape) for item in brush] == [{(2,)}]

    def fill(lyr) -> None:
        lyr.paint((4, 5, 5), 1)
        lyr.fill((4, 20, 20), 2)

    assert set().union(*(fp.painted_planes(i, shape) for i in _history(shape, fill))) == {(4,)}
    idx = (np.array([1, 3]), np.array([0, 0]), np.array([0, 1]))
    put = _history(shape, lambda lyr: lyr.data_setitem(idx, 7))
    assert fp.painted_planes(put[0], shape) == {(1,), (3,)}
    two = (3, 2, 16, 16)
    assert fp.painted_planes(_history(two, lambda lyr: lyr.paint((1, 1, 8, 8), 5))[0], two) == {(1, 1)}
    assert fp.painted_planes(_history((16, 16), lambda lyr: lyr.paint((8, 8), 5))[0], (16, 16)) == {()}


def test_segment_output_is_not_an_edit() -> None:
    from napari_unet._widgets import _plan

    labels = np.zeros((3, 8, 8), np.uint16)
    labels[1, 2:4, 2:4] = 1
    written = _plan.remember(None, _plan.fingerprint(labels))
    assert fp.is_segment_output(labels, (1,), written)
    labels[1, 5, 5] = 2
    assert not fp.is_segment_output(labels, (1,), written)
    assert not fp.is_segment_output(labels, (1,), None), "labels Segment never wrote are the user's"


def test_planes_axes_and_slices() -> None:
    assert fp.stack_axes("YX") == "" and fp.stack_axes("TZYX") == "TZ"
    with pytest.raises(ValueError, match="YX"):
        fp.stack_axes("YXZ")
    assert fp.plane_name((2, 5), "TZ") == "t=2, z=5" and fp.plane_name((), "") == "image"
    assert fp.planes_to_slices([(3,), (1,)], "Z") == [3, 1]
    assert fp.planes_to_slices([(1, 4)], "ZT") == [(4, 1)], "(t, z) pairs whatever the axis order"


def test_regions_mask_from_shapes() -> None:
    from napari.layers import Shapes

    same = fp.affine_between((1, 1), (0, 0), (1, 1), (0, 0))
    rect = np.array([[10, 20], [10, 70], [50, 70], [50, 20]], float)
    line = np.array([[0, 0], [5, 5]], float)
    r = fp.regions_mask([rect, line], ["rectangle", "line"], same, (64, 96), 2)
    assert r.mask.shape == (64, 96) and r.skipped == 1 and not r.planes
    assert r.mask[30, 40] and not r.mask[5, 40] and not r.mask[30, 80]
    assert 1900 <= r.mask.sum() <= 2200

    # an ellipse from a real Shapes layer, drawn on plane z=2 of a scaled stack
    shapes = Shapes([np.array([[4, 10, 10], [4, 10, 50], [4, 30, 50], [4, 30, 10]])], shape_type="ellipse")
    shapes.scale = (2, 1, 1)  # world z = 8 -> labels plane 2 when the labels have z scale 4
    to_labels = fp.affine_between(shapes.scale, shapes.translate, (4, 1, 1), (0, 0, 0))
    e = fp.regions_mask(list(shapes.data), list(shapes.shape_type), to_labels, (5, 40, 60), 3)
    assert e.mask.shape == (5, 40, 60) and e.planes == {(2,)}
    assert e.mask[2, 20, 30] and not e.mask[2, 11, 11] and not e.mask[1].any()
    assert abs(e.mask.sum() - np.pi * 10 * 20) < 60

    flat = fp.regions_mask([rect], ["polygon"], same, (3, 64, 96), 2)
    assert flat.mask.shape == (64, 96) and not flat.planes, "2D shapes over a stack count on every plane"


def test_preview_window_and_progress() -> None:
    assert fp.preview_window((300, 2000), (150, 1990), 512) == (0, 300, 1488, 2000)
    assert fp.preview_window((1000, 1000), (500, 10), 512) == (244, 756, 0, 512)
    assert fp.progress_fraction(5, 1.0, 10, 100.0) == 0.5
    assert fp.progress_fraction(5, 90.0, None, 100.0) == 0.9
    assert fp.progress_fraction(0, 0.0, None, None) == 0.0
    assert fp.gui_threads(2) == 1 and fp.gui_threads(1) == 1 and fp.gui_threads(8) == 7
    card = {"metrics": {"heldout_f1_before": 0.5, "heldout_f1_after": 0.75, "heldout_objects": 9}}
    summary = fp.result_summary(card)
    assert summary == "held-out F1 0.50 \u2192 0.75 (9 objects)"
    assert "too little" in fp.result_summary({"finetune": {"holdout": "too little annotation"}})


def test_result_advice_tells_the_truth() -> None:
    from napari_unet.training.card import finetune_advice

    def card(before, after, best_step=40, post=None):
        ft = {"best_step": best_step, **({"postprocess": post} if post else {})}
        return {"metrics": {"heldout_f1_before": before, "heldout_f1_after": after}, "finetune": ft}

    assert finetune_advice(card(0.5, 0.75)) is None
    assert "already found most" in finetune_advice(card(0.96, 1.0))  # a good parent can get worse elsewhere
    assert "no gain" in finetune_advice(card(0.0, 0.01))
    assert "did not beat the starting model" in finetune_advice(card(0.3, 0.3, best_step=0))
    assert "still weak" in finetune_advice(card(0.0, 0.3))
    fitted = {"thresholds": "fitted on the held-back annotation", "heldout_f1_best_thresholds": 0.7}
    assert finetune_advice(card(0.0, 0.3, post=fitted)) is None
    assert "0.70 with thresholds fitted" in fp.result_summary(card(0.0, 0.3, post=fitted))
    assert finetune_advice({"finetune": {"holdout": "too little annotation"}}) is None
    scratch = card(0.0, 0.6)
    scratch["finetune"]["start"] = "random weights (the parent found none of your held-back objects)"
    assert "trained from random weights" in fp.result_summary(scratch)


def _tiny():
    import torch

    from napari_unet.models.model_file import Model
    from napari_unet.models.unet import UNet, UNetConfig

    card = {"name": "tiny", "target": "3class-bg-interior-boundary", "postprocess": {"min_size": 3}}
    torch.manual_seed(0)
    return Model(UNet(UNetConfig(base=4, depth=2)).eval(), card=card)


def _blobs(shape: tuple[int, ...], seed: int = 0, n: int = 8):
    from napari_unet.samples.synthetic import nuclei_2d

    s = nuclei_2d(shape=shape[-2:], n_nuclei=n, radius=(6, 10), seed=seed)
    return np.broadcast_to(s.image, shape).copy(), np.broadcast_to(s.labels, shape).copy()


def test_preview_hook_sees_the_training_net_in_eval_mode() -> None:
    """The core calls the preview in its own thread with the current weights, then resumes."""
    from dataclasses import replace

    from napari_unet.training.annotations import samples_from_arrays
    from napari_unet.training.finetune import FINETUNE_DEFAULTS, iter_finetune

    image, labels = _blobs((96, 96))
    model = _tiny()
    samples = samples_from_arrays(image, labels, model)
    cfg = replace(FINETUNE_DEFAULTS, steps=4, time_budget=None, batch_size=2, crop=64)
    target = fp.PreviewTarget((), fp.preview_window((96, 96), (48, 48), 64))
    plane_preview = fp.PlanePreview(image, "YX", None, target)
    modes: list[bool] = []

    def preview(m):
        modes.append(m.net.training)
        return plane_preview(m)

    gen = iter_finetune(model, samples, cfg, device="cpu", holdout=0, preview=preview, preview_every=0.0)
    steps = []
    while True:
        try:
            steps.append(next(gen))
        except StopIteration:
            break
    shown = [s.preview for s in steps if s.preview is not None]
    assert len(shown) == 4 and modes == [False] * 4
    assert shown[0].window == (16, 80, 16, 80) and shown[0].labels.shape == (64, 64)
    assert model.net.training is False


def test_job_restores_threads_and_returns_a_model_it_cannot_save(tmp_path, monkeypatch) -> None:
    import torch

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the model folder should be")
    monkeypatch.setenv("NAPARI_UNET_MODEL_DIR", str(blocker / "models"))
    image, labels = _blobs((96, 96))
    req = fp.FinetuneRequest(image, labels, "YX", None, None, None, None, None, 2, 1e-3, "img")
    done = threading.Event()
    before = torch.get_num_threads()
    gen = fp.finetune_job(_tiny(), req, threading.Event(), done=done, threads=1)
    items = []
    while True:
        try:
            items.append(next(gen))
        except StopIteration as end:
            outcome = end.value
            break
    assert isinstance(items[0], fp.Prepared) and items[0].annotated_objects == 8
    assert outcome.saved is None and "cannot save" in outcome.save_error
    assert outcome.model.card["finetune"]["steps"] == 2, "the trained model is returned, not lost"
    assert torch.get_num_threads() == before and done.is_set()


# --------------------------------------------------------------------------- the widget


# ``docked`` (Segment and Fine-tune in one viewer, the tiny model selected): tests/widgets/conftest.py


def _segment(qtbot, seg) -> None:
    with qtbot.waitSignal(seg.run_finished, timeout=WAIT_MS):
        seg.segment_button.click()


def _finetune(qtbot, ft, steps: int = 2) -> None:
    ft.steps_spin.setValue(steps)
    with qtbot.waitSignal(ft.run_finished, timeout=WAIT_MS):
        ft.finetune_button.click()
    assert ft.worker is None and ft.finetune_button.isEnabled() and not ft.stop_button.isEnabled()


def test_finetune_stop_saves_a_version_that_segment_selects(docked, qtbot, notes, model_dir) -> None:
    viewer, seg, ft = docked
    image, _ = _blobs((192, 192), n=14)
    viewer.add_image(image, name="cells")
    _segment(qtbot, seg)
    labels = viewer.layers["cells labels"]
    assert ft.selected_image().name == "cells" and ft.selected_labels() is labels
    assert not ft.planes_list.isVisible(), "no plane list for a 2D image"
    labels.paint((60, 60), 40)  # a correction, as the brush makes it

    ft.budget_spin.setValue(60)
    ft.steps_spin.setValue(0)
    ft.lr_spin.setValue(0.002)
    ft.finetune_button.click()
    assert ft.worker is not None and not ft.finetune_button.isEnabled() and ft.stop_button.isEnabled()
    qtbot.waitUntil(
        lambda: ft.progress._latest is not None and ft.progress._latest.step >= 3, timeout=WAIT_MS
    )
    with qtbot.waitSignal(ft.run_finished, timeout=WAIT_MS):
        ft.stop_button.click()
    assert notes["error"] == [], notes

    saved = sorted(p for p in model_dir.glob("*.pt") if p.name != "tiny.pt")
    assert len(saved) == 1 and saved[0].stem.startswith("tiny-ft-")
    assert ft.model_state.path == str(saved[0])
    assert seg.model_combo.currentData() == str(saved[0]), "Segment now uses the new version"
    assert seg.model_combo.findData(str(saved[0])) >= 0
    assert ft.model_label.text() == saved[0].stem
    card = ft.result.model.card
    assert card["finetune"]["stopped_early"] and card["finetune"]["lr"] == 0.002
    assert card["parent"]["name"] == "tiny"
    assert "held-out F1" in ft.status_label.text() and saved[0].stem in ft.status_label.text()
    assert len(ft.loss_plot.steps) >= 3 and ft.loss_plot.held, "loss curve with held-out points"
    assert ft.progress_bar.value() == 1000 and ft.segment_again_button.isEnabled()
    assert any("saved as" in n for n in notes["info"] + notes["warning"])  # a warning when it did not help

    # Segment again: the edited layer is kept, the new model writes a new layer
    before = np.asarray(labels.data).copy()
    with qtbot.waitSignal(seg.run_finished, timeout=WAIT_MS):
        ft.segment_again_button.click()
    assert np.array_equal(np.asarray(labels.data), before)
    assert "cells labels [2]" in viewer.layers


def test_no_annotation_is_a_message_not_a_run(docked, qtbot, notes) -> None:
    viewer, seg, ft = docked
    from napari_unet.training.finetune import FINETUNE_DEFAULTS

    assert ft.lr_spin.value() == FINETUNE_DEFAULTS.lr  # the widget offers the core's default
    image, _ = _blobs((96, 96))
    viewer.add_image(image, name="cells")
    ft.finetune_button.click()  # no labels layer yet
    assert ft.worker is None and "labels" in notes["warning"][-1]
    _segment(qtbot, seg)
    ft.finetune_button.click()  # Segment's result, untouched
    assert ft.worker is None and "exactly what Segment wrote" in notes["warning"][-1]
    assert "exactly what Segment wrote" in ft.status_label.text()

    stack, _ = _blobs((3, 64, 64))
    viewer.add_image(stack, name="stack")
    ft.image_combo.setCurrentIndex(ft.image_combo.findText("stack"))
    seg.image_combo.setCurrentIndex(seg.image_combo.findText("stack"))
    seg.scope_combo.setCurrentText("whole stack")
    _segment(qtbot, seg)
    assert ft.selected_labels().name == "stack labels"
    ft.finetune_button.click()
    assert ft.worker is None and "no edited plane" in notes["warning"][-1]

    viewer.add_labels(np.zeros((96, 96), np.uint16), name="empty")  # a foreign, empty layer
    ft.image_combo.setCurrentIndex(ft.image_combo.findText("cells"))
    ft.labels_combo.setCurrentIndex(ft.labels_combo.findText("empty"))
    _finetune(qtbot, ft)
    assert len(notes["error"]) == 1 and "no annotation" in notes["error"][0]
    assert ft.model_state.path.endswith("tiny.pt"), "nothing saved, nothing selected"


def test_edited_planes_of_a_stack_are_tracked_and_used(docked, qtbot, notes) -> None:
    viewer, seg, ft = docked
    stack, truth = _blobs((5, 96, 96))
    viewer.add_image(stack, name="stack")
    seg.scope_combo.setCurrentText("whole stack")
    _segment(qtbot, seg)
    labels = viewer.layers["stack labels"]
    assert ft.planes_list.isVisibleTo(ft) and ft.planes.used_planes() == []

    labels.paint((2, 30, 30), 9)
    qtbot.wait(10)
    assert ft.planes.used_planes() == [(2,)]
    assert [ft.planes_list.item(i).text() for i in range(ft.planes_list.count())] == ["z=2"]

    # Segment re-running one slice writes through data_setitem (a paint event): not an edit
    seg.scope_combo.setCurrentText("current slice")
    viewer.dims.set_current_step(0, 1)
    _segment(qtbot, seg)
    assert ft.planes.used_planes() == [(2,)]

    viewer.dims.set_current_step(0, 4)
    ft.planes.add_current_plane()
    assert ft.planes.used_planes() == [(2,), (4,)]
    ft.planes_list.item(0).setSelected(True)
    ft.planes.remove_selected_planes()
    assert ft.planes.used_planes() == [(4,)]
    labels.paint((0, 30, 30), 9)
    ft.planes.used_planes()
    ft.planes_list.item(0).setCheckState(ft.planes_list.item(0).checkState().__class__.Unchecked)
    assert ft.planes.used_planes() == [(4,)], "an unticked plane is not used"

    labels.data[4] = truth[4]  # a random tiny net's output is one blob: give plane 4 real objects
    _finetune(qtbot, ft)
    assert notes["error"] == [], notes
    assert ft.result.model.card["finetune"]["planes_used"] == ["stack z=4"]


def test_shapes_layer_restricts_training_to_reviewed_regions(docked, qtbot, notes) -> None:
    viewer, _, ft = docked
    image, truth = _blobs((128, 128), n=10)
    viewer.add_image(image, name="cells")
    viewer.add_labels(truth, name="cells labels")  # e.g. loaded ground truth: not Segment's
    rect = np.array([[10, 10], [10, 70], [50, 70], [50, 10]])
    viewer.add_shapes([rect], shape_type="rectangle", name="reviewed")
    viewer.add_shapes([np.array([[0, 0], [9, 9]])], shape_type="line", name="lines only")
    ft.regions_combo.setCurrentIndex(ft.regions_combo.findText("lines only"))
    ft.finetune_button.click()
    assert ft.worker is None and "no rectangle" in notes["error"][-1]

    ft.regions_combo.setCurrentIndex(ft.regions_combo.findText("reviewed"))
    _finetune(qtbot, ft)
    assert len(notes["error"]) == 1, notes
    px = ft.result.model.card["finetune"]["annotated_pixels"]
    assert 2300 <= px <= 2600, f"only the rectangle (about 40 x 60 px) counts, not {px}"


def test_ignore_label_marks_unannotated_pixels(docked, qtbot, notes) -> None:
    viewer, _, ft = docked
    image, truth = _blobs((128, 128), n=10)
    lab = truth.astype(np.int32)
    lab[:, 64:] = 999
    viewer.add_image(image, name="cells")
    viewer.add_labels(lab, name="cells labels")
    ft.ignore_check.setChecked(True)
    ft.ignore_spin.setValue(999)
    _finetune(qtbot, ft)
    assert notes["error"] == [], notes
    assert ft.result.model.card["finetune"]["annotated_pixels"] == 128 * 64


def test_an_error_in_the_worker_leaves_the_widget_usable(docked, qtbot, notes, monkeypatch) -> None:
    """superqt drops RuntimeError (torch's out-of-memory type); the job converts it."""
    from napari_unet.training import finetune as train

    real = train.iter_finetune

    def boom(*args, **kwargs):
        raise RuntimeError("out of memory: tried to allocate 9 GiB\nlong torch traceback")
        yield  # pragma: no cover - a generator like iter_finetune

    viewer, _, ft = docked
    image, truth = _blobs((96, 96))
    viewer.add_image(image, name="cells")
    viewer.add_labels(truth, name="cells labels")
    monkeypatch.setattr(train, "iter_finetune", boom)
    _finetune(qtbot, ft)
    assert notes["error"] == ["napari-unet: fine-tuning failed: out of memory: tried to allocate 9 GiB"]
    assert "error" in ft.status_label.text() and ft.model_state.path.endswith("tiny.pt")
    assert ft.model_state.load().config.base == 4, "the current model still loads"
    monkeypatch.setattr(train, "iter_finetune", real)
    _finetune(qtbot, ft)
    assert len(notes["error"]) == 1 and ft.model_state.path != ft.result.model.source


def test_save_failure_keeps_the_model_to_save_again_or_export(
    docked, qtbot, notes, monkeypatch, tmp_path, model_dir
) -> None:
    from napari_unet.models.model_file import Model

    viewer, _, ft = docked
    image, truth = _blobs((96, 96))
    viewer.add_image(image, name="cells")
    viewer.add_labels(truth, name="cells labels")
    blocker = tmp_path / "full-disk"
    blocker.write_text("x")
    monkeypatch.setenv("NAPARI_UNET_MODEL_DIR", str(blocker / "models"))
    _finetune(qtbot, ft)
    assert len(notes["error"]) == 1 and "not saved" in notes["error"][0]
    assert ft.save_again_button.isVisibleTo(ft) and ft.export_button.isEnabled()
    assert ft.model_state.path.endswith("tiny.pt")
    out = ft.result.export_result(tmp_path / "mine.pt")
    assert Model.load(out).card["finetune"]["steps"] == 2
    monkeypatch.setenv("NAPARI_UNET_MODEL_DIR", str(model_dir))
    assert ft.result.save_result()
    assert ft.model_state.path.startswith(str(model_dir)) and not ft.save_again_button.isVisibleTo(ft)


def test_preview_layer_shows_the_training_model(docked, qtbot, notes, monkeypatch) -> None:
    monkeypatch.setattr(fp, "PREVIEW_EVERY", 0.0)
    viewer, _, ft = docked
    stack, truth = _blobs((3, 96, 96))
    viewer.add_image(stack, name="stack")
    viewer.add_labels(truth, name="stack labels")
    viewer.dims.set_current_step(0, 1)
    ft.planes.add_current_plane()
    active = viewer.layers.selection.active
    _finetune(qtbot, ft, steps=3)
    assert notes["error"] == [], notes
    preview = viewer.layers["stack preview"]
    assert ft.preview.shown >= 2 and preview.data.shape == (3, 96, 96)
    assert viewer.layers.selection.active is active, "the user's active layer is kept"
    assert not preview.data[0].any() and not preview.data[2].any()
    assert [ft.labels_combo.itemText(i) for i in range(ft.labels_combo.count())] == ["stack labels"]


def test_closing_the_viewer_during_training_ends_the_run(
    make_napari_viewer, tiny_model_path, qtbot, model_dir
):
    """napari cancels running workers when its window closes: the run ends, no thread is left."""
    from napari_unet._widgets._model_state import model_state

    viewer = make_napari_viewer()
    model_state(viewer).select(str(tiny_model_path))
    _, ft = viewer.window.add_plugin_dock_widget("napari-unet", "Fine-tune")
    image, truth = _blobs((96, 96))
    viewer.add_image(image, name="cells")
    viewer.add_labels(truth, name="cells labels")
    ft.budget_spin.setValue(600)
    ft.finetune_button.click()
    done = ft.done
    qtbot.waitUntil(lambda: ft.progress._latest is not None, timeout=WAIT_MS)
    viewer.close()
    qtbot.waitUntil(done.is_set, timeout=WAIT_MS)  # the job's clean-up ran (torch threads restored)
    from qtpy.QtCore import QThreadPool

    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=WAIT_MS)


def test_removing_the_dock_during_training_stops_it(docked, qtbot) -> None:
    viewer, _, ft = docked
    image, truth = _blobs((96, 96))
    viewer.add_image(image, name="cells")
    viewer.add_labels(truth, name="cells labels")
    ft.budget_spin.setValue(600)
    ft.finetune_button.click()
    qtbot.waitUntil(lambda: ft.progress._latest is not None, timeout=WAIT_MS)
    with qtbot.waitSignal(ft.run_finished, timeout=WAIT_MS):
        viewer.window.remove_dock_widget(ft)
    assert ft.done.is_set() and ft.result.model is not None


def test_full_collections_are_deferred_while_runs_overlap() -> None:
    """The heap is frozen from the first run's start to the last run's end (see _widgets/_gc)."""
    import gc

    from napari_unet._widgets._gc import defer_full_collections

    assert gc.get_freeze_count() == 0
    first = defer_full_collections()
    assert gc.get_freeze_count() > 0
    second = defer_full_collections()
    first()
    first()  # a second call (finished emitted twice) changes nothing
    assert gc.get_freeze_count() > 0
    second()
    assert gc.get_freeze_count() == 0


def test_a_lazy_time_lapse_is_copied_only_at_its_edited_frames(docked, qtbot, notes, monkeypatch) -> None:
    """A dask movie: only the edited frame is read for training; the card names it by its
    frame in the layer, and the preview still reads the frame on screen."""
    import dask.array as da

    from napari_unet._widgets import _finetune_plan as fp

    viewer, _, ft = docked
    movie, truth = _blobs((6, 96, 96))
    viewer.add_image(da.from_array(movie, chunks=(1, 96, 96)), name="movie", metadata={"axes": "TYX"})
    viewer.add_labels(np.zeros(movie.shape, np.int32), name="movie labels")
    ft.labels_combo.setCurrentText("movie labels")
    ft.axes_edit.setText("TYX")
    labels = viewer.layers["movie labels"]
    labels.paint((3, 30, 30), 9)
    labels.data[3] = truth[3]
    viewer.dims.set_current_step(0, 5)  # the preview follows frame 5, never copied for training
    seen = []
    real = fp.finetune_job

    def spy(base, req, *a, **k):
        seen.append(req)
        return real(base, req, *a, **k)

    monkeypatch.setattr(fp, "finetune_job", spy)
    _finetune(qtbot, ft)
    assert notes["error"] == [], notes
    (request,) = seen
    assert request.image.shape == (1, 96, 96) and request.frames == [3] and request.slices == [0]
    assert ft.result.model.card["finetune"]["planes_used"] == ["movie t=3"]


def test_used_frames_keeps_everything_without_a_time_axis() -> None:
    from napari_unet._widgets._finetune_plan import used_frames

    stack = np.arange(4 * 8 * 8).reshape(4, 8, 8)
    image, _labels, slices, reviewed, frames = used_frames(stack, stack, "ZYX", [1, 2], None)
    assert image.shape == (4, 8, 8) and slices == [1, 2] and frames is None
    tz = np.zeros((3, 2, 8, 8))
    image, _labels, slices, reviewed, frames = used_frames(tz, tz, "TZYX", [(2, 1), (0, 0)], tz > 0)
    assert image.shape == (2, 2, 8, 8) and frames == [0, 2] and slices == [(1, 1), (0, 0)]
    assert reviewed.shape == (2, 2, 8, 8)


def test_request_refusals_say_why_without_a_display() -> None:
    from types import SimpleNamespace

    from napari_unet._widgets._finetune_request import Refusal, TrainingParams, build_request

    def layer(data: np.ndarray, name: str) -> SimpleNamespace:
        return SimpleNamespace(data=data, name=name, multiscale=False)

    params = TrainingParams(time_budget=1.0, steps=None, lr=1e-3, ignore_label=None)
    image, labels = layer(np.zeros((3, 8, 8)), "img"), layer(np.zeros((3, 8, 8), np.uint16), "lab")

    def request(img, lab, axes: str = "ZYX", written=None):
        return build_request(img, lab, axes, 0, params, lambda _: None, "", list, written, lambda: 1)

    with pytest.raises(Refusal, match="choose an image"):
        request(image, None)
    with pytest.raises(Refusal, match="repeat a letter") as bad:
        request(image, labels, "ZZX")
    assert bad.value.error
    with pytest.raises(Refusal, match="needs"):
        request(image, layer(np.zeros((3, 4, 4), np.uint16), "small"))
    with pytest.raises(Refusal, match="no edited plane"):
        request(image, labels, written={})
    from napari_unet._widgets import _plan

    flat = np.zeros((8, 8), np.uint16)
    written = _plan.remember(None, _plan.fingerprint(flat))
    with pytest.raises(Refusal, match="exactly what Segment wrote"):
        request(layer(np.zeros((8, 8)), "img"), layer(flat, "lab"), "YX", written)


def test_preview_writes_redraw_only_their_window(make_napari_viewer, qtbot) -> None:
    """Each preview re-colours just its rectangle (napari's partial update), and what napari
    shows stays what a full refresh would show: the old window cleared, the new one drawn, and
    a window written on a plane not on screen is drawn when that plane is shown."""
    from napari.layers import Labels  # widget tests import napari lazily (test collection stays fast)

    from napari_unet._widgets._preview import PreviewLayer

    viewer = make_napari_viewer(show=True)  # napari's texture exists once the canvas is shown
    labels = viewer.add_labels(np.zeros((2, 300, 300), np.int32), name="cells labels")
    preview = PreviewLayer(viewer)
    preview.begin(labels, "cells")
    layer = preview.layer()
    assert isinstance(layer, Labels) and layer.name == "cells preview"

    def shown_matches_data() -> bool:
        plane = int(viewer.dims.current_step[0])
        return np.array_equal(layer._slice.image.view, layer.colormap._data_to_texture(layer.data[plane]))

    viewer.dims.set_current_step(0, 0)
    qtbot.wait(200)  # drawn once: the layer's texture exists
    refreshes = []
    layer.events.set_data.connect(lambda e: refreshes.append(e))
    preview.show(fp.PreviewResult((0,), (10, 110, 20, 120), np.full((100, 100), 3, np.int32), 0.0))
    preview.show(fp.PreviewResult((0,), (150, 250, 160, 260), np.full((100, 100), 5, np.int32), 0.0))
    assert not layer.data[0, 10:110, 20:120].any() and (layer.data[0, 150:250, 160:260] == 5).all()
    assert shown_matches_data()
    assert refreshes == [], "no whole-layer refresh"
    preview.show(fp.PreviewResult((1,), (0, 100, 0, 100), np.full((100, 100), 7, np.int32), 0.0))
    assert not layer.data[0].any() and shown_matches_data()
    viewer.dims.set_current_step(0, 1)
    assert (layer.data[1, :100, :100] == 7).all() and shown_matches_data()
