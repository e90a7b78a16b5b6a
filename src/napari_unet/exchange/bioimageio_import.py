"""Import a bioimage.io model package that napari-unet exported: the model back, exactly.

Only our own packages can come back: their ``config.napari_unet`` holds the architecture and the
whole model card (post-processing, object scale, lineage) that the spec cannot say, and their
weights are a plain state dict of our U-Net. Any other package is refused with one line saying
what it would need. Reading is safe on any file: the zip is never extracted (only the two
members we need are read, by exact name, with size limits), the state dict is loaded with
``torch.load(weights_only=True)`` after its sha256 is checked, and the package's code
(architecture source, TorchScript) is never run.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import torch
import yaml

from napari_unet.exchange.bioimageio_rdf import CONFIG_KEY, PACKAGE_VERSION, PackageError
from napari_unet.models.model_file import (
    BIOIMAGEIO_DESCRIPTIONS,
    FORMAT_NAME,
    FORMAT_VERSION,
    Model,
    is_bioimageio_package,
)
from napari_unet.models.registry import ModelInfo, free_name, save_version

__all__ = [
    "DESCRIPTION_NAMES",
    "MAX_DESCRIPTION_BYTES",
    "MAX_MEMBERS",
    "MAX_WEIGHTS_BYTES",
    "import_package",
    "is_package",
    "read_package",
]

DESCRIPTION_NAMES = BIOIMAGEIO_DESCRIPTIONS
MAX_DESCRIPTION_BYTES = 8 * 2**20  # a description with a whole model card is ~20 kB
MAX_WEIGHTS_BYTES = 2 * 2**30  # the paper's U-Net (31 M parameters) is 124 MB in float32
MAX_MEMBERS = 10_000
OTHER_TOOLS = "run it with bioimageio.core, deepImageJ, ilastik or QuPath instead"


def is_package(path: str | os.PathLike) -> bool:
    """Whether ``path`` is meant as a bioimage.io package, not a ``.pt`` model file.

    A ``.zip`` name, or a zip holding a description at its top. A ``.pt`` file is a zip too
    (torch's format), with its files in a folder, so the suffix alone cannot tell.
    """
    return Path(path).suffix.lower() == ".zip" or is_bioimageio_package(path)


def _read_member(zf: zipfile.ZipFile, name: str, limit: int, what: str) -> bytes:
    """One member's bytes, read by its exact name and never more than ``limit`` (a zip bomb stops there)."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise PackageError(f"the package names {what} {name!r} but does not hold it") from None
    if info.file_size > limit:
        raise PackageError(
            f"{what} {name!r} is {info.file_size / 2**20:.0f} MiB, over the {limit // 2**20} MiB limit"
        )
    with zf.open(info) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise PackageError(f"{what} {name!r} unpacks to more than {limit // 2**20} MiB")
    return data


def _member_name(source: Any, what: str) -> str:
    """A file named by the description, as a plain relative name inside the zip (no ``..``, no URL)."""
    if not isinstance(source, str) or not source:
        raise PackageError(f"the package's {what} has no file name")
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source):
        raise PackageError(
            f"the package's {what} is a download ({source[:80]}); napari-unet reads only files inside it"
        )
    pure = PurePosixPath(source.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or re.match(r"^[a-zA-Z]:", source):
        raise PackageError(f"the package's {what} {source!r} points outside the package")
    return str(pure)


def _description(zf: zipfile.ZipFile) -> dict[str, Any]:
    held = set(zf.namelist())
    names = [n for n in DESCRIPTION_NAMES if n in held]
    if not names:
        raise PackageError("not a bioimage.io package: no rdf.yaml or bioimageio.yaml inside")
    text = _read_member(zf, names[0], MAX_DESCRIPTION_BYTES, "description")
    try:
        rdf = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "bad YAML"
        raise PackageError(f"not a bioimage.io package: its {names[0]} is not valid YAML ({first})") from None
    if not isinstance(rdf, dict):
        raise PackageError(f"not a bioimage.io package: its {names[0]} is not a description")
    if rdf.get("type") != "model":
        raise PackageError(f"a bioimage.io {rdf.get('type', 'resource')!s} package, not a model")
    return rdf


def _our_config(rdf: dict[str, Any]) -> dict[str, Any]:
    config = rdf.get("config")
    ours = config.get(CONFIG_KEY) if isinstance(config, dict) else None
    if not isinstance(ours, dict):
        raise PackageError(
            f"not a napari-unet package: it has no config.{CONFIG_KEY}; napari-unet can import only "
            f"packages it exported ({OTHER_TOOLS})"
        )
    if ours.get("format") != FORMAT_NAME:
        raise PackageError(f"not a napari-unet package: config.{CONFIG_KEY}.format is {ours.get('format')!r}")
    version = ours.get("package_version")
    if not isinstance(version, int) or version < 1:
        raise PackageError(f"bad config.{CONFIG_KEY}.package_version {version!r}")
    if version > PACKAGE_VERSION:
        raise PackageError(f"made by a newer napari-unet (package version {version}); update napari-unet")
    if not isinstance(ours.get("card"), dict) or not isinstance(ours.get("unet"), dict):
        raise PackageError(f"config.{CONFIG_KEY} lacks the model card or the architecture")
    return ours


def _state_dict(zf: zipfile.ZipFile, rdf: dict[str, Any]) -> dict[str, Any]:
    weights = rdf.get("weights")
    entry = weights.get("pytorch_state_dict") if isinstance(weights, dict) else None
    if not isinstance(entry, dict):
        raise PackageError(f"the package has no pytorch_state_dict weights ({OTHER_TOOLS})")
    name = _member_name(entry.get("source"), "pytorch_state_dict weights")
    data = _read_member(zf, name, MAX_WEIGHTS_BYTES, "weights file")
    expected = entry.get("sha256")
    if expected is not None and hashlib.sha256(data).hexdigest() != str(expected).lower():
        raise PackageError(f"weights file {name!r} does not match its sha256 in the description (damaged?)")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not plain weights"
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise PackageError(f"weights file {name!r} is not a plain state dict, refused ({first})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PackageError(f"weights file {name!r} is not a state dict of tensors")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def read_package(path: str | os.PathLike) -> Model:
    """The model in a package napari-unet exported, exactly as it was (weights, card, architecture).

    Parameters
    ----------
    path : str or os.PathLike
        The package (``.zip``).

    Returns
    -------
    Model
        The model in eval mode, with ``source`` set to ``path``.

    Raises
    ------
    PackageError
        For a file that is not a zip or not a bioimage.io model package, a package napari-unet did
        not export, a damaged or oversized one, or weights that are not a plain state dict; one line
        starting with the path.
    """
    path = Path(path).expanduser()
    where = f"{path}: "
    if not path.is_file():
        raise PackageError(f"{where}no such file")
    try:
        with zipfile.ZipFile(path) as zf:
            if len(zf.infolist()) > MAX_MEMBERS:
                raise PackageError(f"the package holds over {MAX_MEMBERS} files; not one napari-unet wrote")
            rdf = _description(zf)
            ours = _our_config(rdf)
            state = _state_dict(zf, rdf)
    except zipfile.BadZipFile:
        raise PackageError(f"{where}not a bioimage.io package (not a zip file)") from None
    except PackageError as exc:
        raise PackageError(f"{where}{exc}") from None
    except (OSError, EOFError, RuntimeError, NotImplementedError) as exc:  # unreadable or odd compression
        raise PackageError(f"{where}cannot read the package ({str(exc)[:120]})") from None
    blob = {
        "format": FORMAT_NAME,
        "format_version": ours.get("format_version", FORMAT_VERSION),
        "config": ours["unet"],
        "card": ours["card"],
        "state_dict": state,
    }
    return Model.from_dict(blob, source=str(path))


def import_package(path: str | os.PathLike, name: str | None = None) -> ModelInfo:
    """Add the model of a package napari-unet exported to the user's saved models.

    Parameters
    ----------
    path : str or os.PathLike
        The package (``.zip``).
    name : str, optional
        The name to save it under; None: the model's own name, made unique (the bundled model
        comes back as ``nuclei-imported``). The saved card carries this name; everything else in
        it is the exported card, unchanged.

    Returns
    -------
    ModelInfo
        The new saved version.

    Raises
    ------
    PackageError
        For a package that cannot be imported (see :func:`read_package`); nothing is saved.
    ValueError
        For a bad name, the bundled model's name, or a name already saved.
    ModelSaveError
        When the user's model folder cannot be written.

    Examples
    --------
    >>> import os, tempfile
    >>> os.environ["NAPARI_UNET_MODEL_DIR"] = tempfile.mkdtemp()  # a scratch model folder
    >>> from napari_unet.exchange.bioimageio_export import export_bioimageio
    >>> from napari_unet.exchange.bioimageio_import import import_package
    >>> from napari_unet.models.model_file import Model
    >>> from napari_unet.models.unet import UNet, UNetConfig
    >>> model = Model(UNet(UNetConfig(base=4, depth=2)).eval(), card={"name": "tiny"})
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     info = import_package(export_bioimageio(model, tmp, check=False))
    >>> info.name, info.bundled
    ('tiny', False)
    """
    model = read_package(path)
    return save_version(model, name if name is not None else free_name(model.name))
