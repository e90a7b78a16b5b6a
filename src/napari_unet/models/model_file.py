"""The model file: a U-Net with its card, saved and loaded without unpickling code.

A model file is a plain dict saved with ``torch.save`` and loaded with
``weights_only=True``: it never unpickles code, so a foreign or malicious file is refused.
It carries the constructor arguments and a model card (normalisation, target encoding,
training data, metrics, parent model), so a file is self-describing.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from napari_unet.common.atomic import atomic_write
from napari_unet.models.unet import UNet, UNetConfig

FORMAT_NAME = "napari-unet"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file that cannot be used: corrupt, foreign, unsafe or of another architecture."""


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
        OSError
            When the file cannot be written; nothing is left behind.

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
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            torch.save(self.to_dict(half), tmp)
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
            For a missing, corrupt, truncated, foreign or unsafe file, or weights of another
            architecture; the message is one line starting with the path.

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
        if not path.is_file():
            raise ModelFileError(f"{path}: no such model file")
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
            holds bad architecture arguments, no weights, weights that do not fit, or a card
            that is not a dict.

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
            raise ModelFileError(f"{where}bad architecture arguments ({exc})") from None
        net = UNet(config)
        state = blob.get("state_dict")
        if not isinstance(state, dict):
            raise ModelFileError(f"{where}no weights in the file")
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            msg = str(exc).splitlines()[0]
            raise ModelFileError(f"{where}weights do not fit the architecture ({msg[:120]})") from None
        net.eval()
        card = blob.get("card") or {}
        if not isinstance(card, dict):
            raise ModelFileError(f"{where}model card is not a dict")
        return cls(net, card, source)
