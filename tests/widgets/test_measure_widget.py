"""Measure in the Segment dock: the table lands in the layer's features (matched by label value,
one frame at a time in a time-lapse), the plot and a CSV; lazy layers are measured block by
block; every refusal is one notification."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from napari_unet.engine.measure import measure_labels
from napari_unet.samples.synthetic import nuclei_2d

WAIT_MS = 60_000


@pytest.fixture
def dock(make_napari_viewer, tiny_model_path: Path, qtbot):
    """A viewer with the Segment dock (the tiny model selected) and its Measure panel."""
    from napari_unet._widgets.segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    widget.models._select_model_at(widget.model_combo.findData(str(tiny_model_path)))
    yield viewer, widget
    for worker, done in (
        (widget.worker, widget.run_finished),
        (widget.measure.worker, widget.measure.measured),
    ):
        if worker is not None:  # never leave a thread running into the next test
            with qtbot.waitSignal(done, timeout=WAIT_MS):
                worker.quit()


def _measure(qtbot, widget) -> None:
    with qtbot.waitSignal(widget.measure.measured, timeout=WAIT_MS):
        widget.measure.measure_button.click()
    assert widget.measure.worker is None and widget.measure.measure_button.isEnabled()


def _cells(shape=(160, 192), seed: int = 0, n: int = 25):
    s = nuclei_2d(shape=shape, n_nuclei=n, radius=(6, 11), seed=seed)
    return s.image.astype(np.float32), s.labels.astype(np.uint16)


def test_measure_fills_features_plot_and_a_csv(dock, qtbot, notes, tmp_path, monkeypatch) -> None:
    viewer, widget = dock
    image, labels = _cells()
    ids = np.unique(labels)[1:]
    assert ids.size > 10
    viewer.add_image(image, name="cells", scale=(0.5, 0.5), units=("µm", "µm"))
    layer = viewer.add_labels(labels, name="cells labels", scale=(0.5, 0.5), units=("µm", "µm"))
    viewer.layers.selection.active = viewer.layers["cells"]  # not a Labels layer: the image's result
    _measure(qtbot, widget)

    features = layer.features
    counts = np.bincount(labels.ravel())
    assert len(features) == ids.size
    assert features["index"].tolist() == ids.tolist() == features["label"].tolist()
    assert features["area"].tolist() == counts[ids].tolist()
    np.testing.assert_allclose(features["area_µm2"], counts[ids] * 0.25)
    means = [image[labels == i].mean() for i in ids]
    np.testing.assert_allclose(features["mean_intensity"], means, rtol=1e-5)
    assert "solidity" in features  # in memory: every 2D column
    # napari matches rows by label value: the status under an object shows that object's row
    y, x = np.argwhere(labels == ids[3])[0]
    status = layer.get_status((y * 0.5, x * 0.5), world=True)["coordinates"]
    assert f"area: {counts[ids[3]]}" in status
    assert widget.measure.plot.heights.sum() == ids.size  # a histogram of every object's size
    assert "µm²" in widget.measure.plot.caption
    assert not widget.measure.plot.grab().isNull()  # paints
    assert f"{ids.size} objects measured in 'cells labels' and 'cells'" in widget.measure.status_label.text()
    assert notes["error"] == [] and notes["warning"] == []

    from napari_unet._widgets import _dialogs

    monkeypatch.setattr(_dialogs, "ask_save_table", lambda parent, name: str(tmp_path / "table"))
    assert widget.measure.save_button.isEnabled()
    widget.measure.save_button.click()
    rows = list(csv.DictReader((tmp_path / "table.csv").open()))
    assert [int(r["label"]) for r in rows] == ids.tolist()
    assert [int(r["area"]) for r in rows] == counts[ids].tolist()


def test_the_result_of_segment_is_measured(dock, qtbot) -> None:
    """After Segment, Measure needs no layer choice: the labels written for the image."""
    viewer, widget = dock
    image, _ = _cells(n=12)
    viewer.add_image(image, name="cells")
    with qtbot.waitSignal(widget.run_finished, timeout=WAIT_MS):
        widget.segment_button.click()
    result = viewer.layers["cells labels"]
    viewer.layers.selection.active = viewer.layers["cells"]
    _measure(qtbot, widget)
    ids = np.unique(result.data)
    ids = ids[ids > 0]  # the tiny random model may leave no background
    assert len(result.features) == ids.size > 0
    assert result.features["area"].tolist() == np.bincount(result.data.ravel())[ids].tolist()


def test_a_time_lapse_counts_per_frame_and_features_follow_the_frame(dock, qtbot) -> None:
    viewer, widget = dock
    frames = [_cells((96, 96), seed=s, n=n) for s, n in ((1, 4), (2, 9), (3, 6))]
    movie = np.stack([f[0] for f in frames])
    labels = np.stack([f[1] for f in frames])  # ids restart in every frame, as Segment writes them
    viewer.add_image(movie, name="movie", axis_labels=("t", "y", "x"))
    layer = viewer.add_labels(labels, name="movie labels")
    per_frame = [np.unique(f).size - 1 for f in labels]
    assert len(set(per_frame)) == 3
    _measure(qtbot, widget)

    assert widget.measure.plot.heights.tolist() == per_frame
    assert widget.measure.plot.caption == "objects per frame"
    assert not widget.measure.plot.grab().isNull()  # paints
    assert widget.measure.result.n_objects == sum(per_frame)
    for t in (2, 0, 1):
        viewer.dims.set_current_step(0, t)
        ids = np.unique(labels[t])[1:]
        assert layer.features["index"].tolist() == ids.tolist()
        assert layer.features["frame"].tolist() == [t] * ids.size
        assert layer.features["area"].tolist() == np.bincount(labels[t].ravel())[ids].tolist()


def test_a_lazy_layer_is_measured_block_by_block(dock, qtbot, tmp_path) -> None:
    """A zarr-backed labels layer and a dask image: the block-by-block table, in the worker."""
    import dask.array as da
    import zarr

    viewer, widget = dock
    frames = [_cells((120, 140), seed=s, n=10) for s in (4, 5)]
    image = np.stack([f[0] for f in frames])
    labels = np.stack([f[1] for f in frames]).astype(np.uint32)
    store = zarr.open_array(
        str(tmp_path / "l.zarr"), mode="w", shape=labels.shape, chunks=(1, 32, 32), dtype="u4"
    )
    store[:] = labels
    viewer.add_image(da.from_array(image, chunks=(1, 60, 70)), name="stack", axis_labels=("z", "y", "x"))
    layer = viewer.add_labels(store, name="stack labels")
    _measure(qtbot, widget)

    result = widget.measure.result
    assert result.job.lazy and result.job.axes == "ZYX"
    want = measure_labels(labels, image, axes="ZYX")
    assert "solidity" not in result.table and set(result.table) == set(want)
    for key in want:
        np.testing.assert_allclose(result.table[key], want[key], rtol=1e-6, err_msg=key)
    assert layer.features["area"].tolist() == want["area"].tolist()
    assert "blocks" not in widget.measure.status_label.text()


def test_refusals_are_one_notification_each(dock, qtbot, notes) -> None:
    viewer, widget = dock
    widget.measure.measure_button.click()  # nothing to measure
    viewer.add_image(np.zeros((40, 50), np.float32), name="img")
    viewer.add_labels(np.zeros((40, 60), np.uint8), name="other")
    widget.measure.measure_button.click()  # the selected Labels layer is not the image's shape
    assert widget.measure.worker is None
    assert len(notes["error"]) == 2 and all("\n" not in n for n in notes["error"])
    assert "no labels to measure" in notes["error"][0]
    assert "differ in shape" in notes["error"][1]
    viewer.layers["other"].data = np.zeros((40, 50), np.uint8)
    _measure(qtbot, widget)  # no objects: a warning, nothing to save
    assert notes["warning"] == ["napari-unet: measure: no objects in 'other'"]
    assert not widget.measure.save_button.isEnabled()
    assert len(viewer.layers["other"].features) == 0
