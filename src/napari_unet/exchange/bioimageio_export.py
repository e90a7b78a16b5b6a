"""Export a model as a bioimage.io model package (a ``.zip``), so Fiji, ilastik and QuPath can run it.

The package holds the weights twice (a ``pytorch_state_dict`` whose architecture source, the
plugin's own ``unet.py`` plus a softmax head, travels inside; and ``torchscript`` traced from
the net with batch norm folded, for the Java tools), a test input cut from the synthetic nuclei
sample and the test output our engine computes for it (normalisation -> net -> softmax, in
float32), a cover, the documentation and the description (:mod:`.bioimageio_rdf`). Everything is
written into one zip atomically: a failure leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
import zipfile
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
import yaml
from torch import nn

from napari_unet.common.atomic import atomic_write
from napari_unet.common.generators import drain
from napari_unet.engine.config import PredictConfig
from napari_unet.engine.inference import fuse_batchnorm, iter_probabilities
from napari_unet.engine.normalize import BadImageError, apply_bounds, channel_bounds
from napari_unet.exchange.bioimageio_check import check_package, is_available
from napari_unet.exchange.bioimageio_rdf import (
    PackageError,
    PackageFiles,
    describe,
    documentation,
    input_min_size,
)
from napari_unet.models.model_file import Model
from napari_unet.models.registry import BUNDLED_NAME, load_model
from napari_unet.samples.synthetic import nuclei_2d

__all__ = [
    "ARCHITECTURE_CALLABLE",
    "PackageError",
    "architecture_source",
    "export_bioimageio",
    "make_test_input",
    "reference_probabilities",
]

ARCHITECTURE_CALLABLE = "UNetProbabilities"
TEST_SIDE = 256  # px: a test input large enough to hold a dozen nuclei, small enough to run in ~1 s

_HEAD = '''

class UNetProbabilities(UNet):
    """napari-unet's U-Net with its softmax: (N, C, H, W) image -> (N, K, H, W) class probabilities.

    Added by napari-unet's bioimage.io export, so that tools without a softmax step get probabilities.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities of a batch (softmax over the class axis)."""
        return torch.softmax(super().forward(x), dim=1)
'''

NAMES = {
    "state_dict": "weights.pt",
    "torchscript": "weights_torchscript.pt",
    "architecture": "unet_architecture.py",
    "test_input": "test_input.npy",
    "test_output": "test_output.npy",
    "sample_input": "sample_input.tif",
    "sample_output": "sample_output.tif",
    "cover": "cover.png",
    "documentation": "README.md",
}


class _PlainDumper(yaml.SafeDumper):
    """YAML without anchors and aliases (``&id001`` / ``*id001``): every reader, Java's too, reads it."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


class _Probabilities(nn.Module):
    """A net followed by its softmax: what the torchscript weights compute."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


def architecture_source() -> str:
    """The architecture file that travels in a package: ``models/unet.py`` as it is, plus a softmax head.

    ``unet.py`` imports only the standard library and torch, so the file runs where napari-unet
    is not installed.
    """
    return files("napari_unet.models").joinpath("unet.py").read_text(encoding="utf-8").rstrip() + "\n" + _HEAD


def _crop(image: np.ndarray, side: int, multiple: int) -> np.ndarray:
    """The centre of a (C, Y, X) image, each side at most ``side`` and a multiple of ``multiple``."""
    out = image
    for axis in (1, 2):
        n = out.shape[axis]
        keep = min(side, n) // multiple * multiple
        start = (n - keep) // 2
        out = np.take(out, range(start, start + keep), axis=axis)
    return out


def make_test_input(model: Model, image: Any = None) -> np.ndarray:
    """The package's test input: (1, C, Y, X) float32 raw intensities (not normalised).

    Parameters
    ----------
    model : Model
        The model; sets the channels and the size multiple.
    image : array-like, optional
        A (Y, X) or (C, Y, X) image of the model's kind; None: the synthetic 2D nuclei sample.
        The centre is cut to at most 256 px per side, a multiple of ``2**depth``.

    Returns
    -------
    numpy.ndarray
        The test input.

    Raises
    ------
    PackageError
        For an image with too few pixels or the wrong number of channels.
    """
    channels = model.config.in_channels
    if image is None:
        plane = nuclei_2d().image
        image = np.repeat(plane[None], channels, axis=0)
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or image.shape[0] != channels:
        raise PackageError(f"the test image must be (Y, X) or ({channels}, Y, X), not of shape {image.shape}")
    crop = _crop(image, TEST_SIDE, 2**model.config.depth)
    least = input_min_size(model)
    if min(crop.shape[1:]) < least:
        raise PackageError(f"the test image is too small: at least {least} x {least} px are needed")
    return np.ascontiguousarray(crop[None], dtype=np.float32)


def reference_probabilities(model: Model, raw: np.ndarray) -> np.ndarray:
    """Our engine's probabilities for a (1, C, Y, X) raw input: normalisation -> net -> softmax, float32.

    The engine's own functions (percentile bounds per channel, the folded net, its softmax) on
    the CPU in float32, one tile: the output every other tool must reproduce.
    """
    low, high = model.normalization
    plane = raw[0]
    bounds = [channel_bounds(plane[c], low, high) for c in range(plane.shape[0])]
    normalised = apply_bounds(plane, bounds)
    config = PredictConfig(tile=max(plane.shape[1:]), overlap=0, device="cpu", amp=False)
    probs = drain(iter_probabilities(model, normalised, config))
    return np.ascontiguousarray(probs[None], dtype=np.float32)


def _state_dict_bytes(net: nn.Module) -> bytes:
    """The net's weights as a plain state dict; float16 where that is exact (the bundled model), else float32.

    bioimage.io tools cast them into the float32 net on load, so a package is half the size
    without changing a single weight.
    """
    state = {}
    for key, value in net.state_dict().items():
        value = value.detach().cpu().contiguous()
        if value.dtype == torch.float32 and torch.equal(value.half().float(), value):
            value = value.half()
        state[key] = value
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _torchscript_bytes(net: nn.Module, example: np.ndarray) -> bytes:
    """The folded net with its softmax, traced on the test input, as a TorchScript file."""
    module = _Probabilities(fuse_batchnorm(net)).eval()
    with warnings.catch_warnings():
        # trace() warns about the U-Net's skip-size check and its own deprecation; a 'same'-padded
        # net takes that branch the same way for every allowed size (multiples of 2**depth)
        warnings.simplefilter("ignore")
        with torch.no_grad():
            traced = torch.jit.trace(module, torch.from_numpy(example), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _tiff_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


def _cover_bytes(raw: np.ndarray, probs: np.ndarray) -> bytes:
    """A 2:1 PNG: the normalised input (grey) beside the probabilities (interior green, boundary magenta)."""
    import imageio.v3 as iio  # local: only export writes images of this kind

    plane = raw[0, 0]
    lo, hi = np.percentile(plane, [1.0, 99.8])
    grey = np.clip((plane - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    left = np.repeat(grey[..., None], 3, axis=-1)
    interior = probs[0, 1] if probs.shape[1] > 1 else probs[0, 0]
    boundary = probs[0, 2] if probs.shape[1] > 2 else np.zeros_like(interior)
    right = np.stack([boundary, interior, boundary], axis=-1)
    image = (np.concatenate([left, right], axis=1) * 255).round().astype(np.uint8)
    return iio.imwrite("<bytes>", image, extension=".png")


def _bundled_card_text(model: Model) -> str | None:
    """The hand-written card of the bundled model, for it and for any model fine-tuned from it."""
    root = model.card
    while isinstance(root.get("parent"), dict):
        root = root["parent"]
    if root.get("name") != BUNDLED_NAME:
        return None
    text = files("napari_unet.models").joinpath("weights", f"{BUNDLED_NAME}.md")
    return text.read_text(encoding="utf-8") if text.is_file() else None


def _package_bytes(model: Model, image: Any, authors: list[dict[str, str]] | None) -> dict[str, bytes]:
    """Every file of the package by name, ``rdf.yaml`` included."""
    raw = make_test_input(model, image)
    probs = reference_probabilities(model, raw)
    content = {
        NAMES["state_dict"]: _state_dict_bytes(model.net),
        NAMES["torchscript"]: _torchscript_bytes(model.net, raw),
        NAMES["architecture"]: architecture_source().encode("utf-8"),
        NAMES["test_input"]: _npy_bytes(raw),
        NAMES["test_output"]: _npy_bytes(probs),
        NAMES["sample_input"]: _tiff_bytes(raw),
        NAMES["sample_output"]: _tiff_bytes(probs),
        NAMES["cover"]: _cover_bytes(raw, probs),
        NAMES["documentation"]: documentation(model, _bundled_card_text(model)).encode("utf-8"),
    }
    package_files = PackageFiles(
        **NAMES,
        architecture_callable=ARCHITECTURE_CALLABLE,
        sha256={name: hashlib.sha256(data).hexdigest() for name, data in content.items()},
        pytorch_version=torch.__version__.split("+")[0],
    )
    rdf = describe(model, package_files, authors=authors)
    text = yaml.dump(rdf, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True, width=110)
    return {"rdf.yaml": text.encode("utf-8"), **content}


def export_bioimageio(
    model: Model | str | os.PathLike | None,
    path: str | os.PathLike,
    *,
    test_image: Any = None,
    authors: list[str] | None = None,
    check: bool | None = None,
) -> Path:
    """Write ``model`` as a bioimage.io model package (spec 0.5) that runs without napari-unet.

    Parameters
    ----------
    model : Model, str, os.PathLike or None
        A loaded model, a model name (``"nuclei"``, a saved version) or a ``.pt`` file; None is
        the bundled model.
    path : str or os.PathLike
        The ``.zip`` to write, or an existing folder to put ``<name>.zip`` in. An existing file
        is replaced only once the new one is complete.
    test_image : array-like, optional
        A (Y, X) or (C, Y, X) image of the kind the model segments, for the test tensors and the
        cover; None uses the synthetic 2D nuclei sample (centre 256 x 256 px).
    authors : list of str, optional
        Who made the model (the package's authors); None: the napari-unet developers.
    check : bool or None
        Run bioimage.io's own model test (``bioimageio.core``) on the package before it lands in
        place, and refuse it if the test fails; None: when ``bioimageio.core`` is installed.

    Returns
    -------
    Path
        The package written.

    Raises
    ------
    PackageError
        For a model the package format cannot hold ('valid'-padded nets), a bad ``test_image``,
        or a package the model test fails (one line: the first failing check).
    BioimageioMissingError
        When ``check=True`` and ``bioimageio.core`` is not installed (says how to install it).
    ModelFileError
        For an unknown model name or a broken model file.
    OSError
        When the file cannot be written; nothing is left behind.

    Examples
    --------
    >>> import tempfile
    >>> from napari_unet.exchange.bioimageio_export import export_bioimageio
    >>> from napari_unet.models.model_file import Model
    >>> from napari_unet.models.unet import UNet, UNetConfig
    >>> model = Model(UNet(UNetConfig(base=4, depth=2)).eval(), card={"name": "tiny"})
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     print(export_bioimageio(model, tmp, check=False).name)  # a folder: <name>.zip inside
    tiny.zip
    """
    loaded = model if isinstance(model, Model) else load_model(model)
    if loaded.config.padding != "same":
        raise PackageError(
            f"{loaded.name}: only 'same'-padded U-Nets (all napari-unet models) can be exported "
            f"to bioimage.io; this one has {loaded.config.padding!r} padding"
        )
    dest = Path(path).expanduser()
    if dest.is_dir():
        dest = dest / f"{loaded.name}.zip"
    try:
        content = _package_bytes(loaded, test_image, [{"name": a} for a in authors] if authors else None)
    except BadImageError as exc:
        raise PackageError(f"test image: {exc}") from None
    run_check = is_available() if check is None else check
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(dest) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in content.items():
                zf.writestr(name, data)
        if run_check:
            result = check_package(tmp)
            if not result.passed:
                raise PackageError(f"bioimage.io's model test failed: {result.summary}")
    return dest
