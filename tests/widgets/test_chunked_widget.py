"""Segment widget scopes "current view" and lazy "whole stack" (chunked, labels in a zarr store)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_unet._widgets import _lazy, _plan
from napari_unet._widgets._plan import SCOPE_SLICE, SCOPE_STACK, SCOPE_VIEW

WAIT_MS = 60_000


def test_plan_current_view_crops_the_current_plane() -> None:
    plan = _plan.plan_segmentation((3, 64, 80), "ZYX", SCOPE_VIEW, (1.2, 0, 0), ((10.4, 30), (-5, 50.5)))
    assert plan.source == (1, slice(10, 30), slice(0, 51)) and plan.target == plan.source
    assert plan.axes == "YX" and plan.is_slice and plan.is_crop
    current = np.zeros((3, 64, 80), np.uint16)
    current[1, 0:5, 0:5] = 4  # outside the view: kept, and new ids go above it
    current[0, 0:5, 0:5] = 2
    result = np.zeros((20, 51), np.uint16)
    result[2:6, 2:6] = 1
    merged = _plan.merge_result(current, result, plan)
    assert merged[1, 0, 0] == 4 and merged[0, 0, 0] == 2 and merged[1, 12, 2] == 5
    # the whole plane visible (or no box): the same as the current slice
    whole = _plan.plan_segmentation((3, 64, 80), "ZYX", SCOPE_VIEW, (1, 0, 0), ((0, 64), (0, 80)))
    assert whole == _plan.plan_segmentation((3, 64, 80), "ZYX", SCOPE_SLICE, (1, 0, 0))
    assert _plan.plan_segmentation((64, 80), "YX", SCOPE_VIEW, None, ((4, 8), (0, 80))).source == (
        slice(4, 8),
        slice(None),
    )
    assert SCOPE_VIEW in _plan.SCOPES


def test_lazy_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    da = pytest.importorskip("dask.array")
    assert _lazy.is_lazy(da.zeros((2, 4, 4))) and not _lazy.is_lazy(np.zeros((2, 4, 4)))
    monkeypatch.setenv(_lazy.CACHE_ENV, str(tmp_path))
    path = _lazy.labels_store_path("my image/1.tif")
    assert path.parent == tmp_path and path.name.startswith("my_image_1.tif-") and path.suffix == ".zarr"
    elsewhere = tmp_path / "kept" / "x.ome.zarr"
    elsewhere.mkdir(parents=True)
    assert not _lazy.remove_store(elsewhere) and elsewhere.is_dir(), "only stores in the cache go"
    path.mkdir()
    assert _lazy.remove_store(path) and not path.exists()


@pytest.fixture
def viewer_widget(make_napari_viewer, tiny_model_path: Path, qtbot):
    from napari_unet._widgets.segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    widget.models._select_model_at(widget.model_combo.findData(str(tiny_model_path)))
    yield viewer, widget
    if widget.worker is not None:
        with qtbot.waitSignal(widget.run_finished, timeout=WAIT_MS):
            widget.stop()


def _image(shape: tuple[int, ...]) -> np.ndarray:
    from napari_unet.samples.synthetic import nuclei_2d

    s = nuclei_2d(shape=shape[-2:], n_nuclei=10, radius=(6, 10), seed=1)
    return np.broadcast_to(s.image, shape).copy()


def test_whole_lazy_stack_goes_to_a_zarr_store(viewer_widget, qtbot, tmp_path, monkeypatch) -> None:
    da = pytest.importorskip("dask.array")
    zarr = pytest.importorskip("zarr")
    monkeypatch.setenv(_lazy.CACHE_ENV, str(tmp_path))
    viewer, widget = viewer_widget
    image = _image((3, 96, 80))
    viewer.add_image(da.from_array(image, chunks=(1, 48, 40)), name="lazy", scale=(2.0, 0.5, 0.5))
    widget.axes_edit.setText("ZYX")
    widget.scope_combo.setCurrentText(SCOPE_STACK)
    with qtbot.waitSignal(widget.run_finished, timeout=WAIT_MS):
        widget.segment_button.click()
    labels = viewer.layers["lazy labels"]
    assert isinstance(labels.data, zarr.Array) and labels.data.shape == image.shape
    assert tuple(labels.scale) == (2.0, 0.5, 0.5)
    stores = list(tmp_path.glob("*.ome.zarr"))
    hidden = sorted(p.name for p in tmp_path.glob(".*"))
    assert len(stores) == 1 and hidden == [f".{stores[0].name}.owner"]  # finished: no temp store left
    from napari_unet.engine.predict import segment

    mem = segment(image, model=widget.selected_model(), axes="ZYX", config=widget.params.predict_config())
    assert np.array_equal(np.asarray(labels.data[:]) > 0, mem > 0)
    assert "objects" in widget.status_label.text()
    saved = tmp_path / "saved"
    saved.mkdir()
    labels.save(str(saved / "mine.zarr"), plugin="napari-unet")  # the user keeps a copy
    viewer.layers.remove(labels)
    assert not stores[0].exists(), "a deleted layer's store leaves the cache"
    assert not list(tmp_path.glob(".*")), "and so does its owner record"
    assert (saved / "mine.zarr").is_dir(), "what the user saved elsewhere is untouched"


def test_current_view_segments_only_the_visible_part(viewer_widget, qtbot, monkeypatch) -> None:
    viewer, widget = viewer_widget
    image = _image((3, 96, 80))
    viewer.add_image(image, name="stack")
    widget.axes_edit.setText("ZYX")
    viewer.dims.set_point(0, 1)
    widget.scope_combo.setCurrentText(SCOPE_VIEW)
    monkeypatch.setattr(widget, "_visible_box", lambda layer, axes: ((10.0, 60.0), (5.0, 70.0)))
    with qtbot.waitSignal(widget.run_finished, timeout=WAIT_MS):
        widget.segment_button.click()
    data = np.asarray(viewer.layers["stack labels"].data)
    assert data.shape == image.shape
    inside = np.zeros(image.shape, bool)
    inside[1, 10:60, 5:70] = True
    assert data[inside].any() and not data[~inside].any()
