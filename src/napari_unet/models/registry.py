"""Where models live: the bundled one inside the package and the user's saved versions.

Models are referred to by name (``"nuclei"`` is the bundled model; saved versions by
their file stem) or by a path to a ``.pt`` model file. The user folder is
``platformdirs.user_data_dir("napari-unet")/models`` unless ``NAPARI_UNET_MODEL_DIR`` is set.

Every fine-tune result is saved there as a new version (:func:`save_version`, atomic, never
overwriting); rolling back is deleting versions or choosing the bundled model. Files from
elsewhere come in only through :func:`import_model`, which loads them safely first.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from platformdirs import user_data_dir

from napari_unet.common.atomic import atomic_write
from napari_unet.models.model_file import Model, ModelFileError, ModelSaveError

BUNDLED_NAME = "nuclei"
MODEL_SUFFIX = ".pt"


@dataclass(frozen=True)
class ModelInfo:
    """A model the registry knows: its name, its file and whether it ships with the plugin.

    Attributes
    ----------
    name : str
        What ``--model`` and the widgets call it (the bundled ``"nuclei"``, or a file stem).
    path : Path
        Its ``.pt`` file (not loaded: listing stays quick and survives a broken file).
    bundled : bool
        True for the model inside the package, which cannot be deleted.
    """

    name: str
    path: Path
    bundled: bool


def bundled_model_path() -> Path:
    """The bundled nuclei model's file, inside the installed package."""
    return Path(str(files("napari_unet.models") / "weights" / f"{BUNDLED_NAME}{MODEL_SUFFIX}"))


def user_model_dir() -> Path:
    """The folder of the user's saved versions: ``$NAPARI_UNET_MODEL_DIR``, else the platform's data folder.

    It need not exist yet; saving creates it.
    """
    env = os.environ.get("NAPARI_UNET_MODEL_DIR")
    if env:
        return Path(env)

    return Path(user_data_dir("napari-unet")) / "models"


def list_models() -> list[ModelInfo]:
    """The bundled model first, then the saved versions, newest first.

    Files are listed, not loaded: a broken saved file is listed too, so the user can see
    and delete it. Hidden files (temporary files of a save in progress) are left out.

    Returns
    -------
    list of ModelInfo
        One entry per model.

    Examples
    --------
    >>> from napari_unet.models.registry import list_models
    >>> first = list_models()[0]
    >>> first.name, first.bundled
    ('nuclei', True)
    """
    out = [ModelInfo(BUNDLED_NAME, bundled_model_path(), True)]
    folder = user_model_dir()
    if folder.is_dir():
        saved = [p for p in folder.glob(f"*{MODEL_SUFFIX}") if not p.name.startswith(".")]
        saved.sort(key=_mtime, reverse=True)
        out += [ModelInfo(p.stem, p, False) for p in saved]
    return out


def _mtime(path: Path) -> float:
    """When a saved file last changed; 0 for one that cannot be read (a dangling link): listed last."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def resolve_model_path(name_or_path: str | os.PathLike | None = None) -> Path:
    """The file of a model given by name (bundled or saved) or by path.

    Parameters
    ----------
    name_or_path : str or os.PathLike, optional
        ``"nuclei"`` or None for the bundled model, a saved version's name, or a path to a
        ``.pt`` file. A name wins over a file of the same name in the current folder.

    Returns
    -------
    Path
        The model file; a path is returned as given (``~`` expanded), whether or not it exists.

    Raises
    ------
    ModelFileError
        For a text that is neither a known name nor a file, when it has no suffix (a mistyped
        name); the message lists the known names.

    Examples
    --------
    >>> from napari_unet.models.registry import bundled_model_path, resolve_model_path
    >>> resolve_model_path() == resolve_model_path("nuclei") == bundled_model_path()
    True
    >>> resolve_model_path("~/mine.pt").name
    'mine.pt'
    """
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
    """Load a model by name or path; safe on any file (code in a pickle never runs).

    Parameters
    ----------
    name_or_path : str, os.PathLike, Model or None
        A model name (``"nuclei"``, a saved version), a path to a ``.pt`` file, a
        :class:`Model` (returned as it is), or None for the bundled nuclei model.

    Returns
    -------
    Model
        The model, in eval mode on the CPU.

    Raises
    ------
    ModelFileError
        For an unknown name, or a file that is missing, corrupt, foreign or unsafe.

    See Also
    --------
    list_models : the names known.
    Model.load : load a file by path.

    Examples
    --------
    >>> from napari_unet.models.registry import load_model
    >>> model = load_model()
    >>> model.name, model.config.in_channels
    ('nuclei', 1)
    >>> load_model(model) is model
    True
    """
    if isinstance(name_or_path, Model):
        return name_or_path
    return Model.load(resolve_model_path(name_or_path))


# --------------------------------------------------------------------------- versions

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


# ModelSaveError (an OSError: unwritable folder, disk full) is defined beside Model.save, which
# raises it, and imported from here as before.


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.endswith(MODEL_SUFFIX):
        raise ValueError(
            f"bad model name {name!r}: use letters, digits, '.', '_' or '-' (up to 100), no suffix"
        )
    if name == BUNDLED_NAME:
        raise ValueError(f"{name!r} is the bundled model's name; choose another")
    return name


def _unique_name(base: str, folder: Path) -> str:
    name, i = base, 2
    while name == BUNDLED_NAME or (folder / f"{name}{MODEL_SUFFIX}").exists():
        name, i = f"{base}-{i}", i + 1
    return name


def free_name(stem: str) -> str:
    """``stem`` made a saved-model name that no model has yet, for a model coming from a file.

    Characters a name cannot hold become ``-``, a ``.pt`` suffix goes, the bundled model's name
    becomes ``nuclei-imported``, and ``-2``, ``-3`` ... are appended while the name is taken.
    """
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.")[:90]
    base = re.sub(rf"{re.escape(MODEL_SUFFIX)}$", "", base) or "imported"
    if base == BUNDLED_NAME:
        base = f"{base}-imported"
    return _unique_name(base, user_model_dir())


def _saved(name: str) -> ModelInfo:
    for info in list_models():
        if info.name == name and not info.bundled:
            return info
    raise ModelFileError(f"{name}: no saved model of that name")


def save_version(model: Model, name: str | None = None) -> ModelInfo:
    """Save ``model`` into the user's model folder as a new version, atomically.

    Every fine-tune result becomes a version of its own, so rolling back is deleting
    versions; an existing name is never overwritten.

    Parameters
    ----------
    model : Model
        The model to save; it is not changed (the saved card is a copy).
    name : str, optional
        The version's name: letters, digits, ``.``, ``_``, ``-``, no suffix. None gives
        ``<parent>-ft-YYYYmmdd-HHMMSS`` (with ``-2``, ``-3`` ... when taken).

    Returns
    -------
    ModelInfo
        The saved version; its file's card carries its name.

    Raises
    ------
    ValueError
        For a bad name, the bundled model's name, or a name already saved.
    ModelSaveError
        When the folder cannot be written (one line); nothing is left behind.

    Examples
    --------
    >>> import os, tempfile
    >>> os.environ["NAPARI_UNET_MODEL_DIR"] = tempfile.mkdtemp()  # a scratch model folder
    >>> from napari_unet.models.registry import load_model, save_version
    >>> info = save_version(load_model(), "mine")
    >>> info.name, info.bundled, load_model("mine").name
    ('mine', False, 'mine')
    """
    folder = user_model_dir()
    if name is None:
        parent = (model.card.get("parent") or {}).get("name") or model.name
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", str(parent)).strip("-.") or "model"
        stem = re.sub(r"-ft(-\d{8}-\d{6})?(-\d+)?$", "", stem) or "model"
        name = _unique_name(f"{stem}-ft-{time.strftime('%Y%m%d-%H%M%S')}", folder)
    else:
        _check_name(name)
        if (folder / f"{name}{MODEL_SUFFIX}").exists():
            raise ValueError(f"a saved model named {name!r} exists already")
    card = dict(model.card)
    card["name"] = name
    path = folder / f"{name}{MODEL_SUFFIX}"
    try:
        Model(model.net, card, model.source).save(path)
    except OSError as exc:
        raise ModelSaveError(f"cannot save model {name!r} in {folder}: {exc.strerror or exc}") from None
    return ModelInfo(name, path, False)


def delete_model(name: str) -> None:
    """Delete a saved version (roll back). The bundled model cannot be deleted.

    Parameters
    ----------
    name : str
        The saved version's name.

    Raises
    ------
    ValueError
        For the bundled model's name.
    ModelFileError
        When no saved version has that name.
    ModelSaveError
        When the file cannot be deleted.

    Examples
    --------
    >>> import os, tempfile
    >>> os.environ["NAPARI_UNET_MODEL_DIR"] = tempfile.mkdtemp()  # a scratch model folder
    >>> from napari_unet.models.registry import delete_model, list_models, load_model, save_version
    >>> _ = save_version(load_model(), "old")
    >>> delete_model("old")
    >>> [info.name for info in list_models()]
    ['nuclei']
    """
    if name == BUNDLED_NAME:
        raise ValueError("the bundled model cannot be deleted")
    info = _saved(name)
    try:
        info.path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ModelSaveError(f"cannot delete {info.path}: {exc.strerror or exc}") from None


def _copy_atomic(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` so that what lands in place is a complete file that loads."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(dest) as tmp:
        shutil.copyfile(src, tmp)
        Model.load(tmp)


def export_model(name: str, path: str | os.PathLike) -> Path:
    """Write a model (bundled or saved) to a file, to share it; the copy is checked to load.

    Parameters
    ----------
    name : str
        The model's name (or a path to a model file).
    path : str or os.PathLike
        The file to write, or an existing folder to put ``<name>.pt`` in.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ModelFileError
        For an unknown name or a broken model file (nothing is written).
    ModelSaveError
        When the file cannot be written.

    Examples
    --------
    >>> import tempfile
    >>> from napari_unet.models.registry import export_model
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     print(export_model("nuclei", tmp).name)
    nuclei.pt
    """
    src = resolve_model_path(name)
    Model.load(src)  # refuse to export a broken file
    dest = Path(path).expanduser()
    if dest.is_dir():
        dest = dest / f"{Path(src).stem}{MODEL_SUFFIX}"
    try:
        _copy_atomic(src, dest)
    except OSError as exc:
        raise ModelSaveError(f"cannot write {dest}: {exc.strerror or exc}") from None
    return dest


def import_model(path: str | os.PathLike, name: str | None = None) -> ModelInfo:
    """Add a model file to the user's models, after checking it loads safely.

    The file is loaded with ``weights_only=True`` first: a foreign, corrupt or malicious file
    is refused and nothing is copied.

    Parameters
    ----------
    path : str or os.PathLike
        A napari-unet ``.pt`` model file.
    name : str, optional
        The name to save it under; None uses the file's stem (made unique, never
        ``"nuclei"``).

    Returns
    -------
    ModelInfo
        The new saved version (its card is the file's, unchanged).

    Raises
    ------
    ModelFileError
        For a file that is missing, corrupt, foreign or unsafe.
    ValueError
        For a bad name, the bundled model's name, or a name already saved.
    ModelSaveError
        When the user's model folder cannot be written.

    Examples
    --------
    >>> import os, tempfile
    >>> os.environ["NAPARI_UNET_MODEL_DIR"] = tempfile.mkdtemp()  # a scratch model folder
    >>> from napari_unet.models.registry import export_model, import_model
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     info = import_model(export_model("nuclei", tmp), name="shared")
    >>> info.name, info.bundled
    ('shared', False)
    """
    src = Path(path).expanduser()
    Model.load(src)  # raises ModelFileError with a one-line reason
    folder = user_model_dir()
    if name is None:
        name = free_name(src.stem)
    else:
        _check_name(name)
        if (folder / f"{name}{MODEL_SUFFIX}").exists():
            raise ValueError(f"a saved model named {name!r} exists already")
    dest = folder / f"{name}{MODEL_SUFFIX}"
    try:
        _copy_atomic(src, dest)
    except OSError as exc:
        raise ModelSaveError(f"cannot import into {folder}: {exc.strerror or exc}") from None
    return ModelInfo(name, dest, False)
