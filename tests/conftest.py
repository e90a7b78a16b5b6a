"""Shared test setup: one torch thread, a private model folder, a tiny model on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# the test machine is shared: one thread each for torch and the BLAS libraries
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def _torch_one_thread() -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Saved models go to a per-test folder (created on first save), never to the user's; so do
    the label stores of lazily segmented stacks (the user cache otherwise)."""
    folder = tmp_path / "user-models"
    monkeypatch.setenv("NAPARI_UNET_MODEL_DIR", str(folder))
    monkeypatch.setenv("NAPARI_UNET_CACHE_DIR", str(tmp_path / "user-cache"))
    return folder


TINY_CARD = {
    "name": "tiny",
    "description": "random tiny U-Net for fast widget tests",
    "target": "3class-bg-interior-boundary",
    "normalization": {"method": "percentile", "low": 1.0, "high": 99.8},
    "postprocess": {"threshold": 0.4, "seed_threshold": 0.5, "min_size": 3},
}


@pytest.fixture
def tiny_model_path(model_dir: Path) -> Path:
    """A random base-4, depth-2 U-Net saved as a user model named 'tiny' (fast, not accurate)."""
    import torch

    from napari_unet.models.model_file import Model
    from napari_unet.models.unet import UNet, UNetConfig

    torch.manual_seed(0)
    net = UNet(UNetConfig(base=4, depth=2))
    net.eval()
    return Model(net, card=dict(TINY_CARD)).save(model_dir / "tiny.pt")


@pytest.fixture
def notes(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The dock widgets' napari notifications (Segment's and Fine-tune's), by severity."""
    from napari_unet._widgets import _notify

    got: dict[str, list[str]] = {"error": [], "warning": [], "info": []}
    monkeypatch.setattr(_notify, "show_error", got["error"].append)
    monkeypatch.setattr(_notify, "show_warning", got["warning"].append)
    monkeypatch.setattr(_notify, "show_info", got["info"].append)
    return got


@pytest.fixture
def blob_model():
    """A real UNet (depth 0) wired to say "interior" where the normalised image is > 0.5: its
    labels are the connected bright regions, so label ids, z-linking, frames and chunk
    stitching can be checked exactly."""
    import torch

    from napari_unet.models.model_file import Model
    from napari_unet.models.unet import UNet, UNetConfig

    net = UNet(UNetConfig(base=1, depth=0, norm="none"))
    with torch.no_grad():
        for conv in net.bottleneck:
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.zero_()
                conv.weight[0, 0, 1, 1] = 1.0
                conv.bias.zero_()
        net.head.weight[:, 0, 0, 0] = torch.tensor([-20.0, 20.0, 0.0])
        net.head.bias[:] = torch.tensor([10.0, -10.0, -10.0])
    return Model(net.eval(), {"name": "blobs", "postprocess": {"min_size": 10}})


@pytest.fixture
def write_ome_tiff():
    """A writer of a (T 2, C 3, Z 4, 16, 20) uint16 OME-TIFF with pixel sizes (0.5 um in Y/X,
    2 um in Z), a 30 s time step and channel names DAPI, GFP, RFP; it returns the pixels."""
    import numpy as np
    import tifffile

    def write(path: Path) -> np.ndarray:
        data = np.random.default_rng(2).integers(0, 4000, (2, 3, 4, 16, 20)).astype(np.uint16)
        metadata = {
            "axes": "TCZYX",
            "PhysicalSizeX": 0.5,
            "PhysicalSizeY": 0.5,
            "PhysicalSizeZ": 2.0,
            "TimeIncrement": 30.0,
            "Channel": {"Name": ["DAPI", "GFP", "RFP"]},
        }
        tifffile.imwrite(path, data, ome=True, metadata=metadata)
        return data

    return write


GUI_FIXTURES = {"make_napari_viewer", "qtbot"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark by level: ``gui`` for every test that needs a viewer or Qt (tests/widgets, tests/e2e,
    or a test using those fixtures), ``e2e`` for the end-to-end tests; the rest is the Qt-free core
    (``pytest -m "not gui"``)."""
    for item in items:
        parts = Path(str(item.path)).parts
        if "e2e" in parts:
            item.add_marker(pytest.mark.e2e)
        if "widgets" in parts or "e2e" in parts or GUI_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.gui)
