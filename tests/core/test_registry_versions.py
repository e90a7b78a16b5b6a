"""Model versions in the user's folder: save, list, delete (roll back), export, import."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from napari_unet.models.model_file import Model, ModelFileError
from napari_unet.models.registry import (
    BUNDLED_NAME,
    ModelSaveError,
    delete_model,
    export_model,
    import_model,
    list_models,
    load_model,
    save_version,
)
from napari_unet.models.unet import UNet, UNetConfig


def tuned_model() -> Model:
    torch.manual_seed(0)
    card = {"name": "nuclei-ft", "parent": {"name": "nuclei"}, "normalization": {"low": 1, "high": 99.8}}
    return Model(UNet(UNetConfig(base=4, depth=1)), card)


def test_save_version_names_lists_and_loads(model_dir: Path) -> None:
    model = tuned_model()
    a = save_version(model)
    assert re.fullmatch(r"nuclei-ft-\d{8}-\d{6}", a.name) and a.path.parent == model_dir
    b = save_version(model)  # same second: a unique name, never an overwrite
    assert b.name != a.name and b.path.is_file() and a.path.is_file()
    names = [m.name for m in list_models()]
    assert names[0] == BUNDLED_NAME and {a.name, b.name} <= set(names)
    loaded = load_model(a.name)
    assert loaded.card["name"] == a.name and model.card["name"] == "nuclei-ft"
    torch.testing.assert_close(loaded.net.state_dict(), model.net.state_dict())
    c = save_version(model, "my-cells")
    assert c.name == "my-cells"
    with pytest.raises(ValueError, match="exists"):
        save_version(model, "my-cells")
    for bad in ("nuclei", "../evil", "", "a/b", ".hidden", "x.pt"):
        with pytest.raises(ValueError):
            save_version(model, bad)
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]


def test_delete_rolls_back_and_refuses_the_bundled_model(model_dir: Path) -> None:
    info = save_version(tuned_model(), "v1")
    delete_model("v1")
    assert not info.path.exists() and [m.name for m in list_models()] == [BUNDLED_NAME]
    with pytest.raises(ValueError, match="bundled"):
        delete_model(BUNDLED_NAME)
    with pytest.raises(ModelFileError, match="no saved model"):
        delete_model("v1")


def test_export_and_import_round_trip(model_dir: Path, tmp_path: Path) -> None:
    save_version(tuned_model(), "v1")
    out = tmp_path / "exported"
    out.mkdir()
    path = export_model("v1", out)
    assert path == out / "v1.pt" and Model.load(path).card["name"] == "v1"
    path2 = export_model("v1", tmp_path / "copy.pt")
    assert path2.read_bytes() == path.read_bytes()
    info = import_model(path2)
    assert info.name == "copy" and load_model("copy").card["name"] == "v1"
    again = import_model(path2)
    assert again.name == "copy-2"
    assert import_model(path2, name="given").name == "given"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_import_refuses_foreign_and_malicious_files(model_dir: Path, tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Evil()))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    for path in (evil, garbage, foreign, tmp_path / "missing.pt"):
        with pytest.raises(ModelFileError) as info:
            import_model(path)
        assert "\n" not in str(info.value)
    assert not (tmp_path / "pwned").exists()
    assert not model_dir.exists() or list(model_dir.iterdir()) == []


def test_disk_full_leaves_nothing(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tuned_model()
    save_version(model, "ok")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(ModelSaveError, match="No space left") as info:
        save_version(model, "v2")
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in model_dir.iterdir()) == ["ok.pt"]


def test_unusable_model_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("NAPARI_UNET_MODEL_DIR", str(blocker / "models"))
    with pytest.raises(ModelSaveError, match="cannot save"):
        save_version(tuned_model())
    src = tuned_model().save(tmp_path / "src.pt")
    with pytest.raises(ModelSaveError, match="cannot import"):
        import_model(src)


# --- the same from the shell: napari-unet models list/delete/export/import ----------------------------


def test_cli_models_manage_versions(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from napari_unet.cli import main as cli

    saved = save_version(tuned_model(), "mine")
    out = tmp_path / "shared"
    out.mkdir()
    assert cli.main(["models", "export", "mine", str(out)]) == 0
    assert (out / "mine.pt").is_file() and "exported mine" in capsys.readouterr().out
    assert cli.main(["models", "delete", "mine"]) == 0
    assert not saved.path.exists()
    assert cli.main(["models", "import", str(out / "mine.pt"), "--name", "back"]) == 0
    assert "imported" in capsys.readouterr().out
    assert cli.main(["models", "list"]) == 0
    assert "back  [saved]" in capsys.readouterr().out
    assert isinstance(load_model("back"), Model)


@pytest.mark.parametrize(
    "args, message",
    [
        (["delete", BUNDLED_NAME], "error: nuclei: the bundled model cannot be deleted"),
        (["delete", "nope"], "error: nope: no saved model of that name"),
        (["export", "nope", "x.pt"], "error: nope:"),
    ],
)
def test_cli_models_errors_are_one_line(
    model_dir: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    from napari_unet.cli import main as cli

    assert cli.main(["models", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_cli_models_import_refuses_junk(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from napari_unet.cli import main as cli

    junk = tmp_path / "junk.pt"
    junk.write_text("not a model")
    assert cli.main(["models", "import", str(junk)]) == 1
    err = capsys.readouterr().err
    assert "not a readable model file" in err and err.count("\n") == 1
    assert not model_dir.exists() or not list(model_dir.glob("*.pt"))
