"""End to end, as a user: dock Segment from the plugin menu, open the sample, click, score.

Uses the bundled model (``src/napari_unet/models/weights/nuclei.pt``, made by
``scripts/train_bundled.py``); skipped with the reason when that file is not there.

Why F1 >= 0.85 at IoU 0.5 on ``nuclei_2d``: the bundled model is trained on DSB 2018 real
nuclei and never sees our synthetic images, so this also checks that the samples look like
fluorescence nuclei. The shipped model scores 0.957 here (bf16 on this CPU; misses are
touching pairs merged, the hard case by design), an early 10-minute checkpoint 0.85;
anything that breaks the plumbing (axes, normalisation, channel, transposed or shifted
labels, wrong layer, card post-processing ignored) scores far lower, so the margin
separates "fp32 on another CPU, slightly different" from "pipeline broken".
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.engine.metrics import match
from napari_unet.models.registry import bundled_model_path

F1_MIN = 0.85
WAIT_MS = 300_000

pytestmark = pytest.mark.skipif(
    not bundled_model_path().is_file(),
    reason=f"bundled weights {bundled_model_path()} not present: "
    "run scripts/train_bundled.py (see its docstring)",
)


def _dock_segment(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    assert widget.segment_button.text() == "Segment"
    assert widget.model_combo.currentText().startswith("nuclei"), "the bundled model is the default"
    return widget


def test_segment_the_2d_sample_like_a_user(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    widget = _dock_segment(viewer)
    viewer.open_sample("napari-unet", "nuclei_2d")
    assert [layer.name for layer in viewer.layers] == ["nuclei_2d", "nuclei_2d ground truth"]
    assert widget.selected_image().name == "nuclei_2d", "the chooser picked up the opened sample"

    widget.segment_button.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)

    labels = viewer.layers["nuclei_2d labels"]
    truth = np.asarray(viewer.layers["nuclei_2d ground truth"].data)
    assert labels.data.shape == truth.shape
    m = match(truth, np.asarray(labels.data), 0.5)
    print(f"nuclei_2d: {m} F1@0.5 {m.f1:.3f}")
    assert m.f1 >= F1_MIN, f"F1@0.5 {m.f1:.3f} < {F1_MIN} ({m})"


def test_segment_a_slice_of_the_3d_sample(make_napari_viewer, qtbot) -> None:
    """The z-stack opens to scale, and 'current slice' fills exactly the plane on screen."""
    viewer = make_napari_viewer()
    widget = _dock_segment(viewer)
    viewer.open_sample("napari-unet", "nuclei_3d")
    image = viewer.layers["nuclei_3d"]
    assert tuple(image.scale) == (3.0, 1.0, 1.0)
    assert widget.axes_edit.text() == "ZYX"
    widget.scope_combo.setCurrentText("current slice")
    viewer.dims.set_current_step(0, 12)
    widget.segment_button.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)

    labels = viewer.layers["nuclei_3d labels"]
    assert labels.data.shape == image.data.shape
    assert tuple(labels.scale) == (3.0, 1.0, 1.0)
    assert [z for z in range(labels.data.shape[0]) if labels.data[z].any()] == [12]
    truth = np.asarray(viewer.layers["nuclei_3d ground truth"].data)[12]
    m = match(truth, np.asarray(labels.data[12]), 0.5)
    print(f"nuclei_3d slice 12: {m} F1@0.5 {m.f1:.3f}")
    assert m.f1 >= 0.65, f"F1@0.5 {m.f1:.3f} on one plane of the stack ({m})"


def test_segment_the_whole_timelapse(make_napari_viewer, qtbot) -> None:
    """Frames are segmented one by one (T axis from the sample), all of them in one run."""
    viewer = make_napari_viewer()
    widget = _dock_segment(viewer)
    viewer.open_sample("napari-unet", "nuclei_timelapse")
    assert widget.axes_edit.text() == "TYX"
    widget.scope_combo.setCurrentText("whole stack")
    widget.segment_button.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)

    labels = np.asarray(viewer.layers["nuclei_timelapse labels"].data)
    truth = np.asarray(viewer.layers["nuclei_timelapse ground truth"].data)
    assert labels.shape == truth.shape == (8, 256, 256)
    total = match(truth[0], labels[0], 0.5)
    for t in range(1, 8):
        total = total + match(truth[t], labels[t], 0.5)
    print(f"nuclei_timelapse: {total} F1@0.5 {total.f1:.3f}")
    # 18 nuclei per frame, several cut by the border: a noisier score than the 2D sample's
    assert total.f1 >= 0.8, f"F1@0.5 {total.f1:.3f} over 8 frames ({total})"


def test_open_a_calibrated_ome_zarr_segment_lazily_and_save(make_napari_viewer, qtbot, tmp_path) -> None:
    """Issue 4 as a user: open an OME-Zarr z-stack (z step 1 um, pixels 0.5 um) with the plugin's
    reader, segment the whole stack (lazy: the chunked engine into a zarr-backed Labels layer),
    check one id per nucleus through z against the truth, save as OME-Zarr and reopen it."""
    from napari_unet.io.omezarr import read_ome_zarr, write_ome_zarr
    from napari_unet.samples.synthetic import nuclei_3d

    s = nuclei_3d(shape=(32, 192, 192), n_nuclei=20, z_spacing=2.0, seed=11)
    src = tmp_path / "stack.ome.zarr"
    write_ome_zarr(src, s.image, "ZYX", pixel_size={"Z": 1.0, "Y": 0.5, "X": 0.5}, unit="µm")
    viewer = make_napari_viewer()
    widget = _dock_segment(viewer)
    [image] = viewer.open(str(src), plugin="napari-unet")
    assert not isinstance(image.data, np.ndarray), "OME-Zarr opens lazily"
    assert tuple(image.scale) == pytest.approx((1.0, 0.5, 0.5))
    widget.scope_combo.setCurrentText("whole stack")
    widget.segment_button.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)

    labels = viewer.layers["stack labels"]
    assert not isinstance(labels.data, np.ndarray), "the labels are backed by a store on disk"
    assert tuple(labels.scale) == pytest.approx((1.0, 0.5, 0.5))
    m = match(s.labels, np.asarray(labels.data), 0.5)
    print(f"lazy 3D: {m} F1@0.5 {m.f1:.3f}")
    assert m.f1 >= 0.8, f"3D F1@0.5 {m.f1:.3f} < 0.8 ({m})"

    out = tmp_path / "stack_labels.zarr"
    labels.save(str(out), plugin="napari-unet")
    back, axes, meta = read_ome_zarr(out)
    assert axes == "ZYX" and meta["pixel_size"]["Z"] == pytest.approx(1.0)
    np.testing.assert_array_equal(np.asarray(back), np.asarray(labels.data))
