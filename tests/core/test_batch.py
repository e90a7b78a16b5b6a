"""Batch segmentation as a user on a server meets it: folders and globs in, resumable outputs,
one line per bad file, and the same labels in-process and on a Dask cluster."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main as cli
from napari_unet.scale import batch, batch_file, cluster
from napari_unet.scale.batch import run_batch
from napari_unet.scale.batch_inputs import expand_inputs
from napari_unet.scale.batch_outputs import output_path
from napari_unet.scale.batch_types import BatchOptions, FileResult

RNG = np.random.default_rng(1)


def _blobs(seed: int = 0, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = rng.normal(100, 5, shape)
    for cy, cx in rng.integers(10, min(shape) - 10, (3, 2)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] += 400
    return np.clip(img, 0, None).astype(np.uint16)


def _images(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        p = folder / name
        tifffile.imwrite(p, _blobs(i))
        paths.append(p)
    return paths


def _segment(model: Path, out: Path, *args: str) -> int:
    return cli.main(["segment", *args, "-o", str(out), "--model", str(model), "--device", "cpu"])


def _listing(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


def _errors(err: str) -> list[str]:
    lines = err.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines), err
    assert "Traceback" not in err
    return lines


# --- inputs: folders, globs, duplicates -------------------------------------------------------------


def test_expand_folders_globs_and_duplicates(tmp_path: Path) -> None:
    data = tmp_path / "data"
    b, a = _images(data, ["b.tif", "a.ome.tif"])
    (data / "notes.txt").write_text("x")
    (data / ".hidden.tif").write_bytes(b"x")
    (data / "plate.zarr").mkdir()  # an OME-Zarr store is an input, not a folder to look into
    (data / "plate.zarr" / "inner.tif").write_bytes(b"x")
    (nested,) = _images(data / "sub", ["c.tif"])
    (tmp_path / "empty").mkdir()

    found, problems = expand_inputs([str(data)])
    assert found == [str(data / "a.ome.tif"), str(data / "b.tif"), str(data / "plate.zarr")]
    assert problems == []

    found, _ = expand_inputs([str(data)], recursive=True)
    assert str(nested) in found and not any("inner" in f for f in found)

    # argument order kept, each expansion sorted, repeats dropped by real path
    specs = [str(b), str(data / "*.tif"), str(data / "." / "b.tif"), str(data / "**" / "*.tif")]
    found, problems = expand_inputs(specs)
    assert found == [str(b), str(a), str(nested)] and problems == []

    found, problems = expand_inputs(
        [str(tmp_path / "nothing*.tif"), str(tmp_path / "empty"), str(data / "*.txt"), "missing.tif"]
    )
    assert found == ["missing.tif"]  # a plain path is kept: it fails later with its own reason
    assert [p[0] for p in problems] == [
        str(tmp_path / "nothing*.tif"),
        str(tmp_path / "empty"),
        str(data / "*.txt"),
    ]
    assert "no files match" in problems[0][1] and "--recursive" in problems[1][1]


def test_labels_in_outdir_are_not_inputs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _images(data, ["a.tif", "a_labels.tif"])
    found, _ = expand_inputs([str(data)], outdir=data)
    assert found == [str(data / "a.tif")]
    found, _ = expand_inputs([str(data)], outdir=tmp_path / "elsewhere")
    assert len(found) == 2


def test_output_names() -> None:
    assert output_path("o", "x/plate.ome.tif") == Path("o/plate_labels.tif")
    assert output_path("o", "x/plate.ome.zarr/") == Path("o/plate_labels.ome.zarr")
    assert output_path("o", "x/plate.zarr", "tif") == Path("o/plate_labels.tif")
    assert output_path("o", "x/cells.png", "zarr") == Path("o/cells_labels.ome.zarr")


def test_cli_folder_glob_and_a_pattern_that_matches_nothing(
    tiny_model_path: Path, tmp_path: Path, capsys
) -> None:
    _images(tmp_path / "d1", ["a.tif", "b.tif"])
    _images(tmp_path / "d2", ["c.tif", "d.png.tif"])
    out = tmp_path / "out"
    nothing = str(tmp_path / "none*.tif")
    code = _segment(tiny_model_path, out, str(tmp_path / "d1"), str(tmp_path / "d2" / "c*.tif"), nothing)
    captured = capsys.readouterr()
    assert code == 1
    assert _errors(captured.err) == [f"error: {nothing}: no files match this pattern"]
    assert _listing(out) == ["a_labels.tif", "b_labels.tif", "c_labels.tif"]
    assert "3 segmented, 0 skipped (done), 1 failed" in captured.out


# --- resume, interruption, overwrite ----------------------------------------------------------------


def test_resume_skips_done_and_redoes_a_leftover_temp(
    tiny_model_path: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    _images(tmp_path / "d", ["a.tif", "b.tif"])
    out = tmp_path / "out"
    assert _segment(tiny_model_path, out, str(tmp_path / "d")) == 0
    first = tifffile.imread(out / "b_labels.tif")
    # as if a run was killed while writing b: only a temporary file is left
    (out / "b_labels.tif").rename(out / ".b_labels.tif.dead.tmp")
    capsys.readouterr()
    calls: list[str] = []
    real = batch_file.segment_and_write
    monkeypatch.setattr(batch_file, "segment_and_write", lambda p, *a: calls.append(p.name) or real(p, *a))
    assert _segment(tiny_model_path, out, str(tmp_path / "d")) == 0
    text = capsys.readouterr().out
    assert calls == ["b.tif"]
    assert f"{tmp_path / 'd' / 'a.tif'} -> {out / 'a_labels.tif'}: skipped (done)" in text
    assert "1 segmented, 1 skipped (done), 0 failed" in text
    np.testing.assert_array_equal(tifffile.imread(out / "b_labels.tif"), first)
    # --overwrite does them all again
    assert _segment(tiny_model_path, out, str(tmp_path / "d"), "--overwrite") == 0
    assert calls == ["b.tif", "a.tif", "b.tif"]


def test_interrupted_run_leaves_nothing_complete_looking_and_resumes(
    tiny_model_path: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    _images(tmp_path / "d", ["a.tif", "b.tif", "c.tif"])
    out = tmp_path / "out"
    summary = tmp_path / "summary.json"
    real = tifffile.imwrite

    def half_then_interrupt(file, data, **kwargs):
        if "b_labels" in str(file):
            real(file, data, **kwargs)
            with open(file, "r+b") as fh:
                fh.truncate(os.path.getsize(file) // 2)
            raise KeyboardInterrupt
        return real(file, data, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", half_then_interrupt)
    assert _segment(tiny_model_path, out, str(tmp_path / "d"), "--summary", str(summary)) == 130
    assert _listing(out) == ["a_labels.tif"]  # no half-written b, no temporary file
    assert [f["status"] for f in json.loads(summary.read_text())["files"]] == ["done"]
    monkeypatch.setattr(tifffile, "imwrite", real)
    capsys.readouterr()
    assert _segment(tiny_model_path, out, str(tmp_path / "d"), "--summary", str(summary)) == 0
    assert _listing(out) == ["a_labels.tif", "b_labels.tif", "c_labels.tif"]
    files = json.loads(summary.read_text())["files"]
    assert [(Path(f["input"]).name, f["status"]) for f in files] == [
        ("a.tif", "skipped"),
        ("b.tif", "done"),
        ("c.tif", "done"),
    ]


def test_foreign_file_in_the_way_is_refused_not_skipped(
    tiny_model_path: Path, tmp_path: Path, capsys
) -> None:
    (src,) = _images(tmp_path / "d", ["a.tif"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_labels.tif").write_bytes(b"II*\x00 truncated")
    assert _segment(tiny_model_path, out, str(src)) == 1
    (line,) = _errors(capsys.readouterr().err)
    assert "not a complete label file" in line and "--overwrite" in line
    assert _segment(tiny_model_path, out, str(src), "--overwrite") == 0


# --- bad files and bad output folders ---------------------------------------------------------------


def test_bad_file_among_good_ones_with_csv_summary(tiny_model_path: Path, tmp_path: Path, capsys) -> None:
    _images(tmp_path / "d", ["a.tif", "c.tif"])
    (tmp_path / "d" / "b.tif").write_text("not an image\n")
    out, summary = tmp_path / "out", tmp_path / "s.csv"
    assert _segment(tiny_model_path, out, str(tmp_path / "d"), "--summary", str(summary)) == 1
    assert _errors(capsys.readouterr().err) == [f"error: {tmp_path / 'd' / 'b.tif'}: not a TIFF file"]
    assert _listing(out) == ["a_labels.tif", "c_labels.tif"]
    rows = summary.read_text().splitlines()
    assert rows[0].startswith("input,output,status,objects,seconds,message")
    assert [r.split(",")[2] for r in rows[1:]] == ["done", "failed", "done"]


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root writes anywhere")
def test_unwritable_output_folder(tiny_model_path: Path, tmp_path: Path, capsys) -> None:
    (src,) = _images(tmp_path / "d", ["a.tif"])
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        assert _segment(tiny_model_path, locked, str(src)) == 2
        (line,) = _errors(capsys.readouterr().err)
        assert line.startswith(f"error: {locked}: ") and "not writable" in line
    finally:
        locked.chmod(0o755)


def test_output_folder_failing_midway_is_one_line_per_file(
    tiny_model_path: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """The disk fills up or the share goes read-only during the batch (root can test this too)."""
    srcs = _images(tmp_path / "d", ["a.tif", "b.tif"])

    def refuse(path, *args):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(batch_file, "write_output", refuse)
    out = tmp_path / "out"
    assert _segment(tiny_model_path, out, str(tmp_path / "d")) == 1
    lines = _errors(capsys.readouterr().err)
    assert [line.split(": ")[1] for line in lines] == [str(p) for p in srcs]
    assert all("cannot write" in line and "Permission denied" in line for line in lines)
    assert _listing(out) == []


def test_summary_that_cannot_be_written(tiny_model_path: Path, tmp_path: Path, capsys) -> None:
    (src,) = _images(tmp_path / "d", ["a.tif"])
    summary = tmp_path / "no-such-folder" / "s.json"
    assert _segment(tiny_model_path, tmp_path / "out", str(src), "--summary", str(summary)) == 1
    (line,) = _errors(capsys.readouterr().err)
    assert line.startswith(f"error: {summary}: cannot write the summary")


# --- the Python API ----------------------------------------------------------------------------------


def test_run_batch_api_reports_each_file(tiny_model_path: Path, tmp_path: Path) -> None:
    _images(tmp_path / "d", ["a.tif", "b.tif"])
    seen: list[FileResult] = []
    opts = BatchOptions(model=str(tiny_model_path), device="cpu")
    results = run_batch([str(tmp_path / "d")], tmp_path / "out", opts, progress=seen.append)
    assert [r.status for r in results] == ["done", "done"] and seen == results
    assert all(r.objects is not None and r.seconds > 0 and r.message == "" for r in results)
    again = run_batch([str(tmp_path / "d" / "*.tif")], tmp_path / "out", opts)
    assert [(r.status, r.message) for r in again] == [("skipped", "skipped (done)")] * 2


def test_scheduler_setting(monkeypatch) -> None:
    monkeypatch.delenv(batch.SCHEDULER_ENV, raising=False)
    assert batch.resolve_scheduler(None) is None
    monkeypatch.setenv(batch.SCHEDULER_ENV, "tcp://head:8786")
    assert batch.resolve_scheduler(None) == "tcp://head:8786"
    assert batch.resolve_scheduler("local:2") == "local:2"
    assert batch.resolve_scheduler("none") is None  # the flag overrides the variable


def test_unreachable_scheduler_stops_before_any_work(
    tiny_model_path: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    (src,) = _images(tmp_path / "d", ["a.tif"])
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", "0.5s")
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    out = tmp_path / "out"
    assert _segment(tiny_model_path, out, str(src), "--scheduler", "tcp://127.0.0.1:9") == 2
    (line,) = _errors(capsys.readouterr().err)
    assert line.startswith("error: --scheduler tcp://127.0.0.1:9: cannot connect")
    assert _listing(out) == []
    monkeypatch.setenv(batch.SCHEDULER_ENV, "tcp://127.0.0.1:9")
    assert _segment(tiny_model_path, out, str(src)) == 2
    (line,) = _errors(capsys.readouterr().err)
    assert line.startswith(f"error: {batch.SCHEDULER_ENV} tcp://127.0.0.1:9: cannot connect")
    assert _segment(tiny_model_path, out, str(src), "--scheduler", "none") == 0  # the flag wins


# --- Dask distributed ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def thread_cluster():
    """Two one-thread workers in this process: the Dask code path without process start-up costs."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": ":0"},
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_cluster_gives_the_same_labels_as_in_process(
    tiny_model_path: Path, tmp_path: Path, thread_cluster
) -> None:
    _images(tmp_path / "d", [f"im{i}.tif" for i in range(4)])
    opts = BatchOptions(model=str(tiny_model_path), device="cpu")
    local = run_batch([str(tmp_path / "d")], tmp_path / "local", opts)
    dist = run_batch([str(tmp_path / "d")], tmp_path / "dist", opts, scheduler=thread_cluster)
    assert [r.status for r in dist] == ["done"] * 4
    assert [r.objects for r in dist] == [r.objects for r in local]
    for r in local:
        name = Path(r.output).name
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "dist" / name), tifffile.imread(r.output))
    # resumed on the cluster: the client skips finished files without sending them anywhere
    again = run_batch([str(tmp_path / "d")], tmp_path / "dist", opts, scheduler=thread_cluster)
    assert {(r.status, r.worker) for r in again} == {("skipped", "client")}


def test_cluster_bad_files_and_shared_output_names(
    tiny_model_path: Path, tmp_path: Path, thread_cluster
) -> None:
    """A bad file fails alone; of two inputs with one output name the one that works owns it."""
    _images(tmp_path / "a", ["good.tif"])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "cells.tif").write_text("not an image\n")
    _images(tmp_path / "c", ["cells.tif"])
    specs = [
        str(tmp_path / "a" / "good.tif"),
        str(tmp_path / "b" / "cells.tif"),
        str(tmp_path / "c" / "cells.tif"),
    ]
    opts = BatchOptions(model=str(tiny_model_path), device="cpu")
    results = run_batch(specs, tmp_path / "out", opts, scheduler=thread_cluster)
    assert [(r.status, r.message) for r in results] == [
        ("done", ""),
        ("failed", "not a TIFF file"),
        ("done", ""),
    ]
    assert _listing(tmp_path / "out") == ["cells_labels.tif", "good_labels.tif"]


def test_cluster_task_error_is_a_failed_file(
    tiny_model_path: Path, tmp_path: Path, thread_cluster, monkeypatch
) -> None:
    """A worker that raises outside the file's own error handling (e.g. it died): one failed result."""
    _images(tmp_path / "d", ["a.tif", "b.tif"])
    real = batch.segment_file

    def flaky(input_path, output, options):
        if input_path.endswith("a.tif"):
            raise RuntimeError("worker lost\nwith a long story")
        return real(input_path, output, options)

    monkeypatch.setattr(batch, "segment_file", flaky)
    opts = BatchOptions(model=str(tiny_model_path), device="cpu")
    results = run_batch([str(tmp_path / "d")], tmp_path / "out", opts, scheduler=thread_cluster)
    assert [(r.status, r.message) for r in results] == [
        ("failed", "worker failed: RuntimeError: worker lost"),
        ("done", ""),
    ]


def test_cli_local_cluster_of_processes(tiny_model_path: Path, tmp_path: Path, capsys) -> None:
    """The real thing once: ``--scheduler local:2`` starts worker processes that load the model."""
    _images(tmp_path / "d", ["a.tif", "b.tif", "c.tif"])
    (tmp_path / "d" / "bad.tif").write_text("not an image\n")
    img = _zarr_image(tmp_path / "d" / "stack.ome.zarr")
    out = tmp_path / "out"
    code = _segment(tiny_model_path, out, str(tmp_path / "d"), "--scheduler", "local:2")
    captured = capsys.readouterr()
    assert code == 1
    assert _errors(captured.err) == [f"error: {tmp_path / 'd' / 'bad.tif'}: not a TIFF file"]
    assert _listing(out) == ["a_labels.tif", "b_labels.tif", "c_labels.tif", "stack_labels.ome.zarr"]
    assert "4 segmented, 0 skipped (done), 1 failed" in captured.out
    from napari_unet import segment
    from napari_unet.io.omezarr import read_ome_zarr

    expected = segment(img, model=str(tiny_model_path), axes="ZYX", device="cpu")
    np.testing.assert_array_equal(np.asarray(read_ome_zarr(out / "stack_labels.ome.zarr")[0]), expected)
    reference = run_batch(
        [str(tmp_path / "d" / "a.tif")], tmp_path / "ref", BatchOptions(model=str(tiny_model_path))
    )
    np.testing.assert_array_equal(tifffile.imread(out / "a_labels.tif"), tifffile.imread(reference[0].output))


# --- OME-Zarr in and out ------------------------------------------------------------------------------


def _zarr_image(path: Path, seed: int = 0) -> np.ndarray:
    from napari_unet.io.omezarr import write_ome_zarr

    img = np.stack([_blobs(seed), _blobs(seed + 1)])
    write_ome_zarr(path, img, "ZYX", pixel_size={"Z": 2.0, "Y": 0.5, "X": 0.5}, unit="µm")
    return img


def test_ome_zarr_in_and_out_resumable(tiny_model_path: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    from napari_unet import segment
    from napari_unet.io import omezarr
    from napari_unet.io.omezarr import read_ome_zarr

    data = tmp_path / "data"
    data.mkdir()
    img = _zarr_image(data / "stack.ome.zarr")
    _images(data, ["flat.tif"])
    out = tmp_path / "out"
    # an interrupted OME-Zarr write leaves no store that looks complete
    real_commit = omezarr._commit

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(omezarr, "_commit", interrupt)
    assert _segment(tiny_model_path, out, str(data / "*.zarr")) == 130
    assert _listing(out) == []
    monkeypatch.setattr(omezarr, "_commit", real_commit)
    capsys.readouterr()

    assert _segment(tiny_model_path, out, str(data)) == 0  # auto: zarr stays zarr, tif stays tif
    assert _listing(out) == ["flat_labels.tif", "stack_labels.ome.zarr"]
    labels, axes, meta = read_ome_zarr(out / "stack_labels.ome.zarr")
    assert axes == "ZYX" and meta["labels"] and meta["pixel_size"]["Z"] == pytest.approx(2.0)
    expected = segment(img, model=str(tiny_model_path), axes="ZYX", device="cpu")
    np.testing.assert_array_equal(np.asarray(labels), expected)
    assert batch.output_state(out / "stack_labels.ome.zarr") == "complete"

    capsys.readouterr()
    assert _segment(tiny_model_path, out, str(data)) == 0
    assert "0 segmented, 2 skipped (done), 0 failed" in capsys.readouterr().out
    assert _segment(tiny_model_path, out, str(data), "--format", "tif") == 0
    np.testing.assert_array_equal(tifffile.imread(out / "stack_labels.tif"), expected)
    assert _segment(tiny_model_path, out, str(data / "flat.tif"), "--format", "zarr", "--overwrite") == 0
    assert batch.output_state(out / "flat_labels.ome.zarr") == "complete"


def test_zarr_that_is_not_an_image(tiny_model_path: Path, tmp_path: Path, capsys) -> None:
    store = tmp_path / "empty.zarr"
    store.mkdir()
    file_named_zarr = tmp_path / "file.zarr"
    file_named_zarr.write_text("x")
    assert _segment(tiny_model_path, tmp_path / "out", str(store), str(file_named_zarr)) == 1
    lines = _errors(capsys.readouterr().err)
    assert [line.split(": ")[1] for line in lines] == [str(store), str(file_named_zarr)]
    assert _listing(tmp_path / "out") == []


def test_big_tiff_to_tiff_is_segmented_block_by_block(
    tiny_model_path: Path, tmp_path: Path, monkeypatch
) -> None:
    """A TIFF read lazily goes through the chunked engine even when the output is a TIFF."""
    from napari_unet.scale import chunked

    src = tmp_path / "in"
    src.mkdir()
    stack = np.stack([_blobs(seed=s) for s in range(3)])
    tifffile.imwrite(src / "stack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    eager = tmp_path / "eager"
    assert _segment(tiny_model_path, eager, str(src / "stack.tif")) == 0

    calls = []
    real = chunked.iter_segment_to_zarr
    monkeypatch.setattr(chunked, "iter_segment_to_zarr", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setenv("NAPARI_UNET_LAZY_BYTES", "1")  # every TIFF counts as big
    lazy = tmp_path / "lazy"
    assert _segment(tiny_model_path, lazy, str(src / "stack.tif")) == 0
    assert calls, "the chunked engine was used"
    assert _listing(lazy) == ["stack_labels.tif"]  # the hidden store is gone
    a = tifffile.imread(eager / "stack_labels.tif")
    b = tifffile.imread(lazy / "stack_labels.tif")
    assert a.shape == b.shape == stack.shape
    assert np.array_equal(a > 0, b > 0)


def test_z_step_from_the_file_reaches_the_3d_postprocessing(
    tiny_model_path: Path, tmp_path: Path, monkeypatch
) -> None:
    """An ImageJ z-stack with a 1.5 um z step and 0.5 um pixels is segmented with anisotropy 3."""
    import napari_unet.engine.predict as predict

    seen = []
    real = predict.iter_segment

    def spy(*args, **kwargs):
        seen.append(kwargs["config"].anisotropy)
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "iter_segment", spy)
    src = tmp_path / "stack.tif"
    stack = np.stack([_blobs(seed=s) for s in range(3)])
    meta = {"axes": "ZYX", "spacing": 1.5, "unit": "um"}
    tifffile.imwrite(src, stack, imagej=True, resolution=(2.0, 2.0), metadata=meta)
    assert _segment(tiny_model_path, tmp_path / "out", str(src)) == 0
    assert seen == [pytest.approx(3.0)]


def test_tyx_hyperstack_axes_from_metadata_each_frame_as_if_alone(tmp_path: Path) -> None:
    """A (3, 128, 128) stack whose shape says ZYX but whose ImageJ metadata says TYX: the CLI
    segments it per frame, and every frame gives the objects that frame gives on its own."""
    from napari_unet import load_model, segment
    from napari_unet.engine.metrics import match
    from napari_unet.samples.synthetic import nuclei_timelapse

    movie = nuclei_timelapse(n_frames=3, shape=(128, 128), n_nuclei=6, seed=3).image
    src = tmp_path / "movie.tif"
    tifffile.imwrite(src, movie, imagej=True, metadata={"axes": "TYX"})
    out = tmp_path / "out"
    assert cli.main(["segment", str(src), "-o", str(out), "--device", "cpu"]) == 0
    labels = tifffile.imread(out / "movie_labels.tif")
    assert labels.shape == movie.shape
    model = load_model()
    for t in range(3):
        alone = segment(movie[t], model=model, axes="YX", device="cpu")
        assert alone.max() > 0
        assert match(alone, labels[t], 0.5).f1 == 1.0


def test_track_keeps_each_nucleus_id_through_a_time_lapse(tmp_path: Path) -> None:
    """--track: the synthetic movie's truth keeps a nucleus' id in every frame; so must we."""
    from napari_unet.samples.synthetic import nuclei_timelapse

    movie = nuclei_timelapse(n_frames=3, shape=(128, 128), n_nuclei=6, seed=3)
    # a nucleus appears top left in frame 1: numbering each frame in raster order would shift
    # every other id, so only real linking passes
    image = movie.image.copy()
    yy, xx = np.mgrid[:128, :128]
    newcomer = (yy - 10) ** 2 + (xx - 10) ** 2 < 49
    image[1:, newcomer] = np.percentile(movie.image[movie.labels > 0], 75)
    src = tmp_path / "movie.tif"
    tifffile.imwrite(src, image, imagej=True, metadata={"axes": "TYX"})
    assert cli.main(["segment", str(src), "-o", str(tmp_path / "out"), "--device", "cpu", "--track"]) == 0
    labels = tifffile.imread(tmp_path / "out" / "movie_labels.tif")

    def ours_for(truth_id: int, t: int) -> int:
        values, counts = np.unique(labels[t][movie.labels[t] == truth_id], return_counts=True)
        return int(values[np.argmax(counts)])

    ids = np.unique(movie.labels[0])[1:]
    linked = [all(ours_for(i, t) == ours_for(i, 0) != 0 for t in (1, 2)) for i in ids]
    assert sum(linked) >= len(ids) - 1  # at most one nucleus lost (a merge or a miss)
    assert labels[1][10, 10] not in (0, *np.unique(labels[0]))  # the newcomer has a new id


def test_inputs_may_come_after_options(tiny_model_path: Path, tmp_path: Path) -> None:
    """`segment a.tif -o out 'b*.tif'`: inputs before and after the options are all taken."""
    a, _b = _images(tmp_path / "in", ["a.tif", "b.tif"])
    out = tmp_path / "out"
    pattern = str(tmp_path / "in" / "b*.tif")
    args = ["segment", str(a), "-o", str(out), "--model", str(tiny_model_path), pattern, "--device", "cpu"]
    assert cli.main(args) == 0
    assert _listing(out) == ["a_labels.tif", "b_labels.tif"]
