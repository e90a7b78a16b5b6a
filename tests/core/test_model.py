"""The U-Net itself: shapes for 'same' and 'valid' padding, the paper's configuration,
a forward/backward pass, and the model file round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.models.model_file import Model, ModelFileError
from napari_unet.models.unet import UNet, UNetConfig


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_same_padding_keeps_size(depth: int) -> None:
    net = UNet(UNetConfig(in_channels=2, out_channels=3, base=4, depth=depth)).eval()
    side = 4 * net.multiple
    out = net(torch.zeros(2, 2, side, side))
    assert out.shape == (2, 3, side, side)


def test_valid_padding_matches_output_size() -> None:
    net = UNet(UNetConfig(base=4, depth=2, padding="valid", norm="none")).eval()
    size = net.valid_input_size(20)
    out = net(torch.zeros(1, 1, size, size))
    assert out.shape[-1] == net.output_size(size) >= 20


def test_paper_configuration_sizes() -> None:
    """572x572 in gives 388x388 out, as in Ronneberger et al. 2015, Fig. 1."""
    cfg = UNetConfig.paper()
    assert (cfg.base, cfg.depth, cfg.padding, cfg.norm) == (64, 4, "valid", "none")
    net = UNet(cfg)
    assert net.output_size(572) == 388
    channels = [m[0].out_channels for m in net.down] + [net.bottleneck[0].out_channels]
    assert channels == [64, 128, 256, 512, 1024]


def test_forward_backward_updates_weights() -> None:
    net = UNet(UNetConfig(base=4, depth=2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = net.head.weight.detach().clone()
    loss = net(torch.randn(2, 1, 16, 16)).square().mean()
    loss.backward()
    opt.step()
    assert all(p.grad is not None for p in net.parameters())
    assert not torch.equal(before, net.head.weight)


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="padding"):
        UNetConfig(padding="full")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        UNetConfig(base=0)


def test_save_load_round_trip(tmp_path) -> None:
    net = UNet(UNetConfig(base=4, depth=2)).eval()
    card = {"name": "tiny", "normalization": {"low": 2.0, "high": 99.0}}
    path = Model(net, card).save(tmp_path / "m.pt")
    loaded = Model.load(path)
    assert loaded.config == net.config
    assert loaded.card == card and loaded.normalization == (2.0, 99.0)
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        np.testing.assert_allclose(loaded.net(x).numpy(), net(x).numpy(), rtol=1e-6)
    assert not list(tmp_path.glob(".*tmp")), "no temporary file left behind"


def test_save_is_atomic_on_failure(tmp_path, monkeypatch) -> None:
    target = tmp_path / "m.pt"
    Model(UNet(UNetConfig(base=4, depth=1))).save(target)
    good = target.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="No space"):
        Model(UNet(UNetConfig(base=4, depth=2))).save(target)
    assert target.read_bytes() == good, "the old file is intact"
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_load_missing_file(tmp_path) -> None:
    with pytest.raises(ModelFileError, match="no such model file"):
        Model.load(tmp_path / "nope.pt")


PUBLIC_API_MODULES = [
    "models.unet",
    "models.model_file",
    "models.registry",
    "engine.predict",
    "training.finetune",
    "io.images",
    "scale.chunked",
    "scale.batch",
    "scale.batch_types",
    "exchange.bioimageio_export",
    "exchange.bioimageio_import",
    "proofread",
]


@pytest.mark.parametrize("name", PUBLIC_API_MODULES)
def test_docstring_examples_run(name: str, tmp_path, monkeypatch) -> None:
    """The Examples sections of the public API are code a user may copy: they must run as shown."""
    import doctest
    import importlib
    import tempfile

    from napari_unet.models.registry import bundled_model_path

    if name != "models.unet" and not bundled_model_path().is_file():
        pytest.skip("bundled weights not present")
    monkeypatch.setenv("NAPARI_UNET_MODEL_DIR", str(tmp_path))  # the examples point it elsewhere; restored
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the examples' scratch folders go here
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(f"napari_unet.{name}")
    result = doctest.testmod(module, verbose=False)
    assert result.failed == 0


def test_public_api_is_documented_the_numpydoc_way() -> None:
    """Everything in ``napari_unet.__all__`` says what it takes, what it gives and shows how."""
    import inspect

    import napari_unet

    for name in napari_unet.__all__:
        if name == "__version__":
            continue
        doc = inspect.getdoc(getattr(napari_unet, name)) or ""
        assert "Examples\n--------" in doc, f"{name}: no Examples section"
        if inspect.isfunction(getattr(napari_unet, name)):
            params = inspect.signature(getattr(napari_unet, name)).parameters
            assert "Returns\n-------" in doc or "Yields\n------" in doc, f"{name}: no Returns section"
            assert not params or "Parameters\n----------" in doc, f"{name}: no Parameters section"
            for param in params:
                assert param in doc, f"{name}: parameter {param!r} is not documented"
