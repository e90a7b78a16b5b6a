"""The model file: a U-Net with its card, saved and loaded without unpickling code.

A model file is a plain dict saved with ``torch.save`` and loaded with
``weights_only=True``: it never unpickles code, so a foreign or malicious file is refused.
It carries the constructor arguments and a model card (normalisation, target encoding,
training data, metrics, parent model), so a file is self-describing.
"""

from __future__ import annotations

import copy
import errno
import math
import os
import shutil
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from napari_unet.common.atomic import atomic_write
from napari_unet.models.unet import MAX_PARAMETERS, UNet, UNetConfig

FORMAT_NAME = "napari-unet"
FORMAT_VERSION = 1
# The largest file loaded: the largest net a configuration may ask for (float32 weights) plus
# room for the card and BatchNorm statistics. torch.load reads a file whole, so a larger file
# is refused before it is read.
MAX_FILE_BYTES = 4 * MAX_PARAMETERS + 64 * 2**20


BIOIMAGEIO_DESCRIPTIONS = ("rdf.yaml", "bioimageio.yaml")  # a bioimage.io package's description


def is_bioimageio_package(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zip with a bioimage.io description at its top.

    torch's own files are zips too, but hold their files in a folder and no ``rdf.yaml``.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n in BIOIMAGEIO_DESCRIPTIONS for n in zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


class ModelFileError(ValueError):
    """A model file that cannot be used: corrupt, foreign, unsafe or of another architecture."""


class ModelSaveError(OSError):
    """A model could not be written (unwritable folder, disk full); nothing was left behind.

    Every failure of the writer is one of these, whatever torch raised: its zip writer reports
    a full disk as ``RuntimeError`` ("enforce fail at inline_container.cc ... unexpected pos"),
    which callers would otherwise take for a bug and lose the trained model with it.
    """


def _write_failure(exc: BaseException, folder: Path, nbytes: int) -> ModelSaveError:
    """The :class:`ModelSaveError` for a failed write of ``nbytes`` into ``folder``, in one line.

    torch's ``RuntimeError`` says nothing a user can act on; the free space of the folder
    tells whether the disk was full.
    """
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if isinstance(exc, OSError) and exc.errno is not None:
        code, text = exc.errno, exc.strerror or str(exc)
    elif free is not None and free < nbytes:
        code, text = errno.ENOSPC, "No space left on device"
    else:
        code, text = errno.EIO, f"write failed ({_first_line(exc)})"
    if code == errno.ENOSPC:  # (the free space is not shown: torch may still hold the cut-off file open)
        text = f"{text} (the model needs {nbytes / 2**20:.1f} MB)"
    return ModelSaveError(code, text)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return " ".join(lines[0].split())[:160] if lines else type(exc).__name__


def _card_problem(card: dict[str, Any]) -> str | None:
    """What is wrong with the card values prediction reads (None: nothing).

    Checked at load so that a bad file is refused in one line instead of failing later,
    in the middle of a segmentation, with a type error.
    """

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    norm = card.get("normalization", {})
    if not isinstance(norm, dict):
        return "card 'normalization' is not a dict"
    low, high = norm.get("low", 1.0), norm.get("high", 99.8)
    if not (number(low) and number(high) and 0 <= low < high <= 100):
        return f"card normalization percentiles must satisfy 0 <= low < high <= 100, not {low!r}, {high!r}"
    post = card.get("postprocess", {})
    if not isinstance(post, dict):
        return "card 'postprocess' is not a dict"
    for key, high in (("threshold", 1), ("seed_threshold", math.inf)):  # as PostprocessParams checks
        if key in post and not (number(post[key]) and 0 < post[key] < high):
            return f"card postprocess {key} is out of range: {post[key]!r}"
    for key in ("min_size", "min_seed_size"):
        value = post.get(key, 0)
        if not (number(value) and float(value).is_integer() and value >= 0):
            return f"card postprocess {key} must be an integer >= 0, not {value!r}"
    depth = post.get("split_depth", 0.0)
    if not (number(depth) and 0 <= depth < math.inf):
        return f"card postprocess split_depth must be a number >= 0, not {depth!r}"
    for key in ("object_diameter", "working_zoom"):
        if key in card and not (number(card[key]) and card[key] > 0):
            return f"card {key} must be a positive number, not {card[key]!r}"
    return None


def _load_failure_reason(exc: Exception) -> str:
    """One line saying why ``torch.load(weights_only=True)`` refused a file."""
    text = str(exc)
    if text.startswith("Weights only load failed"):
        lines = [ln.strip() for ln in text.splitlines()[1:] if ln.strip()]
        detail = next((ln for ln in lines if "GLOBAL" in ln or "global" in ln), None)
        if detail:
            return f"refused: the file holds Python objects that could run code ({detail[:100]})"
        detail = next((ln for ln in lines if ln.startswith("Unsupported")), "unsupported content")
        if detail.startswith("Unsupported operand"):  # not a pickle at all: text, an image...
            return "not a readable model file (not a PyTorch weights file)"
        return f"refused: not a plain weights file ({detail[:100]})"
    if isinstance(exc, (KeyError, EOFError)) or not text.strip():  # pickle's magic/opcode lookups
        return "not a readable model file (not a PyTorch weights file, or cut off)"
    first = text.strip().splitlines()[0]
    return f"not a readable model file ({first[:120]})"


@dataclass
class Model:
    """A trained U-Net with its card: what it expects and where it comes from.

    The card travels with the weights so that a model file is all it takes to use a model
    right: the keys prediction reads are ``normalization`` (percentile bounds) and ``target``
    (output encoding); ``name``, ``description``, ``metrics``, ``parent`` and ``training``
    tell the user what the model is.

    Parameters
    ----------
    net : UNet
        The network (a ``torch.nn.Module``).
    card : dict
        The model card, JSON-able (it is saved in the file).
    source : str
        The file the model was loaded from, "" for one built in memory.

    See Also
    --------
    napari_unet.models.registry.load_model : a model by name (bundled or saved) or by path.

    Examples
    --------
    >>> from napari_unet.models.model_file import Model
    >>> from napari_unet.models.unet import UNet, UNetConfig
    >>> model = Model(UNet(UNetConfig(base=4, depth=2)), card={"name": "tiny"})
    >>> model.name, model.normalization
    ('tiny', (1.0, 99.8))
    """

    net: UNet
    card: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def config(self) -> UNetConfig:
        """The network's architecture (:class:`UNetConfig`)."""
        return self.net.config

    @property
    def name(self) -> str:
        """The card's ``name``, or ``"unnamed"``."""
        return str(self.card.get("name", "unnamed"))

    @property
    def normalization(self) -> tuple[float, float]:
        """The (low, high) percentiles an image is scaled between before it is fed (default 1, 99.8).

        The net was trained on images scaled this way, so prediction must scale the same.
        """
        norm = self.card.get("normalization", {})
        return float(norm.get("low", 1.0)), float(norm.get("high", 99.8))

    def copy(self) -> Model:
        """An independent copy (network and card): fine-tuning the copy leaves this model as it is.

        Returns
        -------
        Model
            The copy, with the same ``source``.

        Examples
        --------
        >>> from napari_unet.models.model_file import Model
        >>> from napari_unet.models.unet import UNet, UNetConfig
        >>> model = Model(UNet(UNetConfig(base=4, depth=2)), card={"name": "tiny"})
        >>> twin = model.copy()
        >>> twin.card["name"] = "twin"
        >>> model.name, twin.net is model.net
        ('tiny', False)
        """
        return Model(copy.deepcopy(self.net), copy.deepcopy(self.card), self.source)

    def to_dict(self, half: bool = False) -> dict[str, Any]:
        """The file's content: a plain dict of tensors, numbers and strings (no code to unpickle).

        Parameters
        ----------
        half : bool
            Store the weights as float16, for a file half the size; BatchNorm statistics stay
            float32, and everything is cast back to float32 on load.

        Returns
        -------
        dict
            ``format``, ``format_version``, ``config`` (the :class:`UNetConfig` as a dict),
            ``card`` and ``state_dict`` (CPU tensors).

        Examples
        --------
        >>> from napari_unet.models.model_file import Model
        >>> from napari_unet.models.unet import UNet, UNetConfig
        >>> blob = Model(UNet(UNetConfig(base=4, depth=2)), card={"name": "tiny"}).to_dict()
        >>> sorted(blob), blob["format"]
        (['card', 'config', 'format', 'format_version', 'state_dict'], 'napari-unet')
        """
        state = {}
        for k, v in self.net.state_dict().items():
            v = v.detach().cpu().contiguous()
            if half and v.is_floating_point() and "running_" not in k:
                v = v.half()
            state[k] = v
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "config": asdict(self.net.config),
            "card": self.card,
            "state_dict": state,
        }

    def save(self, path: str | os.PathLike, half: bool = False) -> Path:
        """Write the model file atomically: a crash or full disk never leaves a half-written file.

        Parameters
        ----------
        path : str or os.PathLike
            The ``.pt`` file; its folder is created if needed, an existing file is replaced.
        half : bool
            Store float16 weights (see :meth:`to_dict`).

        Returns
        -------
        Path
            ``path``.

        Raises
        ------
        ModelSaveError
            When the file cannot be written (an ``OSError``, whatever torch's writer raised, a
            full disk included), in one line; nothing is left behind.

        Examples
        --------
        >>> import tempfile
        >>> from pathlib import Path
        >>> from napari_unet.models.model_file import Model
        >>> from napari_unet.models.unet import UNet, UNetConfig
        >>> model = Model(UNet(UNetConfig(base=4, depth=2)), card={"name": "tiny"})
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = model.save(Path(tmp) / "tiny.pt")
        ...     print(Model.load(path).name)
        tiny
        """
        path = Path(path)
        blob = self.to_dict(half)
        nbytes = sum(v.numel() * v.element_size() for v in blob["state_dict"].values())
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path) as tmp:
                torch.save(blob, tmp)
        except (OSError, RuntimeError) as exc:  # RuntimeError: torch's zip writer on a full disk
            folder = next((p for p in (path.parent, *path.parents) if p.is_dir()), Path("."))
            raise _write_failure(exc, folder, nbytes) from None
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Model:
        """Load a model file safely (``weights_only=True``): code in a pickle never runs.

        Parameters
        ----------
        path : str or os.PathLike
            A napari-unet ``.pt`` model file.

        Returns
        -------
        Model
            The model in eval mode on the CPU, with ``source`` set to ``path``.

        Raises
        ------
        ModelFileError
            For a missing, corrupt, truncated, foreign, unsafe or oversized file, bad
            architecture arguments (checked before any network is built), weights of another
            architecture or holding NaN/inf; the message is one line starting with the path.

        Examples
        --------
        >>> import tempfile
        >>> from pathlib import Path
        >>> from napari_unet.models.model_file import Model, ModelFileError
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     junk = Path(tmp) / "junk.pt"
        ...     _ = junk.write_text("not a model")
        ...     try:
        ...         Model.load(junk)
        ...     except ModelFileError as exc:
        ...         print("refused:", "not a readable model file" in str(exc))
        refused: True
        """
        path = Path(path)
        if path.is_dir():
            raise ModelFileError(f"{path}: a folder, not a model file")
        if not path.is_file():
            raise ModelFileError(f"{path}: no such model file")
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
        if size > MAX_FILE_BYTES:
            raise ModelFileError(
                f"{path}: {size / 2**20:.0f} MB is larger than any model this plugin can build "
                f"({MAX_FILE_BYTES / 2**20:.0f} MB)"
            )
        if is_bioimageio_package(path):
            raise ModelFileError(
                f"{path}: a bioimage.io package, not a model file: import it first "
                f"(napari-unet models import {path.name}, or Segment's ⋯ menu), then use its name"
            )
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure means "not a usable model file"
            raise ModelFileError(f"{path}: {_load_failure_reason(exc)}") from None
        return cls.from_dict(blob, source=str(path))

    @classmethod
    def from_dict(cls, blob: Any, source: str = "") -> Model:
        """The model held by a file's content (what :meth:`to_dict` gives), checked first.

        Parameters
        ----------
        blob : Any
            The loaded content; anything that is not a napari-unet model dict is refused.
        source : str
            Where it comes from, to start the error messages and set ``source``.

        Returns
        -------
        Model
            The model in eval mode.

        Raises
        ------
        ModelFileError
            When ``blob`` is not a napari-unet model, comes from a newer format version, or
            holds bad architecture arguments (types, ranges, size: checked before the network
            is built), no weights, weights that do not fit or are not finite, or a card that is
            not a dict or holds values prediction cannot use.

        Examples
        --------
        >>> from napari_unet.models.model_file import Model
        >>> from napari_unet.models.unet import UNet, UNetConfig
        >>> model = Model(UNet(UNetConfig(base=4, depth=2)), card={"name": "tiny"})
        >>> Model.from_dict(model.to_dict(half=True)).config == model.config
        True
        """
        where = f"{source}: " if source else ""
        if not isinstance(blob, dict) or blob.get("format") != FORMAT_NAME:
            raise ModelFileError(f"{where}not a napari-unet model file")
        version = blob.get("format_version", 0)
        if not isinstance(version, int):
            raise ModelFileError(f"{where}bad format version {version!r}")
        if version > FORMAT_VERSION:
            raise ModelFileError(f"{where}made by a newer napari-unet (format {version})")
        try:
            config = UNetConfig.from_dict(dict(blob["config"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{where}bad architecture arguments ({_first_line(exc)})") from None
        state = blob.get("state_dict")
        if not isinstance(state, dict) or not state:
            raise ModelFileError(f"{where}no weights in the file")
        if not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ModelFileError(f"{where}weights are not all tensors")
        floats = ((k, v) for k, v in state.items() if v.is_floating_point())
        bad = next((k for k, v in floats if not torch.isfinite(v).all()), None)
        if bad is not None:  # such a net finds nothing, silently: refuse it here
            raise ModelFileError(f"{where}weights hold NaN or infinite values (in {bad}); not usable")
        card = blob.get("card") or {}
        if not isinstance(card, dict):
            raise ModelFileError(f"{where}model card is not a dict")
        problem = _card_problem(card)
        if problem:
            raise ModelFileError(f"{where}{problem}")
        net = UNet(config)  # only now: the configuration's size is within bounds
        try:
            net.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
            msg = _first_line(exc)[:120]
            raise ModelFileError(f"{where}weights do not fit the architecture ({msg})") from None
        net.eval()
        return cls(net, card, source)
