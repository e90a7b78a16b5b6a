"""Faults without loss in the docks (issue 13): a fine-tuned model kept when the disk is full, a
model file that cannot be built refused by Segment's picker, a deleted image while Segment runs,
and the labels cache cleaned of the stores a dead napari left.

The faults are the real ones: torch's own full-disk ``RuntimeError`` from its zip writer, crafted
model files, a process that has ended. Each shows one notification and loses nothing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_unet._widgets import _lazy
from napari_unet.models.model_file import Model
from napari_unet.models.unet import UNet, UNetConfig

WAIT_MS = 60_000
TORCH_FULL_DISK = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"


def _torch_save_fails_in(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """``torch.save`` into ``folder`` writes part of the file and raises torch's full-disk error."""
    real = torch.save

    def save(obj, f, *args, **kwargs):
        if Path(f).resolve().is_relative_to(folder.resolve()):
            Path(f).write_bytes(b"PK\x03\x04 cut off")
            raise RuntimeError(TORCH_FULL_DISK)
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def _blobs(shape: tuple[int, ...], seed: int = 0):
    from napari_unet.samples.synthetic import nuclei_2d

    s = nuclei_2d(shape=shape[-2:], n_nuclei=8, radius=(6, 10), seed=seed)
    return np.broadcast_to(s.image, shape).copy(), np.broadcast_to(s.labels, shape).copy()


def test_full_disk_keeps_the_fine_tuned_model_to_save_again_elsewhere_or_export(
    docked, qtbot, notes, monkeypatch, tmp_path, model_dir
) -> None:
    viewer, seg, ft = docked
    image, truth = _blobs((96, 96))
    viewer.add_image(image, name="cells")
    viewer.add_labels(truth, name="cells labels")
    _torch_save_fails_in(monkeypatch, model_dir)
    ft.steps_spin.setValue(2)
    with qtbot.waitSignal(ft.run_finished, timeout=WAIT_MS):
        ft.finetune_button.click()
    assert len(notes["error"]) == 1, notes
    message = notes["error"][0]
    assert "fine-tuning failed" not in message
    assert "not saved" in message and "kept in memory" in message and "Save elsewhere" in message
    assert ft.result.model is not None and ft.result.model.card["finetune"]["steps"] == 2
    assert ft.save_again_button.isVisibleTo(ft) and ft.save_elsewhere_button.isVisibleTo(ft)
    assert ft.export_button.isEnabled() and not ft.segment_again_button.isEnabled()
    assert ft.model_state.path.endswith("tiny.pt"), "nothing saved, nothing selected"
    assert sorted(p.name for p in model_dir.iterdir()) == ["tiny.pt"], "no half-written file"

    assert not ft.result.save_result(), "the disk is still full"
    assert len(notes["error"]) == 2 and ft.save_elsewhere_button.isVisibleTo(ft)

    elsewhere = tmp_path / "other-disk" / "mine.pt"
    assert ft.result.save_elsewhere(elsewhere) == elsewhere
    assert Model.load(elsewhere).card["finetune"]["steps"] == 2
    assert ft.model_state.path == str(elsewhere)
    assert seg.model_combo.currentData() == str(elsewhere), "Segment uses the saved file"
    assert ft.segment_again_button.isEnabled() and not ft.save_elsewhere_button.isVisibleTo(ft)
    assert len(notes["error"]) == 2


def _crafted(path: Path, **config) -> Path:
    torch.manual_seed(0)
    blob = Model(UNet(UNetConfig(base=4, depth=2)), {"name": "crafted"}).to_dict()
    blob["config"].update(config)
    torch.save(blob, path)
    return path


@pytest.mark.parametrize("config", [{"base": 60000}, {"in_channels": 1.5}])
def test_segment_picker_refuses_a_model_that_cannot_be_built(
    config, docked, notes, model_dir, tiny_model_path, monkeypatch
) -> None:
    from napari_unet.models import model_file

    _, seg, _ = docked
    bad = _crafted(model_dir / "broken.pt", **config)
    seg.models._refresh_models()
    index = seg.model_combo.findData(str(bad))
    assert index >= 0, "the file is listed: the user can see it and delete it"
    built: list[UNetConfig] = []
    monkeypatch.setattr(model_file, "UNet", lambda cfg: built.append(cfg) or UNet(cfg))
    seg.models._on_model_activated(index)  # the user picks it
    assert len(notes["error"]) == 1, notes
    line = notes["error"][0]
    assert line.startswith("napari-unet: cannot use model broken: ") and "bad architecture arguments" in line
    assert "\n" not in line
    assert seg.model_combo.currentData() == str(tiny_model_path), "the choice goes back"
    assert seg.model_state.path == str(tiny_model_path)
    assert built == [], "no network was built"


def test_a_model_with_nan_weights_is_refused_by_the_picker(docked, notes, model_dir, tiny_model_path) -> None:
    _, seg, _ = docked
    torch.manual_seed(0)
    net = UNet(UNetConfig(base=4, depth=2))
    with torch.no_grad():
        net.head.bias[:] = float("nan")
    Model(net, {"name": "nan"}).save(model_dir / "nan.pt")
    seg.models._refresh_models()
    seg.models._on_model_activated(seg.model_combo.findData(str(model_dir / "nan.pt")))
    assert len(notes["error"]) == 1 and "NaN or infinite" in notes["error"][0]
    assert seg.model_combo.currentData() == str(tiny_model_path)


def test_deleting_the_image_while_segment_runs_adds_no_layer(docked, qtbot, notes) -> None:
    viewer, seg, _ = docked
    image, _ = _blobs((96, 96))
    layer = viewer.add_image(image, name="cells")
    seg.picker.choose(layer.unique_id)
    with qtbot.waitSignal(seg.run_finished, timeout=WAIT_MS):
        seg.segment_button.click()
        viewer.layers.remove(layer)  # before the worker's result reaches the GUI thread
    assert [lyr.name for lyr in viewer.layers] == []
    assert notes["warning"] == ["napari-unet: 'cells' was deleted while Segment ran: no labels layer added"]
    assert notes["error"] == []


def test_a_lazy_result_for_a_deleted_image_leaves_nothing_in_the_cache(docked, qtbot, notes) -> None:
    import dask.array as da

    from napari_unet._widgets._plan import SCOPE_STACK

    viewer, seg, _ = docked
    stack, _ = _blobs((3, 96, 80))
    layer = viewer.add_image(da.from_array(stack, chunks=(1, 48, 40)), name="lazy")
    seg.picker.choose(layer.unique_id)
    seg.axes_edit.setText("ZYX")
    seg.scope_combo.setCurrentText(SCOPE_STACK)
    with qtbot.waitSignal(seg.run_finished, timeout=WAIT_MS):
        seg.segment_button.click()
        viewer.layers.remove(layer)
    assert len(viewer.layers) == 0 and len(notes["warning"]) == 1
    cache = _lazy.cache_folder()
    assert not cache.exists() or list(cache.iterdir()) == [], "no store, no temporary, no owner record"


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def _store(cache: Path, name: str, owner: tuple[str, int] | None, age: float = 0.0) -> Path:
    path = cache / name
    (path / "0").mkdir(parents=True)
    (path / "0" / ".zarray").write_text("{}")
    if owner is not None:
        (cache / f".{name}.owner").write_text(f"{owner[0]}\n{owner[1]}\n")
    when = time.time() - age
    for p in [path, *path.rglob("*")]:
        os.utime(p, (when, when))
    return path


def test_clean_cache_removes_the_stores_of_dead_sessions_only() -> None:
    cache = _lazy.cache_folder()
    cache.mkdir(parents=True)
    host, dead = socket.gethostname(), _dead_pid()
    orphan = _store(cache, "img-20250101-120000-abcdef.ome.zarr", (host, dead))
    orphan_temp = _store(cache, ".img-20250101-120000-abcdef.ome.zarr.0123abcd.tmp", None)
    cut_short = _store(cache, ".cut-20250101-120000-111111.ome.zarr.89abcdef.tmp", None, age=600)
    (cache / ".cut-20250101-120000-111111.ome.zarr.owner").write_text(f"{host}\n{dead}\n")
    legacy_old = _store(cache, "old-20200101-120000-222222.ome.zarr", None, age=3 * 24 * 3600)
    probs = _store(cache, f".napari-unet-probs-{dead}-abc_12", None, age=600)
    kept = [
        _store(cache, "mine-20250101-120000-333333.ome.zarr", (host, os.getpid()), age=3 * 24 * 3600),
        _store(cache, "live-20250101-120000-444444.ome.zarr", (host, os.getppid())),
        _store(cache, "away-20250101-120000-555555.ome.zarr", ("another-machine", dead)),
        _store(cache, "legacy-20250101-120000-666666.ome.zarr", None, age=600),  # no record, recent
        _store(cache, f".napari-unet-probs-{os.getpid()}-def_34", None, age=600),
    ]
    (cache / "notes.txt").write_text("the user's")
    removed = _lazy.clean_cache()
    gone = {orphan, orphan_temp, cut_short, legacy_old, probs}
    gone |= {cache / f".{orphan.name}.owner", cache / ".cut-20250101-120000-111111.ome.zarr.owner"}
    assert set(removed) == gone
    assert all(not p.exists() for p in gone) and all(p.exists() for p in kept)
    assert (cache / "notes.txt").exists()


def test_segment_cleans_the_cache_when_it_starts(make_napari_viewer, tiny_model_path, monkeypatch) -> None:
    cache = _lazy.cache_folder()
    cache.mkdir(parents=True)
    orphan = _store(cache, "img-20250101-120000-abcdef.ome.zarr", (socket.gethostname(), _dead_pid()))
    monkeypatch.setattr(_lazy, "_cleaning", None)  # as in a new napari session
    viewer = make_napari_viewer()
    viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    thread = _lazy._cleaning
    assert thread is not None
    thread.join(30)
    assert not orphan.exists() and list(cache.iterdir()) == []
    assert _lazy.start_cache_cleaning() is None, "once per session"


def test_threshold_and_budget_ranges_of_the_forms(docked) -> None:
    _, seg, ft = docked
    spin = seg.threshold_spin
    assert spin.minimum() > 0 and spin.maximum() < 1
    spin.setValue(2.0)
    assert spin.value() == spin.maximum() < 1
    spin.setValue(float("nan"))
    assert 0 < spin.value() < 1
    assert ft.budget_spin.minimum() > 0, "a budget of 0 s would return an untrained copy"
