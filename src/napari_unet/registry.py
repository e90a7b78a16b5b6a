"""Where models live: the bundled one inside the package and the user's saved versions.

Models are referred to by name (``"nuclei"`` is the bundled model; saved versions by
their file stem) or by a path to a ``.pt`` model file. The user folder is
``platformdirs.user_data_dir("napari-unet")/models`` unless ``NAPARI_UNET_MODEL_DIR`` is set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from .model import Model, ModelFileError

BUNDLED_NAME = "nuclei"
MODEL_SUFFIX = ".pt"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: Path
    bundled: bool


def bundled_model_path() -> Path:
    return Path(str(files("napari_unet") / "weights" / f"{BUNDLED_NAME}{MODEL_SUFFIX}"))


def user_model_dir() -> Path:
    env = os.environ.get("NAPARI_UNET_MODEL_DIR")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("napari-unet")) / "models"


def list_models() -> list[ModelInfo]:
    """The bundled model first, then saved versions, newest first."""
    out = [ModelInfo(BUNDLED_NAME, bundled_model_path(), True)]
    folder = user_model_dir()
    if folder.is_dir():
        saved = [p for p in folder.glob(f"*{MODEL_SUFFIX}") if not p.name.startswith(".")]
        saved.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        out += [ModelInfo(p.stem, p, False) for p in saved]
    return out


def resolve_model_path(name_or_path: str | os.PathLike | None = None) -> Path:
    """A model name (bundled or saved) or a file path -> the model file's path."""
    if name_or_path is None or str(name_or_path) == BUNDLED_NAME:
        return bundled_model_path()
    text = str(name_or_path)
    for info in list_models():
        if info.name == text:
            return info.path
    path = Path(text).expanduser()
    if path.suffix == "" and not path.exists():
        names = ", ".join(i.name for i in list_models())
        raise ModelFileError(f"{text}: no such model (known: {names}) and no such file")
    return path


def load_model(name_or_path: str | os.PathLike | Model | None = None) -> Model:
    """Load a model by name or path (``None``: the bundled nuclei model). Safe on any file."""
    if isinstance(name_or_path, Model):
        return name_or_path
    return Model.load(resolve_model_path(name_or_path))
