"""Packaging promises: a light import, a Qt-free core, the registry."""

from __future__ import annotations

import subprocess
import sys

import pytest

CORE = [
    "models.unet",
    "models.model_file",
    "models.registry",
    "training.targets",
    "training.augment",
    "training.loop",
    "engine.postprocess",
    "engine.metrics",
    "engine.normalize",
    "engine.devices",
]


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_import_is_light() -> None:
    heavy = "('torch', 'qtpy', 'napari', 'PyQt6')"
    r = run(f"import sys, napari_unet; print(sorted(m for m in {heavy} if m in sys.modules))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_core_imports_without_qt_or_napari() -> None:
    """Block Qt/napari/magicgui imports, then import every core module."""
    modules = [*CORE, "engine.tiling", "engine.predict", "common.axes", "io.images", "training.annotations"]
    modules += ["scale.chunked", "io.omezarr", "scale.batch", "cli.main", "samples.synthetic"]
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        blocked = ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', 'magicgui', 'vispy')\n"
        "        if name.split('.')[0] in blocked:\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {modules!r}:\n"
        "    __import__('napari_unet.' + m)\n"
        "print('ok')\n"
    )
    r = run(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_registry_lists_bundled_first(tmp_path, monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    from napari_unet.models.model_file import Model, ModelFileError
    from napari_unet.models.registry import BUNDLED_NAME, list_models, load_model, resolve_model_path
    from napari_unet.models.unet import UNet, UNetConfig

    monkeypatch.setenv("NAPARI_UNET_MODEL_DIR", str(tmp_path))
    torch.set_num_threads(1)
    Model(UNet(UNetConfig(base=4, depth=1)), {"name": "mine"}).save(tmp_path / "mine-v1.pt")
    names = [m.name for m in list_models()]
    assert names == [BUNDLED_NAME, "mine-v1"]
    assert load_model("mine-v1").card["name"] == "mine"
    assert resolve_model_path(str(tmp_path / "mine-v1.pt")) == tmp_path / "mine-v1.pt"
    with pytest.raises(ModelFileError, match="no such model"):
        load_model("does-not-exist")
