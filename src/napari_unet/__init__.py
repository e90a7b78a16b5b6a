"""napari-unet: U-Net segmentation of microscopy images, correctable and fine-tunable in napari.

Importing the package is light (no torch, no Qt): the public API is loaded on first use.

    import napari_unet
    model = napari_unet.load_model()          # the bundled nuclei model
    labels = napari_unet.segment(image, model=model, axes="YX")
    image, axes, meta = napari_unet.open_image("stack.ome.zarr")   # lazy (dask) when large
    napari_unet.segment_to_zarr(image, "labels.ome.zarr", model, axes=axes)  # memory bounded
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_LAZY = {
    "load_model": ("napari_unet.registry", "load_model"),
    "list_models": ("napari_unet.registry", "list_models"),
    "segment": ("napari_unet.predict", "segment"),
    "finetune": ("napari_unet.train", "finetune"),
    "iter_segment": ("napari_unet.predict", "iter_segment"),
    "Model": ("napari_unet.model", "Model"),
    "UNet": ("napari_unet.model", "UNet"),
    "UNetConfig": ("napari_unet.model", "UNetConfig"),
    "open_image": ("napari_unet.io", "open_image"),
    "segment_to_zarr": ("napari_unet.chunked", "segment_to_zarr"),
    "run_batch": ("napari_unet.batch", "run_batch"),
    "BatchOptions": ("napari_unet.batch", "BatchOptions"),
}

__all__ = [
    "__version__",
    "BatchOptions",
    "Model",
    "UNet",
    "UNetConfig",
    "finetune",
    "iter_segment",
    "list_models",
    "load_model",
    "open_image",
    "run_batch",
    "segment",
    "segment_to_zarr",
]

if TYPE_CHECKING:  # pragma: no cover
    from .batch import BatchOptions, run_batch
    from .chunked import segment_to_zarr
    from .io import open_image
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
