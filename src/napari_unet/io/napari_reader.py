"""npe2 reader: TIFF / OME-TIFF / OME-Zarr stacks as napari layers, lazily when they are large.

What each layer carries (the Segment widget and the writers rely on these keys):

* ``metadata["napari_unet_axes"]``: the layer's own axes (TZCYX letters, no ``C`` once the
  channels are split into layers; ``YXC`` style for an RGB layer), or ``None`` when the shape
  cannot be guessed: the user must type them.
* ``metadata["napari_unet_axes_guessed"]``: ``True`` when the file did not say and the axes come
  from :func:`~napari_unet.common.axes.guess_axes` (prefill the widget's axes field and let the user
  correct it).
* ``metadata["napari_unet_file_axes"]``, ``pixel_size``, ``unit``, ``source``, ``format``,
  ``lazy`` and, for a channel layer, ``channel`` (index) and ``channel_name``.

``scale`` is the physical pixel size for Z, Y and X (1 for T). Channels become separate layers
(napari's ``channel_axis``); RGB only for real colour samples. A large OME-Zarr image with several
resolution levels is opened multiscale (``layer.data[0]`` is the full resolution).

What the file makes doubtful (chunks missing from an OME-Zarr image, read as the fill value) is
said with a ``UserWarning``, which napari shows as a notification, and kept in
``metadata["warning"]``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_unet.common.axes import AxesError, guess_axes
from napari_unet.io.errors import ImageReadError
from napari_unet.io.images import TIFF_SUFFIXES, image_stem, open_image
from napari_unet.io.omezarr import is_zarr_store, read_ome_zarr_levels

LayerData = tuple[Any, dict[str, Any], str]
# multiscale only pays off when a plane is bigger than a screen's worth of texture
MULTISCALE_MIN_SIDE = 4096
_PINT_UNITS = {
    "µm": "micrometer",
    "um": "micrometer",
    "micron": "micrometer",
    "nm": "nanometer",
    "mm": "millimeter",
}


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """The reader for TIFF files and Zarr folders, else ``None`` so napari tries other plugins.

    A ``.tif`` that turns out not to be a TIFF still gets our reader: it raises a one-line error
    that napari shows, which tells the user more than "no reader found".
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    lower = p.name.lower()
    if p.is_dir():
        return read_path if lower.endswith(".zarr") or is_zarr_store(p) else None
    if lower.endswith((*TIFF_SUFFIXES, ".zarr")):
        return read_path
    return None


def read_path(path: str | list[str]) -> list[LayerData]:
    """Open one file or folder as layer data tuples; errors are one line naming the file."""
    if isinstance(path, list):
        return [layer for p in path for layer in read_path(p)]
    p = Path(path)
    try:
        data, axes, meta = open_image(p)
        levels = None
        if meta.get("levels", 1) > 1 and max(data.shape[-2:]) > MULTISCALE_MIN_SIDE:
            levels = read_ome_zarr_levels(p)[0]
    except ImageReadError as exc:
        raise ImageReadError(f"cannot open {p.name}: {exc}") from None
    if meta.get("warning"):
        warnings.warn(f"{p.name}: {meta['warning']}", UserWarning, stacklevel=2)
    return layer_data(data, axes, meta, source=os.fspath(p), levels=levels)


def _scale(axes: str, pixel_size: dict[str, float]) -> list[float]:
    return [float(pixel_size.get(a, 1.0)) if a in "ZYX" else 1.0 for a in axes]


def layer_data(
    data: Any,
    axes: str | None,
    meta: dict[str, Any],
    source: str,
    levels: list[Any] | None = None,
    name: str | None = None,
) -> list[LayerData]:
    """Napari layer data tuples for an array with known (or guessable) axes."""
    guessed = False
    rgb_hint = bool(meta.get("rgb"))
    if axes is None:
        try:
            axes = guess_axes(tuple(data.shape), rgb=rgb_hint)
            guessed = True
        except AxesError:
            axes = None
    name = name or meta.get("name") or image_stem(source)
    pixel_size = dict(meta.get("pixel_size") or {})
    unit = meta.get("unit")
    base_md: dict[str, Any] = {
        "napari_unet_file_axes": axes,
        "napari_unet_axes_guessed": guessed,
        "pixel_size": pixel_size,
        "unit": unit,
        "source": source,
        "format": meta.get("format"),
        "lazy": bool(meta.get("lazy")),
    }
    if meta.get("note"):
        base_md["note"] = meta["note"]
    if meta.get("warning"):
        base_md["warning"] = meta["warning"]

    def md(layer_axes: str | None, **extra: Any) -> dict[str, Any]:
        # "axes" is the hint the Segment/Fine-tune widgets already read (as for the samples)
        hint = {"axes": layer_axes} if layer_axes else {}
        return {**base_md, "napari_unet_axes": layer_axes, **hint, **extra}

    layer = levels if levels is not None else data
    kwargs: dict[str, Any] = {"name": name}
    if levels is not None:
        kwargs["multiscale"] = True

    if axes is None:  # napari shows it with sliders; the user gives the axes in the widget
        return [(layer, {**kwargs, "metadata": md(None)}, "image")]

    if meta.get("labels"):
        kwargs.update(_geometry(axes, pixel_size, unit))
        return [(layer, {**kwargs, "metadata": md(axes)}, "labels")]

    rgb = rgb_hint and axes.endswith("C") and data.shape[-1] in (3, 4) and str(data.dtype) == "uint8"
    if rgb:
        kwargs.update(_geometry(axes[:-1], pixel_size, unit), rgb=True)
        return [(layer, {**kwargs, "metadata": md(axes)}, "image")]

    if "C" not in axes:
        kwargs.update(_geometry(axes, pixel_size, unit))
        return [(layer, {**kwargs, "metadata": md(axes)}, "image")]

    c = axes.index("C")
    n = int(data.shape[c])
    layer_axes = axes.replace("C", "")
    names = list(meta.get("channel_names") or [f"c{i}" for i in range(n)])
    geometry = _geometry(layer_axes, pixel_size, unit)
    kwargs.update({k: [v] * n for k, v in geometry.items()})
    kwargs["name"] = [f"{name} {cname}" for cname in names]
    kwargs["channel_axis"] = c
    kwargs["metadata"] = [md(layer_axes, channel=i, channel_name=names[i]) for i in range(n)]
    return [(layer, kwargs, "image")]


def _geometry(axes: str, pixel_size: dict[str, float], unit: str | None) -> dict[str, Any]:
    """scale, axis labels and units for a layer whose dimensions are ``axes``."""
    out: dict[str, Any] = {"scale": _scale(axes, pixel_size), "axis_labels": tuple(axes)}
    physical = _PINT_UNITS.get(unit or "")
    if physical and any(a in pixel_size for a in "ZYX"):
        out["units"] = tuple(physical if a in "ZYX" else "pixel" for a in axes)
    return out
