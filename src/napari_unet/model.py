"""The U-Net of Ronneberger et al. 2015, and the model file that carries it.

The network follows the paper: per level two 3x3 convolutions each followed by ReLU,
2x2 max-pooling with stride 2, channels doubling from ``base``, a bottleneck, 2x2
transposed convolutions up, skip connections that concatenate encoder features, and a
final 1x1 convolution. ``UNetConfig.paper()`` is the paper's exact configuration
(base 64, depth 4, valid convolutions, no normalisation).

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
from typing import Any, Literal

import torch
from torch import nn

from ._atomic import atomic_write

FORMAT_NAME = "napari-unet"
FORMAT_VERSION = 1

Padding = Literal["same", "valid"]
Norm = Literal["none", "batch"]


class ModelFileError(ValueError):
    """A model file that cannot be used: corrupt, foreign, unsafe or of another architecture."""


@dataclass(frozen=True)
class UNetConfig:
    """Constructor arguments of :class:`UNet`; saved with the weights."""

    in_channels: int = 1
    out_channels: int = 3
    base: int = 16
    depth: int = 4
    padding: Padding = "same"
    norm: Norm = "batch"

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.out_channels < 1:
            raise ValueError("in_channels and out_channels must be >= 1")
        if self.base < 1 or self.depth < 0:
            raise ValueError("base must be >= 1 and depth >= 0")
        if self.padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', not {self.padding!r}")
        if self.norm not in ("none", "batch"):
            raise ValueError(f"norm must be 'none' or 'batch', not {self.norm!r}")

    @classmethod
    def paper(cls, in_channels: int = 1, out_channels: int = 2) -> UNetConfig:
        """The configuration of Ronneberger et al. 2015 (572x572 in, 388x388 out)."""
        return cls(in_channels, out_channels, base=64, depth=4, padding="valid", norm="none")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ModelFileError(f"unknown architecture arguments: {sorted(unknown)}")
        return cls(**d)


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


def _double_conv(cin: int, cout: int, padding: Padding, norm: Norm) -> nn.Sequential:
    pad = 1 if padding == "same" else 0
    layers: list[nn.Module] = []
    for c_in in (cin, cout):
        layers.append(nn.Conv2d(c_in, cout, 3, padding=pad, bias=norm == "none"))
        if norm == "batch":
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _center_crop(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    dh = (x.shape[-2] - h) // 2
    dw = (x.shape[-1] - w) // 2
    return x[..., dh : dh + h, dw : dw + w]


class UNet(nn.Module):
    """U-Net for 2D images: (N, in_channels, H, W) -> (N, out_channels, H', W') logits.

    With ``padding='same'`` H' = H and H, W must be multiples of ``2**depth``.
    With ``padding='valid'`` the output is smaller (see :meth:`output_size`), as in the
    paper's overlap-tile strategy.
    """

    def __init__(self, config: UNetConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.config = config if config is not None else UNetConfig(**kwargs)
        c = self.config
        chans = [c.base * 2**i for i in range(c.depth + 1)]
        self.down = nn.ModuleList()
        cin = c.in_channels
        for ch in chans[:-1]:
            self.down.append(_double_conv(cin, ch, c.padding, c.norm))
            cin = ch
        self.pool = nn.MaxPool2d(2, 2)
        self.bottleneck = _double_conv(chans[-2] if c.depth else c.in_channels, chans[-1], c.padding, c.norm)
        self.upconv = nn.ModuleList()
        self.up = nn.ModuleList()
        for i in range(c.depth, 0, -1):
            self.upconv.append(nn.ConvTranspose2d(chans[i], chans[i - 1], 2, stride=2))
            self.up.append(_double_conv(2 * chans[i - 1], chans[i - 1], c.padding, c.norm))
        self.head = nn.Conv2d(chans[0], c.out_channels, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def multiple(self) -> int:
        """Spatial sizes must be multiples of this (for 'same' padding)."""
        return 2**self.config.depth

    def output_size(self, size: int) -> int:
        """Output side length for an input side length (equal for 'same' padding)."""
        if self.config.padding == "same":
            return size
        for _ in range(self.config.depth):
            size = size - 4
            if size <= 0 or size % 2:
                return 0
            size //= 2
        size -= 4
        for _ in range(self.config.depth):
            size = size * 2 - 4
        return max(size, 0)

    def valid_input_size(self, min_output: int) -> int:
        """Smallest input side giving at least ``min_output`` output pixels per side."""
        size = max(min_output, self.multiple)
        while self.output_size(size) < min_output:
            size += 1
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for upconv, block, skip in zip(self.upconv, self.up, reversed(skips), strict=True):
            x = upconv(x)
            if skip.shape[-2:] != x.shape[-2:]:
                skip = _center_crop(skip, x.shape[-2], x.shape[-1])
            x = block(torch.cat([skip, x], dim=1))
        return self.head(x)


@dataclass
class Model:
    """A trained U-Net with its card: what it expects and where it comes from.

    ``net`` is the ``torch.nn.Module``; ``card`` is a JSON-able dict. The keys used by
    prediction are ``normalization`` (percentile bounds) and ``target`` (output encoding).
    """

    net: UNet
    card: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def config(self) -> UNetConfig:
        return self.net.config

    @property
    def name(self) -> str:
        return str(self.card.get("name", "unnamed"))

    @property
    def normalization(self) -> tuple[float, float]:
        norm = self.card.get("normalization", {})
        return float(norm.get("low", 1.0)), float(norm.get("high", 99.8))

    def copy(self) -> Model:
        return Model(copy.deepcopy(self.net), copy.deepcopy(self.card), self.source)

    def to_dict(self, half: bool = False) -> dict[str, Any]:
        """The file's content. ``half`` stores conv weights as float16 (half the size; BatchNorm
        statistics stay float32); they are cast back to float32 on load."""
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
        """Write atomically: a crash or full disk never leaves a half-written model file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            torch.save(self.to_dict(half), tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Model:
        """Load a model file safely (``weights_only=True``): code in a pickle never runs."""
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
