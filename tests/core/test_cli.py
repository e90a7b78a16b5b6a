"""The ``napari-unet`` command as a user meets it: good inputs are written with the right shape,
every bad input costs exactly one ``error: <file>: <problem>`` line and nothing else, and
problems of the whole call (model, output folder) stop before any work."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from napari_unet import __version__
from napari_unet.cli import batch_report
from napari_unet.cli import main as cli
from napari_unet.models.model_file import Model
from napari_unet.models.registry import bundled_model_path
from napari_unet.models.unet import UNet, UNetConfig

RNG = np.random.default_rng(0)
CARD = {"name": "tiny", "normalization": {"low": 1, "high": 99.8}}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    return Model(UNet(UNetConfig(base=4, depth=2)), card=dict(CARD)).save(path)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


def _blobs(shape=(64, 64)) -> np.ndarray:
    """A few bright discs on noise: something a model could segment."""
    yy, xx = np.mgrid[: shape[-2], : shape[-1]]
    img = RNG.normal(100, 5, shape[-2:])
    for cy, cx in [(16, 16), (40, 20), (30, 48)]:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] += 400
    return np.clip(img, 0, None).astype(np.uint16)


def _segment(model: Path, out: Path, *args: str) -> int:
    return cli.main(["segment", *args, "-o", str(out), "--model", str(model), "--device", "cpu"])


def _one_error(capsys, subject: object) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {subject}: "), err
    assert "Traceback" not in err
    return lines[0]


def _labels_of(out: Path, stem: str) -> tuple[np.ndarray, str | None]:
    path = out / f"{stem}_labels.tif"
    with tifffile.TiffFile(path) as tif:
        return tif.asarray(), tif.series[0].axes


def _written(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


# --- the happy paths ------------------------------------------------------------------------------


def test_version_and_help(capsys) -> None:
    assert cli.main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert cli.main(["--help"]) == 0
    assert "segment" in capsys.readouterr().out
    assert cli.main([]) == 2


def test_segment_yx(tiny_model: Path, out: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, _blobs())
    assert _segment(tiny_model, out, str(src)) == 0
    labels, axes = _labels_of(out, "cells")
    assert labels.shape == (64, 64)
    assert labels.dtype.kind in "ui"
    assert axes == "YX"
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "cells_labels.tif" in captured.out


def test_segment_zyx_imagej(tiny_model: Path, out: Path, tmp_path: Path) -> None:
    src = tmp_path / "stack.tif"
    stack = np.stack([_blobs()[:32, :32]] * 3)
    tifffile.imwrite(src, stack, imagej=True, resolution=(2.0, 2.0), metadata={"axes": "ZYX", "spacing": 3.0})
    assert _segment(tiny_model, out, str(src)) == 0
    labels, axes = _labels_of(out, "stack")
    assert labels.shape == (3, 32, 32)
    assert labels.dtype.kind in "ui"
    assert axes == "ZYX"
    with tifffile.TiffFile(out / "stack_labels.tif") as tif:
        assert tif.imagej_metadata.get("spacing") == pytest.approx(3.0)  # calibration carried over


def test_segment_rgb_png_with_axes_and_channel(tiny_model: Path, out: Path, tmp_path: Path) -> None:
    src = tmp_path / "color.png"
    rgb = np.stack(
        [_blobs().astype(np.uint8), np.zeros((64, 64), np.uint8), RNG.integers(0, 9, (64, 64))], -1
    )
    Image.fromarray(rgb.astype(np.uint8)).save(src)
    assert _segment(tiny_model, out, str(src), "--axes", "YXC", "--channel", "0") == 0
    labels, _ = _labels_of(out, "color")
    assert labels.shape == (64, 64)
    assert labels.dtype.kind in "ui"


def test_segment_gray_saved_as_rgb_needs_no_flags(tiny_model: Path, out: Path, tmp_path: Path) -> None:
    src = tmp_path / "grayrgb.png"
    gray = (_blobs() // 4).astype(np.uint8)
    Image.fromarray(np.stack([gray] * 3, -1)).save(src)
    assert _segment(tiny_model, out, str(src)) == 0
    assert _labels_of(out, "grayrgb")[0].shape == (64, 64)


def test_ome_tif_stem_drops_ome(tiny_model: Path, out: Path, tmp_path: Path) -> None:
    src = tmp_path / "plate.ome.tif"
    tifffile.imwrite(src, _blobs(), metadata={"axes": "YX"})
    assert _segment(tiny_model, out, str(src)) == 0
    assert _written(out) == ["plate_labels.tif"]


def test_5d_tif_with_axes_and_channel(tiny_model: Path, out: Path, tmp_path: Path) -> None:
    src = tmp_path / "five.tif"
    tifffile.imwrite(src, RNG.integers(0, 500, (2, 2, 2, 16, 16)).astype(np.uint16))
    assert _segment(tiny_model, out, str(src), "--axes", "TZCYX", "--channel", "1") == 0
    labels, _ = _labels_of(out, "five")
    assert labels.shape == (2, 2, 16, 16)


def test_constant_image_writes_labels(tiny_model: Path, out: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "flat.tif"
    tifffile.imwrite(src, np.full((32, 32), 7, np.uint16))
    assert _segment(tiny_model, out, str(src)) == 0
    labels, _ = _labels_of(out, "flat")
    assert labels.shape == (32, 32) and labels.dtype.kind in "ui"
    assert capsys.readouterr().err == ""


def test_min_size_reaches_postprocessing(tiny_model: Path, out: Path, tmp_path: Path) -> None:
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, _blobs())
    assert _segment(tiny_model, out, str(src), "--min-size", "100000", "--threshold", "0.3") == 0
    labels, _ = _labels_of(out, "cells")
    assert labels.max() == 0  # nothing is 100000 pixels large in a 64x64 image


def _configs_seen(monkeypatch: pytest.MonkeyPatch) -> list:
    """The PredictConfig of every in-memory segmentation the CLI runs from now on."""
    import napari_unet.engine.predict as predict

    seen: list = []
    real = predict.iter_segment

    def spy(*args, **kwargs):
        seen.append(kwargs["config"])
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "iter_segment", spy)
    return seen


def test_diameter_reaches_predict_config(
    tiny_model: Path, out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _configs_seen(monkeypatch)
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, _blobs())
    assert _segment(tiny_model, out, str(src), "--diameter", "40") == 0
    labels, _ = _labels_of(out, "cells")
    assert labels.shape == (64, 64) and [c.diameter for c in seen] == [40.0]


def test_size_estimate_is_on_by_default_and_printed_per_file(
    out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The bundled model on ~50 px nuclei: the file's line says what size was found and that
    the image was rescaled; ``--no-size-estimate`` reaches the engine as estimate_size=False."""
    from napari_unet.samples import synthetic  # local: only these tests make nuclei

    seen = _configs_seen(monkeypatch)
    s = synthetic.nuclei_2d(shape=(600, 600), n_nuclei=40, radius=(20, 30), seed=0)
    src = tmp_path / "big.tif"
    tifffile.imwrite(src, s.image)
    assert cli.main(["segment", str(src), "-o", str(out), "--device", "cpu"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert "objects ~" in line and "px, rescaled" in line, line
    assert cli.main(["segment", str(src), "-o", str(out), "--overwrite", "--no-size-estimate"]) == 0
    assert [(c.diameter, c.estimate_size) for c in seen] == [(None, True), (None, False)]
    assert "objects ~" not in capsys.readouterr().out


def test_accurate_reaches_predict_config(
    tiny_model: Path, out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _configs_seen(monkeypatch)
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, _blobs())
    assert _segment(tiny_model, out, str(src), "--accurate") == 0
    assert _segment(tiny_model, out, str(src), "--overwrite") == 0
    assert [c.accurate for c in seen] == [True, False]


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "big"])
def test_bad_diameter_is_a_usage_error(value: str, tmp_path: Path, capsys) -> None:
    args = ["segment", str(tmp_path / "a.tif"), "-o", str(tmp_path / "out"), "--diameter", value]
    assert cli.main(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("napari-unet")]
    assert len(errors) == 1 and "--diameter" in errors[0], errors


# --- bad inputs: one line each, nothing written, exit 1 -------------------------------------------


def _missing(p: Path) -> Path:
    return p.with_name("missing.tif")


def _empty(p: Path) -> Path:
    p = p.with_name("empty.tif")
    p.write_bytes(b"")
    return p


def _truncated(p: Path) -> Path:
    full = p.with_name("full.tif")
    tifffile.imwrite(full, np.stack([_blobs()] * 4), imagej=True, metadata={"axes": "ZYX"})
    p = p.with_name("truncated.tif")
    p.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    return p


def _text_tif(p: Path) -> Path:
    p = p.with_name("text.tif")
    p.write_text("not an image\n")
    return p


def _text_png(p: Path) -> Path:
    p = p.with_name("text.png")
    p.write_text("not an image\n")
    return p


def _float_tif(value: float) -> Callable[[Path], Path]:
    def make(p: Path) -> Path:
        img = _blobs().astype(np.float32)
        img[5, 5] = value
        p = p.with_name(f"float-{value}.tif")
        tifffile.imwrite(p, img)
        return p

    return make


def _zero_size(p: Path) -> Path:
    p = p.with_name("zero.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile warns that a zero-size TIFF is nonconformant
        tifffile.imwrite(p, np.zeros((0, 64), np.uint16))
    return p


def _rgb_png(p: Path) -> Path:
    p = p.with_name("color.png")
    Image.fromarray(RNG.integers(0, 255, (64, 64, 3)).astype(np.uint8)).save(p)
    return p


def _five_d(p: Path) -> Path:
    p = p.with_name("five.tif")
    tifffile.imwrite(p, np.zeros((2, 2, 2, 16, 16), np.uint16))
    return p


BAD_INPUTS = {
    "missing": _missing,
    "empty": _empty,
    "truncated": _truncated,
    "text-named-tif": _text_tif,
    "text-named-png": _text_png,
    "nan": _float_tif(float("nan")),
    "inf": _float_tif(float("inf")),
    "zero-size": _zero_size,
    "rgb-png-without-axes": _rgb_png,
    "5d-without-axes": _five_d,
}


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_input_is_one_line(kind: str, tiny_model: Path, out: Path, tmp_path: Path, capsys) -> None:
    src = BAD_INPUTS[kind](tmp_path / "x")
    assert _segment(tiny_model, out, str(src)) == 1
    _one_error(capsys, src)
    assert _written(out) == []


def test_good_and_bad_inputs_together(tiny_model: Path, out: Path, tmp_path: Path, capsys) -> None:
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, _blobs())
    bad = _text_tif(tmp_path / "x")
    missing = tmp_path / "absent.tif"
    assert _segment(tiny_model, out, str(bad), str(good), str(missing)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert [line.split(": ")[1] for line in err] == [str(bad), str(missing)]
    assert _written(out) == ["good_labels.tif"]


def test_channel_without_channel_axis(tiny_model: Path, out: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, _blobs())
    assert _segment(tiny_model, out, str(src), "--channel", "2") == 1
    assert "--channel" in _one_error(capsys, src)


def test_channel_out_of_range(tiny_model: Path, out: Path, tmp_path: Path, capsys) -> None:
    src = _rgb_png(tmp_path / "x")
    assert _segment(tiny_model, out, str(src), "--axes", "YXC", "--channel", "5") == 1
    assert "out of range" in _one_error(capsys, src)


def test_axes_not_fitting_the_image(tiny_model: Path, out: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, _blobs())
    assert _segment(tiny_model, out, str(src), "--axes", "ZYX") == 1
    _one_error(capsys, src)
    assert _written(out) == []


def test_existing_output_needs_overwrite(tiny_model: Path, out: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, _blobs())
    out.mkdir()
    (out / "cells_labels.tif").write_bytes(b"old")
    assert _segment(tiny_model, out, str(src)) == 1
    assert "--overwrite" in _one_error(capsys, src)
    assert (out / "cells_labels.tif").read_bytes() == b"old"
    assert _segment(tiny_model, out, str(src), "--overwrite") == 0
    assert _labels_of(out, "cells")[0].shape == (64, 64)


def test_two_inputs_with_the_same_stem(tiny_model: Path, out: Path, tmp_path: Path, capsys) -> None:
    a, b = tmp_path / "a" / "cells.tif", tmp_path / "b" / "cells.tif"
    for p in (a, b):
        p.parent.mkdir()
        tifffile.imwrite(p, _blobs())
    assert _segment(tiny_model, out, str(a), str(b)) == 1
    assert "already written" in _one_error(capsys, b)
    assert _written(out) == ["cells_labels.tif"]


def test_same_stem_after_a_failed_input_is_processed(
    tiny_model: Path, out: Path, tmp_path: Path, capsys
) -> None:
    bad = _text_tif(tmp_path / "x")
    good = tmp_path / "text.png"
    Image.fromarray((_blobs() // 4).astype(np.uint8)).save(good)
    assert _segment(tiny_model, out, str(bad), str(good)) == 1
    _one_error(capsys, bad)
    assert _written(out) == ["text_labels.tif"]


def test_progress_bar_on_a_terminal(tiny_model: Path, out: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, _blobs())
    monkeypatch.setattr(batch_report, "stderr_is_tty", lambda: True)
    assert _segment(tiny_model, out, str(src)) == 0
    assert "cells.tif" in capsys.readouterr().err  # the bar is labelled with the file name


# --- problems of the whole call: exit 2, nothing processed ----------------------------------------


def _model_error(model: Path, out: Path, tmp_path: Path, capsys) -> str:
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, _blobs())
    assert _segment(model, out, str(src)) == 2
    line = _one_error(capsys, model)
    assert _written(out) == []
    return line


def test_corrupt_model(out: Path, tmp_path: Path, capsys) -> None:
    model = tmp_path / "corrupt.pt"
    model.write_bytes(os.urandom(4096))
    _model_error(model, out, tmp_path, capsys)


def test_truncated_model(tiny_model: Path, out: Path, tmp_path: Path, capsys) -> None:
    model = tmp_path / "truncated.pt"
    model.write_bytes(tiny_model.read_bytes()[:1000])
    _model_error(model, out, tmp_path, capsys)


def test_model_of_another_architecture(out: Path, tmp_path: Path, capsys) -> None:
    blob = Model(UNet(UNetConfig(base=4, depth=2))).to_dict()
    blob["state_dict"] = UNet(UNetConfig(base=8, depth=2)).state_dict()
    model = tmp_path / "other.pt"
    torch.save(blob, model)
    assert "do not fit" in _model_error(model, out, tmp_path, capsys)


class _CreatesFile:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_model_is_refused_without_running(out: Path, tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    blob = Model(UNet(UNetConfig(base=4, depth=2))).to_dict()
    blob["card"] = {"name": "evil", "payload": _CreatesFile(marker)}
    model = tmp_path / "evil.pt"
    with open(model, "wb") as fh:
        pickle.dump(blob, fh, protocol=2)
    assert "refused" in _model_error(model, out, tmp_path, capsys)
    assert not marker.exists()


def test_unknown_model_name(out: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("NAPARI_UNET_MODEL_DIR", str(tmp_path / "models"))
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, _blobs())
    assert cli.main(["segment", str(src), "-o", str(out), "--model", "no-such-model"]) == 2
    assert "no such model" in _one_error(capsys, "no-such-model")


def test_output_folder_is_a_file(tiny_model: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, _blobs())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert _segment(tiny_model, blocker, str(src)) == 2
    _one_error(capsys, blocker)
    assert _segment(tiny_model, blocker / "sub", str(src)) == 2
    _one_error(capsys, blocker / "sub")


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root writes anywhere")
def test_output_folder_not_writable(tiny_model: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, _blobs())
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        assert _segment(tiny_model, locked, str(src)) == 2
        assert "not writable" in _one_error(capsys, locked)
    finally:
        locked.chmod(0o755)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_device(tiny_model: Path, out: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, _blobs())
    args = ["segment", str(src), "-o", str(out), "--model", str(tiny_model), "--device", "cuda"]
    assert cli.main(args) == 2
    _one_error(capsys, "--device cuda")
    assert _written(out) == []


@pytest.mark.parametrize(
    "bad", [["--threshold", "1.5"], ["--min-size", "-1"], ["--channel", "x"], ["--axes", "QYX"], []]
)
def test_usage_errors(bad: list[str], tmp_path: Path, capsys) -> None:
    args = ["segment", str(tmp_path / "a.tif"), *bad]
    if bad:
        args += ["-o", str(tmp_path / "out")]
    assert cli.main(args) == 2
    assert "usage:" in capsys.readouterr().err


# --- interruption -----------------------------------------------------------------------------------


def test_ctrl_c_during_prediction(tiny_model: Path, out: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import napari_unet.engine.predict as predict

    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, _blobs())

    def interrupted(*args, **kwargs):
        yield predict.Progress(0, 4, "predict")
        raise KeyboardInterrupt

    monkeypatch.setattr(predict, "iter_segment", interrupted)
    assert _segment(tiny_model, out, str(src), str(src)) == 130
    assert _written(out) == []
    assert "Traceback" not in capsys.readouterr().err


def test_ctrl_c_while_writing(tiny_model: Path, out: Path, tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, _blobs())
    real = tifffile.imwrite

    def half_then_interrupt(file, data, **kwargs):
        real(file, data, **kwargs)
        with open(file, "r+b") as fh:
            fh.truncate(os.path.getsize(file) // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(tifffile, "imwrite", half_then_interrupt)
    assert _segment(tiny_model, out, str(src)) == 130
    assert _written(out) == []  # neither the labels nor a temporary file


# --- models listing ---------------------------------------------------------------------------------


def test_models_lists_saved_models_with_card(tmp_path: Path, monkeypatch, capsys) -> None:
    folder = tmp_path / "models"
    card = {**CARD, "description": "tiny test model", "metrics": {"val_f1_iou50": 0.5, "by_group": {}}}
    Model(UNet(UNetConfig(base=4, depth=2)), card=card).save(folder / "tiny.pt")
    (folder / "broken.pt").write_bytes(b"garbage")
    monkeypatch.setenv("NAPARI_UNET_MODEL_DIR", str(folder))
    assert cli.main(["models"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("nuclei  [bundled]")
    assert "tiny  [saved]  val_f1_iou50=0.5" in text
    assert "tiny test model" in text
    assert "broken  [saved]  (unreadable:" in text


# --- the real console script --------------------------------------------------------------------------


def test_console_script_end_to_end(tiny_model: Path, tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("napari-unet")
    if not script.exists():
        pytest.skip("console script not installed (pip install -e .)")
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, _blobs())
    bad = _text_tif(tmp_path / "x")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [str(script), "segment", str(good), str(bad), "-o", str(out), "--model", str(tiny_model)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {bad}: not a TIFF file"]
    assert _written(out) == ["good_labels.tif"]
    assert "good_labels.tif" in proc.stdout


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from napari_unet.cli import main as cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported for --help'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# --- optional smoke test with the bundled model ---------------------------------------------------


@pytest.mark.skipif(not bundled_model_path().is_file(), reason="bundled weights not present")
def test_bundled_model_smoke(out: Path, tmp_path: Path) -> None:
    yy, xx = np.mgrid[:128, :128]
    img = RNG.normal(100, 5, (128, 128))
    for cy, cx in [(30, 30), (30, 90), (90, 40), (95, 100)]:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 12**2] += 600
    src = tmp_path / "nuclei.tif"
    tifffile.imwrite(src, img.astype(np.uint16))
    assert cli.main(["segment", str(src), "-o", str(out), "--device", "cpu"]) == 0
    labels, _ = _labels_of(out, "nuclei")
    assert labels.shape == (128, 128)
    assert 2 <= len(np.unique(labels)) - 1 <= 8  # four bright nuclei; a trained model finds them


# --- napari-unet finetune ---------------------------------------------------------------------------


def _annotated(tmp_path: Path, name: str, seed: int = 0, size: int = 128) -> tuple[Path, Path]:
    """An image of bright discs and its instance labels, as two TIFF files."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    lab = np.zeros((size, size), np.uint16)
    for i in range(1, 9):
        cy, cx = rng.integers(10, size - 10, 2)
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = i
    img = (100 + 400 * (lab > 0) + rng.normal(0, 10, lab.shape)).astype(np.uint16)
    ipath, lpath = tmp_path / f"{name}.tif", tmp_path / f"{name}_labels.tif"
    tifffile.imwrite(ipath, img)
    tifffile.imwrite(lpath, lab)
    return ipath, lpath


def _finetune(model: Path, images: list[Path], labels: list[Path], output: Path, *extra: str) -> int:
    args = ["finetune", "--images", *map(str, images), "--labels", *map(str, labels)]
    return cli.main([*args, "-o", str(output), "--model", str(model), "--device", "cpu", *extra])


def test_finetune_writes_a_model_that_segments(tiny_model: Path, tmp_path: Path, capsys) -> None:
    pairs = [_annotated(tmp_path, f"a{i}", seed=i) for i in range(2)]
    output = tmp_path / "models" / "mine.pt"
    code = _finetune(tiny_model, [p[0] for p in pairs], [p[1] for p in pairs], output, "--steps", "3")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "step 1  loss" in captured.out and "held-out F1" in captured.out
    assert f"saved {output}" in captured.out
    model = Model.load(output)
    assert model.card["name"] == "mine" and model.card["parent"]["name"] == "tiny"
    assert model.card["finetune"]["steps"] == 3 and model.card["finetune"]["images"] == 2
    out = tmp_path / "out"
    assert _segment(output, out, str(pairs[0][0])) == 0
    assert _written(out) == ["a0_labels.tif"]
    # an existing model file is kept unless --overwrite
    assert _finetune(tiny_model, [pairs[0][0]], [pairs[0][1]], output, "--steps", "1") == 2
    assert "exists" in _one_error(capsys, output)
    assert _finetune(tiny_model, [pairs[0][0]], [pairs[0][1]], output, "--steps", "1", "--overwrite") == 0


def test_finetune_ignore_label_and_too_little_to_hold_back(tiny_model: Path, tmp_path: Path, capsys) -> None:
    img, lab = _annotated(tmp_path, "small", size=48)
    data = tifffile.imread(lab)
    data[:, 30:] = 65535
    tifffile.imwrite(lab, data)
    output = tmp_path / "m.pt"
    assert _finetune(tiny_model, [img], [lab], output, "--steps", "2", "--ignore-label", "65535") == 0
    text = capsys.readouterr().out
    assert "too little annotation" in text
    assert Model.load(output).card["finetune"]["annotated_pixels"] == 48 * 30


def _float_labels(tmp_path: Path) -> tuple[Path, Path]:
    img, lab = _annotated(tmp_path, "float")
    tifffile.imwrite(lab, tifffile.imread(lab).astype(np.float32))
    return img, lab


def _shape_differs(tmp_path: Path) -> tuple[Path, Path]:
    img, lab = _annotated(tmp_path, "shape")
    tifffile.imwrite(lab, tifffile.imread(lab)[:100])
    return img, lab


def _no_annotation(tmp_path: Path) -> tuple[Path, Path]:
    img, lab = _annotated(tmp_path, "empty")
    tifffile.imwrite(lab, np.zeros((128, 128), np.uint16))
    return img, lab


def _unreadable_labels(tmp_path: Path) -> tuple[Path, Path]:
    img, lab = _annotated(tmp_path, "text")
    lab.write_text("not an image\n")
    return img, lab


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_float_labels, "floating point"),
        (_shape_differs, "shape"),
        (_no_annotation, "no annotation"),
        (_unreadable_labels, "not a TIFF"),
    ],
)
def test_finetune_bad_pair_is_one_line(make, expected: str, tiny_model: Path, tmp_path: Path, capsys) -> None:
    good = _annotated(tmp_path, "good", seed=5)
    img, lab = make(tmp_path)
    output = tmp_path / "m.pt"
    assert _finetune(tiny_model, [good[0], img], [good[1], lab], output, "--steps", "1") == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"error: {lab}: ") and expected in lines[0], err
    assert lines[1:] == ["nothing trained: fix the inputs above"] and "Traceback" not in err
    assert not output.exists()


def test_finetune_whole_call_errors(tiny_model: Path, tmp_path: Path, capsys) -> None:
    img, lab = _annotated(tmp_path, "a")
    output = tmp_path / "m.pt"
    assert _finetune(tiny_model, [img, img], [lab], output, "--steps", "1") == 2
    assert "1 label file(s) for 2 image(s)" in _one_error(capsys, "--labels")
    assert _finetune(tiny_model, [img], [lab], tmp_path / "m.model", "--steps", "1") == 2
    assert ".pt" in _one_error(capsys, tmp_path / "m.model")
    bad_model = tmp_path / "bad.pt"
    bad_model.write_bytes(b"garbage")
    assert _finetune(bad_model, [img], [lab], output, "--steps", "1") == 2
    _one_error(capsys, bad_model)
    assert not output.exists()


@pytest.mark.parametrize(
    "bad", [["--steps", "0"], ["--time-budget", "-1"], ["--holdout", "0.9"], ["--ignore-label", "x"]]
)
def test_finetune_usage_errors(bad: list[str], tmp_path: Path, capsys) -> None:
    args = ["finetune", "--images", "a.tif", "--labels", "a_l.tif", "-o", str(tmp_path / "m.pt"), *bad]
    assert cli.main(args) == 2
    assert "usage:" in capsys.readouterr().err
