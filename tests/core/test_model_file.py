"""Model files are user-supplied: every broken, foreign or hostile file must be refused with a
one-line ModelFileError, and a pickle's code must never run while it is refused."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from napari_unet.models.model_file import FORMAT_NAME, FORMAT_VERSION, Model, ModelFileError
from napari_unet.models.registry import load_model
from napari_unet.models.unet import UNet, UNetConfig


class _CreatesFile:
    """Unpickling this calls ``open(marker, "w")``: proof that a loader ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _tiny(tmp_path: Path, name: str = "tiny.pt") -> Path:
    card = {"name": "tiny", "normalization": {"low": 1, "high": 99.8}}
    return Model(UNet(UNetConfig(base=4, depth=2)), card=card).save(tmp_path / name)


def _refused(path: Path, *fragments: str) -> str:
    with pytest.raises(ModelFileError) as info:
        Model.load(path)
    msg = str(info.value)
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


def test_good_file_round_trips(tmp_path: Path) -> None:
    model = Model.load(_tiny(tmp_path))
    assert model.name == "tiny"
    assert model.config == UNetConfig(base=4, depth=2)
    assert not model.net.training


def test_corrupt_bytes(tmp_path: Path) -> None:
    p = tmp_path / "corrupt.pt"
    p.write_bytes(bytes(range(256)) * 8)
    # torch reads these bytes as a legacy pickle; model.py may call that "unsafe" or "unreadable"
    _refused(p)


def test_text_file(tmp_path: Path) -> None:
    p = tmp_path / "notes.pt"
    p.write_text("these are not weights\n")
    _refused(p, "not a readable model file")


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.pt"
    p.write_bytes(b"")
    _refused(p)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.95])
def test_truncated_file(tmp_path: Path, fraction: float) -> None:
    good = _tiny(tmp_path).read_bytes()
    p = tmp_path / "truncated.pt"
    p.write_bytes(good[: int(len(good) * fraction)])
    _refused(p)


def test_missing_file(tmp_path: Path) -> None:
    _refused(tmp_path / "absent.pt", "no such model file")


def test_foreign_architecture_state_dict(tmp_path: Path) -> None:
    """Right format, weights of a deeper net: the weights do not fit the declared architecture."""
    blob = Model(UNet(UNetConfig(base=4, depth=2))).to_dict()
    blob["state_dict"] = UNet(UNetConfig(base=4, depth=3)).state_dict()
    p = tmp_path / "mismatch.pt"
    torch.save(blob, p)
    _refused(p, "weights do not fit the architecture")


def test_plain_state_dict_of_another_network(tmp_path: Path) -> None:
    """A bare torch state dict (what most projects save) is not a napari-unet model file."""
    p = tmp_path / "resnet_like.pt"
    torch.save(torch.nn.Linear(4, 2).state_dict(), p)
    _refused(p, "not a napari-unet model file")


def test_wrong_format_key(tmp_path: Path) -> None:
    blob = Model(UNet(UNetConfig(base=4, depth=2))).to_dict()
    blob["format"] = "cellpose"
    p = tmp_path / "other.pt"
    torch.save(blob, p)
    _refused(p, "not a napari-unet model file")


def test_newer_format_version(tmp_path: Path) -> None:
    blob = Model(UNet(UNetConfig(base=4, depth=2))).to_dict()
    blob["format_version"] = FORMAT_VERSION + 1
    p = tmp_path / "future.pt"
    torch.save(blob, p)
    _refused(p, "newer napari-unet")


def test_unknown_architecture_argument(tmp_path: Path) -> None:
    blob = Model(UNet(UNetConfig(base=4, depth=2))).to_dict()
    blob["config"]["attention"] = True
    p = tmp_path / "attention.pt"
    torch.save(blob, p)
    _refused(p, "unknown architecture arguments")


def test_missing_weights(tmp_path: Path) -> None:
    blob = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": {"base": 4, "depth": 2}}
    p = tmp_path / "noweights.pt"
    torch.save(blob, p)
    _refused(p, "no weights")


def test_payload_is_live_under_plain_pickle(tmp_path: Path) -> None:
    """Control: the payload used below really runs code when unpickled unsafely."""
    marker = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(_CreatesFile(marker)))
    assert marker.exists()


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_without_running(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    blob = Model(UNet(UNetConfig(base=4, depth=2))).to_dict()
    blob["card"] = {"name": "evil", "payload": _CreatesFile(marker)}
    p = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(blob, p)
    else:
        with open(p, "wb") as fh:
            pickle.dump(blob, fh, protocol=2)  # torch.load's own protocol
    assert not marker.exists()
    msg = _refused(p)
    assert "refused" in msg or "not a readable model file" in msg
    assert not marker.exists(), "loading the model file ran code from it"


def test_registry_load_model_by_path_and_unknown_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("NAPARI_UNET_MODEL_DIR", str(tmp_path / "models"))
    assert load_model(str(_tiny(tmp_path))).name == "tiny"
    with pytest.raises(ModelFileError, match="no such model"):
        load_model("does-not-exist")
