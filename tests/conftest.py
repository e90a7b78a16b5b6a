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

    from napari_unet.model import Model, UNet, UNetConfig

    torch.manual_seed(0)
    net = UNet(UNetConfig(base=4, depth=2))
    net.eval()
    return Model(net, card=dict(TINY_CARD)).save(model_dir / "tiny.pt")


@pytest.fixture
def notes(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The dock widgets' napari notifications (Segment's and Fine-tune's), by severity."""
    from napari_unet._widgets import finetune_widget, segment_widget

    got: dict[str, list[str]] = {"error": [], "warning": [], "info": []}
    for module in (finetune_widget, segment_widget):
        monkeypatch.setattr(module, "show_error", got["error"].append)
        monkeypatch.setattr(module, "show_warning", got["warning"].append)
        monkeypatch.setattr(module, "show_info", got["info"].append)
    return got
