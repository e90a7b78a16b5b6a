"""npe2 writers for Labels layers: TIFF (ImageJ-calibrated) and OME-Zarr, keeping scale and axes.

Axes come from the layer's ``metadata["napari_unet_axes"]`` (set by our reader and the Segment
widget; ``C`` dropped since labels have no channel), else from the shape (YX, ZYX, TZYX). The
pixel size comes from the layer's ``scale`` for Z, Y and X, the unit from ``metadata["unit"]``.
Both writers are atomic; dask- or zarr-backed labels are written block by block, never loaded
whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.io.labels import write_labels
from napari_unet.io.omezarr import write_ome_zarr


def _full_resolution(data: Any) -> Any:
    # napari's MultiScaleData has a shape and dtype too, but indexing it picks a level
    if isinstance(data, (list, tuple)) or type(data).__name__ == "MultiScaleData":
        return data[0]
    return data


def label_axes(ndim: int, attributes: dict[str, Any]) -> str:
    """The labels' axes: the layer's own if they fit, else the last ``ndim`` of ``TZYX``."""
    md = attributes.get("metadata") or {}
    axes = md.get("napari_unet_axes")
    if isinstance(axes, str):
        axes = axes.upper().replace("S", "C").replace("C", "")
        if len(axes) == ndim and len(set(axes)) == ndim and set(axes) <= set("TZYX"):
            return axes
    if not 2 <= ndim <= 4:
        raise ValueError(f"cannot tell the axes of {ndim}-D labels; at most TZYX is supported")
    return "TZYX"[-ndim:]


def _calibration(axes: str, attributes: dict[str, Any]) -> tuple[dict[str, float], str | None]:
    md = attributes.get("metadata") or {}
    scale = attributes.get("scale")
    sizes: dict[str, float] = {}
    if scale is not None and len(scale) == len(axes):
        sizes = {a: float(s) for a, s in zip(axes, scale, strict=True) if a in "ZYX"}
    known = dict(md.get("pixel_size") or {})
    if all(v == 1.0 for v in sizes.values()) and not known:
        return {}, None  # uncalibrated: write no pixel size rather than "1 micron"
    unit = md.get("unit") or ("µm" if sizes else None)
    return sizes, unit


def write_labels_tiff(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Save a Labels layer as a zlib TIFF (ImageJ hyperstack when ImageJ can hold it)."""
    data = _full_resolution(data)
    axes = label_axes(len(data.shape), attributes)
    sizes, unit = _calibration(axes, attributes)
    out = write_labels(Path(path), data, axes=axes, meta={"pixel_size": sizes, "unit": unit})
    return [str(out)]


def write_labels_zarr(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Save a Labels layer as an OME-Zarr labels image (``image-label``), replacing an old one."""
    data = _full_resolution(data)
    axes = label_axes(len(data.shape), attributes)
    sizes, unit = _calibration(axes, attributes)
    if isinstance(data, np.ndarray) and data.dtype.kind == "i" and data.size and int(data.min()) < 0:
        raise ValueError("labels must not be negative")
    out = write_ome_zarr(
        Path(path),
        data,
        axes,
        pixel_size=sizes,
        unit=unit,
        name=attributes.get("name"),
        overwrite=True,
        labels=True,
    )
    return [str(out)]
