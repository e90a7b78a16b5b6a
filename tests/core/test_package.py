"""Packaging promises: a light import, a Qt-free core, the registry."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "napari_unet"
GUI = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "napari", "magicgui", "vispy")


def core_modules() -> list[str]:
    """Every module of the package outside ``_widgets`` (the napari glue included: it returns
    plain layer data and imports no napari), found by walking the source tree, so that modules
    added or split later are covered without a list to keep."""
    names = []
    for path in sorted(SRC.rglob("*.py")):
        parts = ["napari_unet", *path.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        if "_widgets" not in parts:
            names.append(".".join(parts))
    return names


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_import_is_light() -> None:
    heavy = "('torch', 'qtpy', 'napari', 'PyQt6')"
    r = run(f"import sys, napari_unet; print(sorted(m for m in {heavy} if m in sys.modules))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_core_imports_without_qt_or_napari() -> None:
    """Block Qt/napari/magicgui imports, then import every core module."""
    modules = core_modules()
    some = {
        "napari_unet",
        "napari_unet.engine.predict",
        "napari_unet.io.napari_reader",
        "napari_unet.cli.main",
    }
    assert some <= set(modules), "the walk missed modules it should find"
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {GUI!r}:\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {modules!r}:\n"
        "    __import__(m)\n"
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


def test_version_is_written_once() -> None:
    """``__version__`` in ``__init__.py`` is the one version: pyproject reads it (statically)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "napari_unet.__version__"}
    tree = ast.parse((SRC / "__init__.py").read_text(encoding="utf-8"))
    versions = [
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
        and isinstance(node.value, ast.Constant)
    ]
    assert len(versions) == 1 and re.fullmatch(r"\d+\.\d+\.\d+", versions[0]), versions


def test_license_is_declared_and_shipped() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "BSD-3-Clause"
    assert project["license-files"] == ["LICENSE"]
    assert (REPO / "LICENSE").read_text(encoding="utf-8").startswith("BSD 3-Clause License")
