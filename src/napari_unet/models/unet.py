"""The U-Net of Ronneberger et al. 2015.

The network follows the paper: per level two 3x3 convolutions each followed by ReLU,
2x2 max-pooling with stride 2, channels doubling from ``base``, a bottleneck, 2x2
transposed convolutions up, skip connections that concatenate encoder features, and a
final 1x1 convolution. ``UNetConfig.paper()`` is the paper's exact configuration
(base 64, depth 4, valid convolutions, no normalisation). The file that carries a trained
net is :mod:`napari_unet.models.model_file`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

Padding = Literal["same", "valid"]
Norm = Literal["none", "batch"]

# Limits of a configuration, checked before a net is built (a model file names its own).
# The cap on parameters is twice the paper's net (31.0 M, base 64 and depth 4): every U-Net of
# the paper's size or the plugin's (1.9 M) fits with room to spare, and the largest net a file
# can ask for weighs 256 MB in float32 (a few times that while fine-tuning), which a laptop has.
# The field limits only stop absurd values early; the parameter cap is what bounds memory.
MAX_PARAMETERS = 64_000_000
MAX_CHANNELS = 256  # in or out: more than any microscope records, hyperspectral included
MAX_BASE = 1024
MAX_DEPTH = 8  # inputs must be multiples of 2**depth: 256 px already
_INT_RANGES = (
    ("in_channels", 1, MAX_CHANNELS),
    ("out_channels", 1, MAX_CHANNELS),
    ("base", 1, MAX_BASE),
    ("depth", 0, MAX_DEPTH),
)


@dataclass(frozen=True)
class UNetConfig:
    """Constructor arguments of :class:`UNet`; saved with the weights, so a file rebuilds its net.

    Parameters
    ----------
    in_channels : int
        Channels of the input image (1 for a grey image).
    out_channels : int
        Output maps; 3 for the plugin's background/interior/boundary encoding.
    base : int
        Feature channels of the first level; each level below doubles them.
    depth : int
        Number of 2x2 poolings; sides of a ``"same"`` input must be multiples of ``2**depth``.
    padding : {"same", "valid"}
        ``"same"`` keeps the size; ``"valid"`` (the paper's) gives a smaller output.
    norm : {"batch", "none"}
        BatchNorm after each convolution, or none as in the paper.

    Raises
    ------
    ValueError
        For a field of the wrong type (channels, ``base`` and ``depth`` are integers, not
        floats or bools), out of its range (channels 1 to ``MAX_CHANNELS``, ``base`` 1 to
        ``MAX_BASE``, ``depth`` 0 to ``MAX_DEPTH``), an unknown ``padding`` or ``norm``, or a
        net of more than ``MAX_PARAMETERS`` parameters. A model file's configuration is checked
        here before any network is built, so a crafted file cannot make the plugin allocate
        gigabytes.

    See Also
    --------
    UNetConfig.paper : the configuration of the original paper.

    Examples
    --------
    >>> from napari_unet.models.unet import UNetConfig
    >>> UNetConfig(base=8, depth=2)
    UNetConfig(in_channels=1, out_channels=3, base=8, depth=2, padding='same', norm='batch')
    >>> UNetConfig(padding="full")
    Traceback (most recent call last):
    ...
    ValueError: padding must be 'same' or 'valid', not 'full'
    """

    in_channels: int = 1
    out_channels: int = 3
    base: int = 16
    depth: int = 4
    padding: Padding = "same"
    norm: Norm = "batch"

    def __post_init__(self) -> None:
        for name, low, high in _INT_RANGES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"{name} must be an integer, not {value!r}")
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high}, not {value}")
            object.__setattr__(self, name, int(value))  # a numpy integer becomes a plain int
        if not isinstance(self.padding, str) or self.padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', not {self.padding!r}")
        if not isinstance(self.norm, str) or self.norm not in ("none", "batch"):
            raise ValueError(f"norm must be 'none' or 'batch', not {self.norm!r}")
        count = self.parameter_count()
        if count > MAX_PARAMETERS:
            raise ValueError(
                f"a net of {count / 1e6:.0f} M parameters (base {self.base}, depth {self.depth}) is "
                f"over the limit of {MAX_PARAMETERS / 1e6:.0f} M"
            )

    def parameter_count(self) -> int:
        """The number of trainable parameters of the net this configuration builds, without building it.

        Counted from the layer shapes (:class:`UNet` has exactly these), so a configuration can
        be judged before any memory is allocated.

        Returns
        -------
        int
            Weights and biases of every convolution and BatchNorm layer.

        Examples
        --------
        >>> from napari_unet.models.unet import UNetConfig
        >>> UNetConfig.paper().parameter_count()
        31030658
        """
        chans = [self.base * 2**i for i in range(self.depth + 1)]
        per_channel = 2 if self.norm == "none" else 4  # two conv biases, or two BatchNorms' weight and bias

        def double_conv(cin: int, cout: int) -> int:
            return 9 * cout * (cin + cout) + per_channel * cout

        count, cin = 0, self.in_channels
        for ch in chans[:-1]:
            count += double_conv(cin, ch)
            cin = ch
        count += double_conv(chans[-2] if self.depth else self.in_channels, chans[-1])
        for i in range(self.depth, 0, -1):
            count += chans[i] * chans[i - 1] * 4 + chans[i - 1]  # the 2x2 transposed convolution
            count += double_conv(2 * chans[i - 1], chans[i - 1])
        return count + chans[0] * self.out_channels + self.out_channels

    @classmethod
    def paper(cls, in_channels: int = 1, out_channels: int = 2) -> UNetConfig:
        """The configuration of Ronneberger et al. 2015: a 572x572 input gives a 388x388 output.

        Base 64, depth 4, valid convolutions and no normalisation, as in the paper; the plugin's
        own models use the default (smaller, ``"same"``-padded) configuration.

        Parameters
        ----------
        in_channels : int
            Channels of the input image (1 in the paper).
        out_channels : int
            Output maps (2 in the paper: background and cell).

        Returns
        -------
        UNetConfig
            The paper's configuration.

        Examples
        --------
        >>> from napari_unet.models.unet import UNet, UNetConfig
        >>> cfg = UNetConfig.paper()
        >>> cfg.base, cfg.depth, cfg.padding, cfg.norm
        (64, 4, 'valid', 'none')
        >>> UNet(cfg).output_size(572)
        388
        """
        return cls(in_channels, out_channels, base=64, depth=4, padding="valid", norm="none")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        """The configuration saved in a model file (``dataclasses.asdict`` of one).

        Parameters
        ----------
        d : dict
            Constructor arguments by name; missing ones take their defaults.

        Returns
        -------
        UNetConfig
            The configuration.

        Raises
        ------
        ValueError
            For an argument this version does not know (a file of another architecture),
            or a value out of range.

        Examples
        --------
        >>> from dataclasses import asdict
        >>> from napari_unet.models.unet import UNetConfig
        >>> cfg = UNetConfig(base=8)
        >>> UNetConfig.from_dict(asdict(cfg)) == cfg
        True
        """
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown architecture arguments: {sorted(map(str, unknown))}")
        return cls(**d)


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
    paper's overlap-tile strategy. Convolutions start with He (Kaiming) initialisation.

    Parameters
    ----------
    config : UNetConfig, optional
        The architecture; None builds one from ``kwargs``.
    **kwargs
        :class:`UNetConfig` arguments, used when ``config`` is None.

    Raises
    ------
    ValueError
        For an invalid configuration (see :class:`UNetConfig`).

    Examples
    --------
    >>> import torch
    >>> from napari_unet.models.unet import UNet, UNetConfig
    >>> net = UNet(UNetConfig(base=4, depth=2)).eval()
    >>> net(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 3, 32, 32])
    >>> UNet(base=4, depth=2).config == net.config
    True
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
        """Output side length for an input side length (equal for 'same' padding).

        Parameters
        ----------
        size : int
            Input side in pixels.

        Returns
        -------
        int
            Output side in pixels; 0 when a ``"valid"`` net cannot take that input (a side
            that gets odd before a pooling, or too small).

        Examples
        --------
        >>> from napari_unet.models.unet import UNet, UNetConfig
        >>> UNet(UNetConfig.paper()).output_size(572), UNet(UNetConfig.paper()).output_size(573)
        (388, 0)
        """
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
        """Smallest input side giving at least ``min_output`` output pixels per side.

        Parameters
        ----------
        min_output : int
            Output side wanted, in pixels.

        Returns
        -------
        int
            The input side to feed (for ``"valid"`` padding, larger by the context the
            convolutions eat).

        Examples
        --------
        >>> from napari_unet.models.unet import UNet, UNetConfig
        >>> UNet(UNetConfig.paper()).valid_input_size(388)
        572
        """
        size = max(min_output, self.multiple)
        while self.output_size(size) < min_output:
            size += 1
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch: (N, in_channels, H, W) -> (N, out_channels, H', W')."""
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
