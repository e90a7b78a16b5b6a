"""napari-unet: U-Net segmentation of microscopy images, correctable and fine-tunable in napari.

Importing the package is light (no torch, no Qt): the public API is loaded on first use.

    import napari_unet
    model = napari_unet.load_model()          # the bundled nuclei model
    labels = napari_unet.segment(image, model=model, axes="YX")   # object size estimated
    image, axes, meta = napari_unet.open_image("stack.ome.zarr")   # lazy (dask) when large
    napari_unet.segment_to_zarr(image, "labels.ome.zarr", model, axes=axes)  # memory bounded
    napari_unet.export_bioimageio(model, "nuclei.zip")   # a bioimage.io package for Fiji, ilastik, QuPath
    session = napari_unet.proofread.Session(image, labels, axes="YX")  # add / split / merge / delete
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_LAZY = {
    "load_model": ("napari_unet.models.registry", "load_model"),
    "list_models": ("napari_unet.models.registry", "list_models"),
    "segment": ("napari_unet.engine.predict", "segment"),
    "estimate_object_size": ("napari_unet.engine.predict", "estimate_object_size"),
    "measure": ("napari_unet.engine.measure", "measure"),
    "finetune": ("napari_unet.training.finetune", "finetune"),
    "iter_segment": ("napari_unet.engine.predict", "iter_segment"),
    "Model": ("napari_unet.models.model_file", "Model"),
    "UNet": ("napari_unet.models.unet", "UNet"),
    "UNetConfig": ("napari_unet.models.unet", "UNetConfig"),
    "open_image": ("napari_unet.io.images", "open_image"),
    "segment_to_zarr": ("napari_unet.scale.chunked", "segment_to_zarr"),
    "run_batch": ("napari_unet.scale.batch", "run_batch"),
    "BatchOptions": ("napari_unet.scale.batch", "BatchOptions"),
    "export_bioimageio": ("napari_unet.exchange.bioimageio_export", "export_bioimageio"),
    "import_bioimageio": ("napari_unet.exchange.bioimageio_import", "import_package"),
}

__all__ = [
    "BatchOptions",
    "Model",
    "UNet",
    "UNetConfig",
    "__version__",
    "estimate_object_size",
    "export_bioimageio",
    "finetune",
    "import_bioimageio",
    "iter_segment",
    "list_models",
    "load_model",
    "measure",
    "open_image",
    "proofread",
    "run_batch",
    "segment",
    "segment_to_zarr",
]

if TYPE_CHECKING:  # pragma: no cover
    from napari_unet import proofread
    from napari_unet.engine.measure import measure
    from napari_unet.engine.predict import estimate_object_size, iter_segment, segment
    from napari_unet.exchange.bioimageio_export import export_bioimageio
    from napari_unet.exchange.bioimageio_import import import_package as import_bioimageio
    from napari_unet.io.images import open_image
    from napari_unet.models.model_file import Model
    from napari_unet.models.registry import list_models, load_model
    from napari_unet.models.unet import UNet, UNetConfig
    from napari_unet.scale.batch import BatchOptions, run_batch
    from napari_unet.scale.chunked import segment_to_zarr
    from napari_unet.training.finetune import finetune


_SUBPACKAGES = {"proofread"}  # public subpackages: ``napari_unet.proofread.Session(...)``


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        value = importlib.import_module(f"napari_unet.{name}")
        globals()[name] = value
        return value
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'napari_unet' has no attribute {name!r}")
