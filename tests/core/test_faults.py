"""Faults without loss (issue 13): a full disk, a model file that cannot be built, a killed run.

Each fault is injected the way it reaches a user: torch's own full-disk ``RuntimeError`` from
its zip writer, zarr's chunk writes failing with ``ENOSPC`` while their siblings are still in
flight, crafted model files, a batch killed with SIGKILL. What is checked is what the user
sees (one line, no traceback) and what is kept (the trained model, nothing half-written, no
temporary left behind for the next run to trip over).
"""

from __future__ import annotations

import asyncio
import errno
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr
import zarr.core.sync
from zarr.storage import LocalStore

from napari_unet.cli import batch_report
from napari_unet.cli import main as cli
from napari_unet.engine.postprocess import PostprocessParams
from napari_unet.io import omezarr
from napari_unet.io.errors import ImageReadError
from napari_unet.models import model_file
from napari_unet.models.model_file import Model, ModelFileError, ModelSaveError
from napari_unet.models.registry import save_version
from napari_unet.models.unet import MAX_PARAMETERS, UNet, UNetConfig
from napari_unet.scale.batch_outputs import remove_leftovers

# what torch's zip writer raises when the disk fills up under it (seen on a 2 MB tmpfs)
TORCH_FULL_DISK = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"


def _one_error(err: str, subject: object) -> str:
    """The one ``error:`` line of ``err`` (a fine-tune may add its ``warning:`` advice)."""
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {subject}: "), err
    assert "Traceback" not in err
    return lines[0]


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.exists() else []


def _torch_save_fails_in(monkeypatch: pytest.MonkeyPatch, *folders: Path) -> None:
    """``torch.save`` into ``folders`` writes part of the file and raises torch's full-disk error."""
    real = torch.save

    def save(obj, f, *args, **kwargs):
        if any(Path(f).resolve().is_relative_to(d.resolve()) for d in folders):
            Path(f).write_bytes(b"PK\x03\x04 cut off")
            raise RuntimeError(TORCH_FULL_DISK)
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def _tiny(seed: int = 0) -> Model:
    torch.manual_seed(seed)
    return Model(UNet(UNetConfig(base=4, depth=2)).eval(), {"name": "tiny"})


def _annotated(folder: Path) -> tuple[Path, Path]:
    """An image of bright discs and its instance labels, as two TIFF files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    lab = np.zeros((96, 96), np.uint16)
    for i in range(1, 9):
        cy, cx = rng.integers(10, 86, 2)
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = i
    img = (100 + 400 * (lab > 0) + rng.normal(0, 10, lab.shape)).astype(np.uint16)
    tifffile.imwrite(folder / "img.tif", img)
    tifffile.imwrite(folder / "img_labels.tif", lab)
    return folder / "img.tif", folder / "img_labels.tif"


def _finetune(model: Path, image: Path, labels: Path, output: Path, *extra: str) -> int:
    args = ["finetune", "--images", str(image), "--labels", str(labels), "-o", str(output)]
    return cli.main([*args, "--model", str(model), "--device", "cpu", "--steps", "2", *extra])


# --- 1. a full disk never loses a trained model -------------------------------------------------------


def test_torch_full_disk_error_is_a_write_error_and_leaves_nothing(tmp_path, monkeypatch) -> None:
    full = tmp_path / "full"
    full.mkdir()
    _torch_save_fails_in(monkeypatch, full)
    with pytest.raises(ModelSaveError) as info:
        _tiny().save(full / "m.pt")
    assert isinstance(info.value, OSError) and "\n" not in str(info.value)
    assert "inline_container" in info.value.strerror or "No space" in info.value.strerror
    assert list(full.iterdir()) == [], "neither the file nor its temporary is left"


def test_full_disk_is_said_as_such_with_the_room_needed(tmp_path, monkeypatch) -> None:
    full = tmp_path / "full"
    full.mkdir()
    _torch_save_fails_in(monkeypatch, full)
    monkeypatch.setattr(model_file.shutil, "disk_usage", lambda _: type("U", (), {"free": 1000})())
    with pytest.raises(ModelSaveError) as info:
        _tiny().save(full / "m.pt")
    assert info.value.errno == errno.ENOSPC
    assert info.value.strerror.startswith("No space left on device (the model needs 0.")


def test_save_version_on_a_full_disk_raises_model_save_error(model_dir, monkeypatch) -> None:
    model_dir.mkdir()
    _torch_save_fails_in(monkeypatch, model_dir)
    with pytest.raises(ModelSaveError, match="cannot save model 'mine'"):
        save_version(_tiny(), "mine")
    assert list(model_dir.iterdir()) == []


@pytest.mark.parametrize("also_full", [(), ("models",), ("models", "tmp")])
def test_cli_finetune_on_a_full_disk_saves_the_model_elsewhere_and_says_where(
    also_full, tiny_model_path, model_dir, tmp_path, monkeypatch, capsys
) -> None:
    image, labels = _annotated(tmp_path / "data")
    full, spare = tmp_path / "full", tmp_path / "spare-tmp"
    full.mkdir()
    spare.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spare))
    _torch_save_fails_in(monkeypatch, full, *({"models": model_dir, "tmp": spare}[f] for f in also_full))
    assert _finetune(tiny_model_path, image, labels, full / "mine.pt") == 1
    captured = capsys.readouterr()
    line = _one_error(captured.err, full / "mine.pt")
    assert "cannot write the model (" in line and "saved " not in captured.out
    assert list(full.iterdir()) == [], "nothing half-written where the disk is full"
    rescued = {(): [model_dir / "mine.pt"], ("models",): list(spare.glob("mine-*.pt"))}.get(also_full)
    if rescued is None:  # no room anywhere: the line says so
        assert "no room in the model folder" in line and line.endswith("it is lost")
        assert list(spare.iterdir()) == []
        return
    (where,) = rescued
    assert line.endswith(f"it was saved to {where} instead"), line
    assert Model.load(where).card["finetune"]["steps"] == 2, "the trained model, not lost"


# --- 2. model files are checked before any network is built ------------------------------------------


def _craft(path: Path, *, config: dict | None = None, state=None, card=None) -> Path:
    blob = _tiny().to_dict()
    blob["config"].update(config or {})
    if state is not None:
        blob["state_dict"] = state
    if card is not None:
        blob["card"] = card
    torch.save(blob, path)
    return path


BAD_CONFIGS = [
    ({"in_channels": 1.5}, "in_channels must be an integer"),
    ({"in_channels": True}, "in_channels must be an integer"),
    ({"out_channels": "3"}, "out_channels must be an integer"),
    ({"in_channels": 0}, "in_channels must be between 1 and"),
    ({"out_channels": 100_000}, "out_channels must be between 1 and"),
    ({"base": 60000}, "base must be between 1 and"),
    ({"depth": -1}, "depth must be between 0 and"),
    ({"depth": 30}, "depth must be between 0 and"),
    ({"base": 256, "depth": 4}, "over the limit"),
    ({"padding": ["same"]}, "padding must be"),
    ({"norm": None}, "norm must be"),
    ({"width": 3}, "unknown architecture arguments"),
]


@pytest.mark.parametrize(("config", "reason"), BAD_CONFIGS)
def test_bad_architecture_is_refused_in_one_line_before_a_net_is_built(
    config, reason, tmp_path, monkeypatch
) -> None:
    path = _craft(tmp_path / "bad.pt", config=config)
    built: list[UNetConfig] = []
    monkeypatch.setattr(model_file, "UNet", lambda cfg: built.append(cfg) or UNet(cfg))
    with pytest.raises(ModelFileError) as info:
        Model.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: bad architecture arguments (") and reason in message, message
    assert "\n" not in message
    assert built == [], "no network was built"


def test_parameter_count_is_the_built_nets_and_the_cap_fits_the_paper() -> None:
    for cfg in [
        UNetConfig(),
        UNetConfig.paper(),
        UNetConfig(base=1, depth=0, norm="none"),
        UNetConfig(3, 5, 7, 3),
    ]:
        assert cfg.parameter_count() == sum(p.numel() for p in UNet(cfg).parameters())
    assert UNetConfig.paper(in_channels=3, out_channels=3).parameter_count() < MAX_PARAMETERS
    with pytest.raises(ValueError, match="over the limit"):
        UNetConfig(base=128, depth=4)  # 124 M: four times the paper's net


def test_oversized_file_is_refused_before_it_is_read(tmp_path, monkeypatch) -> None:
    path = _tiny().save(tmp_path / "m.pt")
    monkeypatch.setattr(model_file, "MAX_FILE_BYTES", 1000)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("read a file over the cap"))
    with pytest.raises(ModelFileError, match="larger than any model this plugin can build"):
        Model.load(path)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_weights_that_are_not_finite_are_refused(bad, tmp_path) -> None:
    model = _tiny()
    state = {k: v.clone() for k, v in model.net.state_dict().items()}
    state["head.weight"][0, 0, 0, 0] = bad
    path = _craft(tmp_path / "nan.pt", state=state)
    with pytest.raises(ModelFileError, match=r"weights hold NaN or infinite values \(in head.weight\)"):
        Model.load(path)


@pytest.mark.parametrize(
    "card",
    [
        {"normalization": {"low": 99, "high": 1}},
        {"normalization": "percentile"},
        {"postprocess": {"threshold": 2}},
        {"postprocess": {"threshold": math.nan}},
        {"postprocess": {"min_size": -3}},
        {"postprocess": {"split_depth": -1}},
        {"postprocess": {"split_depth": math.inf}},
        {"object_diameter": 0},
    ],
)
def test_card_values_prediction_reads_are_checked(card, tmp_path) -> None:
    path = _craft(tmp_path / "card.pt", card=card)
    with pytest.raises(ModelFileError, match=f"^{path}: card "):
        Model.load(path)


def test_models_list_lists_every_good_model_whatever_else_the_folder_holds(
    tiny_model_path, model_dir, capsys, monkeypatch
) -> None:
    _craft(model_dir / "half-channel.pt", config={"in_channels": 1.5})
    _craft(model_dir / "huge.pt", config={"base": 60000})
    nan_state = {k: v.clone() for k, v in _tiny().net.state_dict().items()}
    nan_state["head.bias"][:] = math.nan
    _craft(model_dir / "nan.pt", state=nan_state)
    (model_dir / "text.pt").write_text("not a model")
    (model_dir / "folder.pt").mkdir()
    (model_dir / "dangling.pt").symlink_to(model_dir / "nowhere.pt")
    _tiny(1).save(model_dir / "second.pt")
    built: list[UNetConfig] = []
    monkeypatch.setattr(model_file, "UNet", lambda cfg: built.append(cfg) or UNet(cfg))
    assert cli.main(["models", "list"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = {line.split("  ")[0]: line for line in captured.out.splitlines() if not line.startswith(" ")}
    assert set(lines) == {
        "nuclei",
        "tiny",
        "second",
        "half-channel",
        "huge",
        "nan",
        "text",
        "folder",
        "dangling",
    }
    for good in ("tiny", "second"):
        assert "unreadable" not in lines[good] and f"    {model_dir / (good + '.pt')}" in captured.out
    assert "in_channels must be an integer" in lines["half-channel"]
    assert "base must be between" in lines["huge"]
    assert "NaN or infinite" in lines["nan"]
    assert "unreadable" in lines["text"] and "a folder" in lines["folder"]
    assert "not installed" in lines["dangling"]
    assert all(cfg.base != 60000 for cfg in built)


def test_models_import_refuses_a_bad_file_in_one_line(model_dir, tmp_path, capsys) -> None:
    from napari_unet.models.registry import import_model

    path = _craft(tmp_path / "crafted.pt", config={"base": 60000})
    with pytest.raises(ModelFileError, match=r"bad architecture arguments \(base must be between 1 and"):
        import_model(path)
    assert cli.main(["models", "import", str(path)]) == 1
    assert "base must be between 1 and" in _one_error(capsys.readouterr().err, path)
    assert not model_dir.exists() or list(model_dir.iterdir()) == []


# --- 3. writers wait for their pending writes; leftovers of killed runs go ----------------------------


def _pending_zarr_tasks() -> int:
    loop = zarr.core.sync.loop[0]
    if loop is None:
        return 0

    async def count() -> int:
        return len([t for t in asyncio.all_tasks() if t is not asyncio.current_task()])

    return asyncio.run_coroutine_threadsafe(count(), loop).result(10)


@pytest.fixture
def full_disk_chunks(monkeypatch):
    """zarr chunk writes under a folder fail with ENOSPC for one chunk, the others land 0.3 s late.

    That is a full disk as zarr meets it: the failing write ends the assignment at once while
    its sibling chunks are still being written in the background.
    """
    real = LocalStore.set
    folders: list[Path] = []

    async def set_(self, key, value, *args, **kwargs):
        inside = any(Path(str(self.root)).is_relative_to(f) for f in folders)
        if inside and not key.rsplit("/", 1)[-1].startswith((".z", "zarr.json")):
            if key.endswith("/0/0"):
                raise OSError(errno.ENOSPC, "No space left on device")
            await asyncio.sleep(0.3)
        return await real(self, key, value, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "set", set_)
    return folders


def test_ome_zarr_writer_waits_for_pending_chunk_writes_before_removing_its_store(
    tmp_path, full_disk_chunks
) -> None:
    full_disk_chunks.append(tmp_path)
    with pytest.raises(OSError, match="No space left"):
        with omezarr.ome_zarr_writer(
            tmp_path / "x.ome.zarr", (1, 64, 64), np.uint16, "ZYX", (1, 16, 16)
        ) as arr:
            arr[...] = np.ones((1, 64, 64), np.uint16)
    time.sleep(0.5)  # a write still in flight would bring the folder back now
    assert list(tmp_path.iterdir()) == []
    assert _pending_zarr_tasks() == 0


def test_write_ome_zarr_from_dask_waits_for_its_threads(tmp_path, full_disk_chunks) -> None:
    import dask.array as da

    full_disk_chunks.append(tmp_path / "out")
    (tmp_path / "out").mkdir()
    data = da.ones((4, 64, 64), np.uint16, chunks=(1, 32, 32))
    with pytest.raises(OSError, match="No space left"):
        omezarr.write_ome_zarr(tmp_path / "out" / "x.ome.zarr", data, "ZYX", chunks=(1, 32, 32))
    time.sleep(0.5)
    assert list((tmp_path / "out").iterdir()) == []
    assert _pending_zarr_tasks() == 0


def _zarr_input(path: Path, shape=(4, 96, 96), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    image = (rng.random(shape) > 0.8).astype(np.uint16) * 1000 + 5
    omezarr.write_ome_zarr(path, image, "ZYX")
    return path


def test_cli_zarr_to_zarr_on_a_full_disk_is_one_line_and_leaves_no_store(
    blob_model, tmp_path, full_disk_chunks, capsys
) -> None:
    src = _zarr_input(tmp_path / "in.ome.zarr", shape=(2, 600, 600))  # 4 label chunks a plane
    model = blob_model.save(tmp_path / "blobs.pt")
    out = tmp_path / "out"
    full_disk_chunks.append(out)
    args = [
        "segment",
        str(src),
        "-o",
        str(out),
        "--model",
        str(model),
        "--device",
        "cpu",
        "--no-size-estimate",
    ]
    assert cli.main(args) == 1
    line = _one_error(capsys.readouterr().err, src)
    assert "No space left on device" in line
    time.sleep(0.5)
    assert _hidden(out) == [] and list(out.iterdir()) == []
    assert _pending_zarr_tasks() == 0, "nothing left to print tracebacks at exit"


def _age(path: Path, seconds: float) -> None:
    """Set the modification time of ``path`` and everything in it ``seconds`` back."""
    when = time.time() - seconds
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in paths:
        os.utime(p, (when, when), follow_symlinks=False)


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def test_remove_leftovers_removes_only_stale_temporaries_of_ours(tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dead = _dead_pid()
    stale = {
        ".a_labels.tif.0123abcd.tmp": "file",
        ".b_labels.ome.zarr.89abcdef.tmp": "dir",
        f".c_labels.tif.{dead}.tmp.zarr": "dir",
        f"..c_labels.tif.{dead}.tmp.zarr.aaaabbbb.tmp": "dir",
        ".d_objects.csv.01234567.tmp": "file",
        ".e_labels.ome.zarr.fedcba98.old": "dir",
        f".napari-unet-probs-{dead}-x1y2z3": "dir",
        ".napari-unet-probs-abcd_123": "dir",  # an older version's, without a process id
    }
    kept = {
        ".notes.txt.01234567.tmp": "file",  # not ours: not a label file's temporary
        "a_labels.tif": "file",  # a finished output
        ".f_labels.tif.deadbeef.tmp": "file",  # fresh: a run may be writing it
        f".g_labels.tif.{os.getppid()}.tmp.zarr": "dir",  # named after a live process
        ".h_labels.ome.zarr.00112233.tmp": "dir",  # old folder, but a chunk written just now
        "photo.png": "file",
    }
    for name, kind in {**stale, **kept}.items():
        path = out / name
        if kind == "dir":
            (path / "0" / "0").mkdir(parents=True)
            (path / "0" / "0" / "0").write_bytes(b"chunk")
        else:
            path.write_bytes(b"data")
        if name != ".f_labels.tif.deadbeef.tmp":
            _age(path, 3600)
    os.utime(out / ".h_labels.ome.zarr.00112233.tmp" / "0" / "0" / "0")
    removed = remove_leftovers(out)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in out.iterdir()) == sorted(kept)


def test_a_batch_killed_with_sigkill_leaves_temporaries_that_the_rerun_removes(
    blob_model, tmp_path, capsys
) -> None:
    src = _zarr_input(tmp_path / "big.ome.zarr", shape=(6, 128, 128))
    model = blob_model.save(tmp_path / "blobs.pt")
    out = tmp_path / "out"
    script = (
        "import sys, time\n"
        "from napari_unet.scale.batch import BatchOptions, run_batch\n"
        "opts = BatchOptions(model=sys.argv[3], device='cpu', format='tif', estimate_size=False)\n"
        "run_batch([sys.argv[1]], sys.argv[2], opts, tile_progress=lambda p, s: time.sleep(0.5))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script, str(src), str(out), str(model)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not _hidden(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _hidden(out), "the run never wrote a temporary store"
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    leftovers = _hidden(out)
    assert leftovers and any(f".{proc.pid}.tmp.zarr" in name for name in leftovers), leftovers
    assert not (out / "big_labels.tif").exists()
    for name in leftovers:  # the re-run comes later than a minute after the kill
        _age(out / name, 120)
    args = ["segment", str(src), "-o", str(out), "--model", str(model), "--device", "cpu", "--format", "tif"]
    assert cli.main([*args, "--no-size-estimate"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["big_labels.tif"]


# --- 4. the batch summary says whether it is complete -------------------------------------------------


def _tif_inputs(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        tifffile.imwrite(folder / f"im{i}.tif", rng.integers(0, 1000, (48, 48)).astype(np.uint16))
        paths.append(folder / f"im{i}.tif")
    return paths


def test_summary_says_complete_true_at_the_end_and_false_while_running(
    tiny_model_path, tmp_path, monkeypatch, capsys
) -> None:
    _tif_inputs(tmp_path / "d", 2)
    seen: list[bool] = []
    real = batch_report.write_summary

    def spy(path, results, seconds, extra=None, complete=True):
        real(path, results, seconds, extra, complete)
        if Path(path).suffix == ".json":
            seen.append(json.loads(Path(path).read_text())["complete"])

    monkeypatch.setattr(batch_report, "_SAVE_EVERY", 0.0)  # a summary after every file
    monkeypatch.setattr(batch_report, "write_summary", spy)
    summary = tmp_path / "run.json"
    args = ["segment", str(tmp_path / "d"), "-o", str(tmp_path / "out"), "--model", str(tiny_model_path)]
    assert cli.main([*args, "--summary", str(summary)]) == 0
    assert seen == [False, False, True]
    assert json.loads(summary.read_text())["complete"] is True
    csv_summary = tmp_path / "run.csv"
    assert cli.main([*args, "--summary", str(csv_summary)]) == 0
    rows = csv_summary.read_text().splitlines()
    assert rows[0].endswith(",complete") and all(r.endswith(",true") for r in rows[1:])


def test_a_final_summary_that_cannot_be_written_says_the_file_on_disk_is_stale(
    tiny_model_path, tmp_path, monkeypatch, capsys
) -> None:
    _tif_inputs(tmp_path / "d", 2)
    real = batch_report.write_summary

    def full_at_the_end(path, results, seconds, extra=None, complete=True):
        if complete:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, results, seconds, extra, complete)

    monkeypatch.setattr(batch_report, "_SAVE_EVERY", 0.0)
    monkeypatch.setattr(batch_report, "write_summary", full_at_the_end)
    summary = tmp_path / "run.json"
    args = ["segment", str(tmp_path / "d"), "-o", str(tmp_path / "out"), "--model", str(tiny_model_path)]
    assert cli.main([*args, "--summary", str(summary)]) == 1
    line = _one_error(capsys.readouterr().err, summary)
    assert "cannot write the summary (No space left on device); the file on disk is stale" in line
    assert "with 2 of 2 files" in line
    on_disk = json.loads(summary.read_text())
    assert on_disk["complete"] is False and len(on_disk["files"]) == 2


def test_an_earlier_runs_summary_is_called_stale_when_this_run_cannot_write_one(
    tiny_model_path, tmp_path, monkeypatch, capsys
) -> None:
    _tif_inputs(tmp_path / "d", 1)
    summary = tmp_path / "run.json"
    summary.write_text('{"complete": true, "files": []}')

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(batch_report, "write_summary", full)
    args = ["segment", str(tmp_path / "d"), "-o", str(tmp_path / "out"), "--model", str(tiny_model_path)]
    assert cli.main([*args, "--summary", str(summary)]) == 1
    line = _one_error(capsys.readouterr().err, summary)
    assert line.endswith("the file on disk is stale: it is an earlier run's")


# --- 5. the small things -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, 0.0, 1.0, 2.0, -0.5, "0.5"])
def test_threshold_outside_zero_one_is_refused(value, blob_model) -> None:
    import napari_unet

    with pytest.raises(ValueError, match="threshold must be"):
        PostprocessParams(threshold=value)
    if isinstance(value, float):
        with pytest.raises(ValueError, match="threshold must be between 0 and 1"):
            napari_unet.segment(np.ones((32, 32), np.uint16), model=blob_model, axes="YX", threshold=value)


@pytest.mark.parametrize("value", ["nan", "2", "0", "1"])
def test_cli_threshold_outside_zero_one_is_a_usage_error(value, tmp_path, capsys) -> None:
    args = ["segment", str(tmp_path / "a.tif"), "-o", str(tmp_path / "out"), "--threshold", value]
    assert cli.main(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("napari-unet")]
    assert len(errors) == 1 and "--threshold" in errors[0], errors


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"time_budget": 0}, "time_budget must be a positive number"),
        ({"time_budget": -5}, "time_budget must be a positive number"),
        ({"time_budget": math.nan}, "time_budget must be a positive number"),
        ({"time_budget": None, "steps": 0}, "steps must be an integer >= 1"),
        ({"time_budget": 10, "steps": 0}, "steps must be an integer >= 1"),
        ({"time_budget": None, "steps": None}, "give a number of steps or a time budget"),
    ],
)
def test_finetune_that_would_train_nothing_is_refused(kwargs, reason, monkeypatch) -> None:
    import napari_unet
    from napari_unet.training import finetune as ft

    monkeypatch.setattr(ft, "samples_from_arrays", lambda *a, **k: pytest.fail("read the images first"))
    image, labels = np.ones((64, 64), np.uint16), np.zeros((64, 64), np.uint16)
    with pytest.raises(ValueError, match=reason):
        napari_unet.finetune(_tiny(), image, labels, axes="YX", **kwargs)


@pytest.mark.parametrize("option", [["--steps", "0"], ["--time-budget", "0"], ["--time-budget", "-1"]])
def test_cli_finetune_that_would_train_nothing_is_a_usage_error(option, tmp_path, capsys) -> None:
    args = ["finetune", "--images", "a.tif", "--labels", "b.tif", "-o", str(tmp_path / "m.pt"), *option]
    assert cli.main(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("napari-unet")]
    assert len(errors) == 1 and option[0] in errors[0], errors


def test_missing_chunks_of_an_image_are_named_and_labels_are_exempt(tmp_path) -> None:
    src = _zarr_input(tmp_path / "img.ome.zarr", shape=(3, 64, 64))
    assert "warning" not in omezarr.read_ome_zarr(src)[2], "our image stores write every chunk"
    (src / "0" / "1" / "0" / "0").unlink()
    data, _, meta = omezarr.read_ome_zarr(src)
    assert meta["warning"].startswith(f"1 of 3 chunks are missing ({src / '0' / '1' / '0' / '0'})")
    assert np.asarray(data[1]).max() == 0, "zarr reads them as the fill value"
    labels = tmp_path / "lab.ome.zarr"
    omezarr.write_ome_zarr(labels, np.zeros((3, 64, 64), np.uint16), "ZYX", labels=True)
    assert "warning" not in omezarr.read_ome_zarr(labels)[2], "an absent labels chunk is background"


def test_napari_reader_warns_of_missing_chunks(tmp_path) -> None:
    from napari_unet.io.napari_reader import read_path

    src = _zarr_input(tmp_path / "img.ome.zarr", shape=(3, 64, 64))
    (src / "0" / "0" / "0" / "0").unlink()
    with pytest.warns(UserWarning, match=r"^img.ome.zarr: 1 of 3 chunks are missing \("):
        (layer,) = read_path(str(src))
    assert layer[1]["metadata"]["warning"].startswith("1 of 3 chunks are missing")


def test_batch_line_of_an_input_with_a_missing_chunk_warns(blob_model, tmp_path, capsys) -> None:
    src = _zarr_input(tmp_path / "img.ome.zarr", shape=(3, 64, 64))
    (src / "0" / "2" / "0" / "0").unlink()
    model = blob_model.save(tmp_path / "blobs.pt")
    args = ["segment", str(src), "-o", str(tmp_path / "out"), "--model", str(model), "--no-size-estimate"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert f"warning: 1 of 3 chunks are missing ({src / '0' / '2' / '0' / '0'})" in out


def test_a_corrupt_chunk_names_its_file(blob_model, tmp_path, capsys) -> None:
    src = _zarr_input(tmp_path / "img.ome.zarr", shape=(3, 64, 64))
    bad = src / "0" / "1" / "0" / "0"
    bad.write_bytes(b"not blosc" * 8)
    data = omezarr.read_ome_zarr(src)[0]
    with pytest.raises(ImageReadError, match=f"^{bad}: corrupt or unreadable chunk \\(error during blosc"):
        np.asarray(data)
    model = blob_model.save(tmp_path / "blobs.pt")
    args = ["segment", str(src), "-o", str(tmp_path / "out"), "--model", str(model), "--no-size-estimate"]
    assert cli.main(args) == 1
    line = _one_error(capsys.readouterr().err, src)
    assert f"{bad}: corrupt or unreadable chunk" in line
