"""napari-unet: U-Net segmentation of microscopy images, correctable and fine-tunable in napari.

Importing the package is light (no torch, no Qt): the public API is loaded on first use.

    import napari_unet
    model = napari_unet.load_model()          # the bundled nuclei model
    labels = napari_unet.segment(image, model=model, axes="YX")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": ("napari_unet.registry", "load_model"),
    "list_models": ("napari_unet.registry", "list_models"),
    "segment": ("napari_unet.predict", "segment"),
    "finetune": ("napari_unet.train", "finetune"),
    "iter_segment": ("napari_unet.predict", "iter_segment"),
    "Model": ("napari_unet.model", "Model"),
    "UNet": ("napari_unet.model", "UNet"),
    "UNetConfig": ("napari_unet.model", "UNetConfig"),
}

__all__ = [
    "__version__",
    "Model",
    "UNet",
    "UNetConfig",
    "finetune",
    "iter_segment",
    "list_models",
    "load_model",
    "segment",
]

if TYPE_CHECKING:  # pragma: no cover
    from .model import Model, UNet, UNetConfig
    from .predict import iter_segment, segment
    from .registry import list_models, load_model
    from .train import finetune


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'napari_unet' has no attribute {name!r}")
