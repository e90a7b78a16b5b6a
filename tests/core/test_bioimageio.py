"""bioimage.io model packages: export passes bioimage.io's own model test, the package runs without
napari-unet and reproduces our probabilities, import restores the model exactly, and every package
napari-unet cannot import is refused in one line without running anything from it."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from napari_unet.cli import main as cli
from napari_unet.engine.predict import segment
from napari_unet.exchange import bioimageio_check, bioimageio_export, bioimageio_import
from napari_unet.exchange.bioimageio_export import export_bioimageio
from napari_unet.exchange.bioimageio_import import import_package, read_package
from napari_unet.exchange.bioimageio_rdf import (
    CONFIG_KEY,
    PackageError,
    PackageFiles,
    describe,
    documentation,
)
from napari_unet.models.model_file import Model
from napari_unet.models.registry import list_models, load_model
from napari_unet.models.unet import UNet, UNetConfig
from napari_unet.samples.synthetic import nuclei_2d

CARD = {
    "name": "tiny",
    "description": "tiny U-Net for the package tests",
    "target": "3class-bg-interior-boundary",
    "normalization": {"method": "percentile", "low": 1.0, "high": 99.8},
    "postprocess": {"threshold": 0.4, "seed_threshold": 0.5, "min_size": 3},
    "object_diameter": 18.5,
    "metrics": {"heldout_f1_after": 0.5},
}


def _tiny_net() -> UNet:
    """A base-4, depth-2 U-Net whose batch norms have real statistics (folding them then matters)."""
    torch.manual_seed(0)
    net = UNet(UNetConfig(base=4, depth=2))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.fixture(scope="module")
def tiny() -> Model:
    return Model(_tiny_net(), card=dict(CARD))


@pytest.fixture(scope="module")
def package(tiny: Model, tmp_path_factory) -> Path:
    """The tiny model exported once (without the spec's test; one test runs it)."""
    return export_bioimageio(tiny, tmp_path_factory.mktemp("pkg") / "tiny.zip", check=False)


def _rdf(path: Path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return yaml.safe_load(zf.read("rdf.yaml"))


def _member(path: Path, name: str) -> bytes:
    with zipfile.ZipFile(path) as zf:
        return zf.read(name)


def _npy(path: Path, name: str) -> np.ndarray:
    return np.load(io.BytesIO(_member(path, name)), allow_pickle=False)


def _rewrite(src: Path, dest: Path, rdf: dict | None = None, members: dict[str, bytes] | None = None) -> Path:
    """A copy of package ``src`` with its description and some members replaced."""
    with zipfile.ZipFile(src) as zf:
        content = {n: zf.read(n) for n in zf.namelist()}
    if rdf is not None:
        content["rdf.yaml"] = yaml.safe_dump(rdf, sort_keys=False).encode()
    content.update(members or {})
    with zipfile.ZipFile(dest, "w") as zf:
        for name, data in content.items():
            zf.writestr(name, data)
    return dest


# --- export --------------------------------------------------------------------------------------------


def test_the_package_passes_bioimageio_model_test(package: Path) -> None:
    """bioimage.io's own test: the description against the spec (0.5), both weight formats reproducing the
    test output from the test input (through the spec's scale_range), other tile sizes and batch sizes."""
    result = bioimageio_check.check_package(package)
    assert result.passed, result.failures
    assert result.summary.startswith("passed (") and result.failures == []


def test_the_package_runs_without_napari_unet_and_reproduces_our_probabilities(
    package: Path, tiny: Model, monkeypatch, tmp_path: Path
) -> None:
    """The architecture file alone (napari_unet made unimportable), the state dict loaded with
    weights_only=True, the spec's normalisation -> the test output, which is our engine's, to 1e-3;
    the TorchScript (folded batch norm) too."""
    rdf = _rdf(package)
    entry = rdf["weights"]["pytorch_state_dict"]
    source = tmp_path / "arch.py"
    source.write_bytes(_member(package, entry["architecture"]["source"]))
    monkeypatch.setitem(sys.modules, "napari_unet", None)  # any `import napari_unet...` now fails
    spec = importlib.util.spec_from_file_location("standalone_unet", source)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "standalone_unet", module)
    spec.loader.exec_module(module)
    net = getattr(module, entry["architecture"]["callable"])(**entry["architecture"]["kwargs"])
    state = torch.load(io.BytesIO(_member(package, entry["source"])), weights_only=True)
    net.load_state_dict(state)
    net.eval()

    raw = _npy(package, "test_input.npy")
    expected = _npy(package, "test_output.npy")
    assert raw.shape == (1, 1, 256, 256) and expected.shape == (1, 3, 256, 256)
    kwargs = rdf["inputs"][0]["preprocessing"][0]["kwargs"]
    lo, hi = np.percentile(raw, [kwargs["min_percentile"], kwargs["max_percentile"]])
    x = torch.from_numpy(((raw - lo) / (hi - lo + 1e-6)).astype(np.float32))
    with torch.no_grad():
        ours = net(x).numpy()
        traced = torch.jit.load(io.BytesIO(_member(package, rdf["weights"]["torchscript"]["source"])))
        scripted = traced(x).numpy()
    assert np.abs(ours - expected).max() < 1e-3
    assert np.abs(scripted - expected).max() < 1e-3
    assert np.allclose(expected.sum(axis=1), 1.0, atol=1e-5)  # probabilities, not logits
    assert expected.std() > 1e-3  # a test that compares something


def test_the_description_says_what_the_spec_cannot(package: Path, tiny: Model) -> None:
    rdf = _rdf(package)
    assert rdf["format_version"].startswith("0.5") and rdf["type"] == "model"
    assert [a.get("id", a["type"]) for a in rdf["inputs"][0]["axes"]] == ["batch", "channel", "y", "x"]
    out_axes = rdf["outputs"][0]["axes"]
    assert out_axes[1]["channel_names"] == ["background", "interior", "boundary"]
    assert all(a["halo"] == 32 for a in out_axes[2:])
    assert {"doi": "10.1007/978-3-319-24574-4_28"}.items() <= rdf["cite"][0].items()
    assert rdf["cite"][1]["doi"] == "10.1038/s41592-019-0612-7"
    assert b"&id" not in _member(package, "rdf.yaml")  # no YAML aliases (the card's postprocess twice)
    ours = rdf["config"][CONFIG_KEY]
    assert ours["card"] == CARD and ours["postprocess"] == CARD["postprocess"] and ours["lineage"] == []
    with zipfile.ZipFile(package) as zf:
        names = set(zf.namelist())
        readme = zf.read(rdf["documentation"]).decode()
    assert {"cover.png", "sample_input.tif", "test_input.npy", "weights_torchscript.pt"} <= names
    assert "## Validation" in readme and "seeded watershed" in readme and "threshold" in readme
    for entry in (rdf["weights"]["pytorch_state_dict"], rdf["inputs"][0]["test_tensor"]):
        assert hashlib.sha256(_member(package, entry["source"])).hexdigest() == entry["sha256"]


def test_a_fine_tuned_model_carries_its_lineage_and_its_parents_card() -> None:
    card = {**CARD, "name": "nuclei-ft-x", "parent": {"name": "nuclei", "parent": None}}
    model = Model(_tiny_net(), card=card)
    readme = documentation(model, bundled_card_text="# Model card: `nuclei` (bundled)")
    assert "fine-tuned from `nuclei`" in readme and "# Model card: `nuclei` (bundled)" in readme
    assert '"name": "nuclei-ft-x"' in readme  # the fine-tuned card itself, rendered
    files = bioimageio_export.NAMES
    rdf = describe(
        model,
        PackageFiles(
            **files,
            architecture_callable="UNetProbabilities",
            sha256=dict.fromkeys(files.values(), "0" * 64),
            pytorch_version="2.0.0",
        ),
    )
    assert rdf["config"][CONFIG_KEY]["lineage"] == ["nuclei"]
    assert "fine-tuned from nuclei" in rdf["description"]


def test_export_checks_before_writing_and_leaves_nothing_when_the_test_fails(
    tiny: Model, tmp_path: Path, monkeypatch
) -> None:
    """A package whose test output our net does not reproduce is refused by bioimage.io's test, and
    nothing is written (nor any temporary file left)."""
    right = bioimageio_export.reference_probabilities

    def swapped(model: Model, raw: np.ndarray) -> np.ndarray:
        return right(model, raw)[:, ::-1].copy()  # the classes in the wrong order

    monkeypatch.setattr(bioimageio_export, "reference_probabilities", swapped)
    dest = tmp_path / "bad.zip"
    with pytest.raises(PackageError, match=r"model test failed: .*Reproduce test outputs") as err:
        export_bioimageio(tiny, dest, test_image=nuclei_2d().image[:96, :96], check=True)
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_what_the_format_cannot_hold(tmp_path: Path) -> None:
    valid = Model(UNet(UNetConfig(base=4, depth=2, padding="valid")), card={"name": "paper-like"})
    with pytest.raises(PackageError, match="'valid' padding"):
        export_bioimageio(valid, tmp_path / "v.zip", check=False)
    with pytest.raises(PackageError, match="too small"):
        export_bioimageio(Model(_tiny_net(), card=CARD), tmp_path / "s.zip", test_image=np.ones((40, 40)))
    assert list(tmp_path.iterdir()) == []


def test_check_without_bioimageio_core_says_how_to_get_it(monkeypatch, package: Path) -> None:
    monkeypatch.setattr(bioimageio_check, "is_available", lambda: False)
    hint = r'pip install "napari-unet\[bioimageio\]"'
    with pytest.raises(bioimageio_check.BioimageioMissingError, match=hint):
        bioimageio_check.check_package(package)


# --- import --------------------------------------------------------------------------------------------


def test_round_trip_restores_the_model_and_its_labels(blob_model: Model, tmp_path: Path) -> None:
    """Export -> import -> segment: the same weights, the same card, the same labels on a real image."""
    image = nuclei_2d(seed=4).image
    path = export_bioimageio(blob_model, tmp_path / "blobs.zip", test_image=image, check=False)
    info = import_package(path)
    back = load_model(info.name)
    assert info.name == "blobs" and [i.name for i in list_models()] == ["nuclei", "blobs"]
    assert back.card == blob_model.card and back.config == blob_model.config
    before, after = blob_model.net.state_dict(), back.net.state_dict()
    assert list(before) == list(after) and all(torch.equal(before[k], after[k]) for k in before)
    expected = segment(image, model=blob_model, axes="YX")
    assert expected.max() > 10  # objects found: the comparison means something
    np.testing.assert_array_equal(segment(image, model=back, axes="YX"), expected)
    assert import_package(path).name == "blobs-2"  # a second import never overwrites


def test_a_pt_model_file_is_not_taken_for_a_package(package: Path, tiny: Model, tmp_path: Path) -> None:
    """torch's own format is a zip too: the import must still route a .pt file to the .pt import."""
    pt = tiny.save(tmp_path / "tiny.pt")
    assert zipfile.is_zipfile(pt) and not bioimageio_import.is_package(pt)
    renamed = tmp_path / "package.bin"
    renamed.write_bytes(package.read_bytes())
    assert bioimageio_import.is_package(renamed) and bioimageio_import.is_package(tmp_path / "none.zip")


def _foreign(rdf: dict) -> dict:
    rdf = dict(rdf)
    rdf["config"] = {k: v for k, v in rdf["config"].items() if k != CONFIG_KEY}
    return rdf


def _weights_source(rdf: dict, source: str) -> dict:
    rdf = yaml.safe_load(yaml.safe_dump(rdf))
    rdf["weights"]["pytorch_state_dict"]["source"] = source
    return rdf


class _Boom:
    def __reduce__(self):
        return (exec, ("open('pwned', 'w').write('x')",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch, about our hand-made pickle
@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("foreign", "not a napari-unet package: it has no config.napari_unet; napari-unet can import only"),
        ("dataset", "a bioimage.io dataset package, not a model"),
        ("no_rdf", "not a bioimage.io package: no rdf.yaml or bioimageio.yaml inside"),
        ("not_zip", "not a bioimage.io package (not a zip file)"),
        ("bad_yaml", "not a bioimage.io package: its rdf.yaml is not valid YAML"),
        ("traversal", "points outside the package"),
        ("url", "is a download"),
        ("missing", "does not hold it"),
        ("sha", "does not match its sha256"),
        ("pickle", "is not a plain state dict, refused"),
        ("newer", "made by a newer napari-unet (package version 99)"),
        ("huge", "over the 0 MiB limit"),
    ],
)
def test_import_refuses_in_one_line_and_saves_nothing(
    case: str, reason: str, package: Path, tmp_path: Path, monkeypatch
) -> None:
    rdf = _rdf(package)
    dest = tmp_path / f"{case}.zip"
    if case == "foreign":
        _rewrite(package, dest, _foreign(rdf))
    elif case == "dataset":
        _rewrite(package, dest, {**rdf, "type": "dataset"})
    elif case == "no_rdf":
        with zipfile.ZipFile(dest, "w") as zf:
            zf.writestr("weights.pt", b"x")
    elif case == "not_zip":
        dest.write_text("hello")
    elif case == "bad_yaml":
        _rewrite(package, dest, members={"rdf.yaml": b"a: [1, 2\n"})
    elif case == "traversal":
        _rewrite(package, dest, _weights_source(rdf, "../../outside.pt"))
    elif case == "url":
        _rewrite(package, dest, _weights_source(rdf, "https://example.org/w.pt"))
    elif case == "missing":
        _rewrite(package, dest, _weights_source(rdf, "elsewhere.pt"))
    elif case == "sha":
        _rewrite(package, dest, members={"weights.pt": _member(package, "weights.pt")[:-10] + b"0" * 10})
    elif case == "pickle":
        evil = pickle.dumps({"weights": _Boom()})
        rdf["weights"]["pytorch_state_dict"]["sha256"] = hashlib.sha256(evil).hexdigest()
        _rewrite(package, dest, rdf, members={"weights.pt": evil})
        monkeypatch.chdir(tmp_path)
    elif case == "newer":
        rdf["config"][CONFIG_KEY]["package_version"] = 99
        _rewrite(package, dest, rdf)
    elif case == "huge":
        monkeypatch.setattr(bioimageio_import, "MAX_WEIGHTS_BYTES", 1000)
        dest = package
    with pytest.raises(PackageError) as err:
        import_package(dest)
    message = str(err.value)
    assert message.startswith(f"{dest}: ") and "\n" not in message
    assert reason in message
    assert [i.name for i in list_models()] == ["nuclei"]
    assert not (tmp_path / "pwned").exists()


# --- the command line -------------------------------------------------------------------------------


def test_cli_exports_a_package_for_a_zip_path_and_imports_it_back(
    tiny: Model, model_dir: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    tiny.save(model_dir / "tiny.pt")
    monkeypatch.setattr(bioimageio_check, "is_available", lambda: False)  # as without the extra
    out = tmp_path / "tiny.zip"
    assert cli.main(["models", "export", "tiny", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"exported tiny to {out} (bioimage.io package" in captured.out and "not tested" in captured.out
    assert captured.err.strip() == (
        'note: bioimage.io\'s model test needs bioimageio.core: pip install "napari-unet[bioimageio]"'
    )
    assert _rdf(out)["config"][CONFIG_KEY]["card"]["name"] == "tiny"

    assert cli.main(["models", "import", str(out), "--name", "back"]) == 0
    assert capsys.readouterr().out.startswith(f"imported {out} as back")
    assert load_model("back").card == {**read_package(out).card, "name": "back"}

    pt = tmp_path / "tiny-copy.pt"
    assert cli.main(["models", "export", "tiny", str(pt)]) == 0  # a .pt path keeps our own format
    assert Model.load(pt).name == "tiny"


def test_cli_refuses_a_foreign_package_in_one_line(package: Path, tmp_path: Path, capsys) -> None:
    foreign = _rewrite(package, tmp_path / "other.zip", _foreign(_rdf(package)))
    assert cli.main(["models", "import", str(foreign)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {foreign}: not a napari-unet package")
    assert cli.main(["models", "export", "nope", str(tmp_path / "x.zip"), "--format", "bioimageio"]) == 1
    assert capsys.readouterr().err.startswith("error: nope: ")
    assert not (tmp_path / "x.zip").exists()


def test_a_package_given_as_a_model_file_says_import_it_first(package: Path) -> None:
    from napari_unet.engine.predict import segment
    from napari_unet.models.model_file import ModelFileError

    with pytest.raises(ModelFileError, match=r"a bioimage.io package, not a model file: import it first"):
        segment(np.zeros((32, 32), np.float32), model=package, axes="YX")
