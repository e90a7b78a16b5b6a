"""Fine-tune's preview layer: what the model being trained would segment, where the user looks.

The worker segments a window (a few hundred pixels square) of the plane on screen every few
seconds; this part keeps the window following the view and writes each result into
'<image> preview', a Labels layer that is never the user's labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from napari.layers import Labels

from . import _finetune_plan as fp
from . import _plan


def camera(viewer: Any) -> Any:
    """napari >= 0.9 moved the camera to ``viewer.scene.camera``."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def preview_target(viewer: Any, labels: Labels) -> tuple[fp.Plane, tuple[int, int, int, int]]:
    """The plane on screen and a window around the view's centre, in the labels' pixels."""
    shape = np.shape(labels.data)
    point = list(viewer.dims.point)
    displayed = list(viewer.dims.displayed)[-2:]
    center = list(camera(viewer).center)[-2:]
    for d, c in zip(displayed, center, strict=False):
        point[d] = c
    pos = labels.world_to_data(point)
    n_lead = len(shape) - 2
    plane = tuple(int(np.clip(np.round(v), 0, n - 1)) for v, n in zip(pos[:n_lead], shape, strict=False))
    return plane, fp.preview_window(shape[-2:], pos[-2:])


@dataclass(frozen=True)
class PreviewSpec:
    """The preview layer of a run: the labels layer's geometry, captured when it starts."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    units: tuple[Any, ...]
    axis_labels: tuple[str, ...]

    @classmethod
    def of(cls, image_name: str, labels: Labels) -> PreviewSpec:
        return cls(
            name=f"{image_name} preview",
            shape=tuple(np.shape(labels.data)),
            # the labels layer's dtype: napari reuses its texture format and shader for the preview
            dtype=fp.preview_dtype(np.asarray(labels.data[(0,) * labels.ndim]).dtype),
            scale=tuple(labels.scale),
            translate=tuple(labels.translate),
            units=tuple(labels.units),
            axis_labels=tuple(labels.axis_labels),
        )


class PreviewLayer:
    """The run's preview layer and the window it shows, following the view."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.ids: set[Any] = set()  # every preview layer made: never offered as labels to learn
        self.shown = 0  # previews written in this run
        self.target: fp.PreviewTarget | None = None  # read by the worker: where to preview
        self._labels_id: Any = None
        self._spec: PreviewSpec | None = None
        self._id: Any = None
        self._removed = False
        self._last_window: tuple[fp.Plane, tuple[int, int, int, int]] | None = None
        viewer.dims.events.current_step.connect(self.follow_view)
        camera(viewer).events.center.connect(self.follow_view)

    def begin(self, labels: Labels, image_name: str) -> fp.PreviewTarget:
        """A run starts on ``labels``: a fresh target (the dock then calls :meth:`layer`)."""
        self.target = fp.PreviewTarget(*preview_target(self.viewer, labels))
        self._labels_id = labels.unique_id
        self._spec = PreviewSpec.of(image_name, labels)
        self._id, self._removed, self.shown = None, False, 0
        return self.target

    def follow_view(self, *_: Any) -> None:
        labels = _plan.layer_by_id(self.viewer.layers, self._labels_id)
        if self.target is not None and labels is not None:
            self.target.value = preview_target(self.viewer, labels)

    def layer(self) -> Labels | None:
        """'<image> preview' (created once per image; never the user's labels), or None when the
        user deleted it during this run. Created when the run starts: adding a layer costs
        napari a few hundred ms on the GUI thread (controls, visual), better at the click than
        as a freeze in the middle of training."""
        spec = self._spec
        if self._removed or spec is None:
            return None
        layer = _plan.layer_by_id(self.viewer.layers, self._id)
        if self._id is not None and layer is None:
            self._removed = True  # the user deleted it: stop previewing this run
            return None
        if layer is None:
            layers = self.viewer.layers
            layer = next((lyr for lyr in layers if lyr.name == spec.name and isinstance(lyr, Labels)), None)
            if layer is None or tuple(np.shape(layer.data)) != spec.shape:
                active = layers.selection.active
                layer = Labels(
                    np.zeros(spec.shape, spec.dtype),
                    name=_plan.next_free_name(spec.name, [lyr.name for lyr in layers]),
                    scale=spec.scale,
                    translate=spec.translate,
                    units=spec.units,
                    axis_labels=spec.axis_labels,
                    opacity=0.6,
                )
                self.ids.add(layer.unique_id)
                layers.append(layer)
                if active is not None:  # keep the user's brush on the layer they were painting
                    layers.selection.active = active
            self.ids.add(layer.unique_id)
            self._id = layer.unique_id
            self._last_window = None
        return layer

    def show(self, result: fp.PreviewResult) -> None:
        """Write the preview window into the preview layer (the previous window is cleared).

        Only the changed rectangle is re-coloured and sent to the GPU (:func:`redraw_window`):
        a whole-layer refresh costs 8-15 ms of the GUI thread on a 512 px plane and 30-150 ms
        on a 2048 px one, this 2 ms at any size (measured under Xvfb)."""
        layer = self.layer()
        if layer is None:
            return
        y0, y1, x0, x1 = result.window
        data = layer.data
        values = result.labels
        if values.max(initial=0) > np.iinfo(data.dtype).max:
            values = values % np.iinfo(data.dtype).max  # a preview: colours only, ids may wrap
        box = (y0, y1, x0, x1)
        if self._last_window is not None:
            plane, (a, b, c, d) = self._last_window
            data[plane][a:b, c:d] = 0
            if plane == result.plane:
                box = (min(a, y0), max(b, y1), min(c, x0), max(d, x1))
            elif not redraw_window(layer, plane, (a, b, c, d)):
                layer.refresh()
        data[result.plane][y0:y1, x0:x1] = values
        self._last_window = (result.plane, result.window)
        if not redraw_window(layer, result.plane, box):
            layer.refresh()
        self.shown += 1


def redraw_window(layer: Labels, plane: fp.Plane, box: tuple[int, int, int, int]) -> bool:
    """Show a rectangle of ``layer.data`` already written, as napari shows a brush stroke.

    napari's partial update (the one ``Labels.data_setitem`` uses) re-colours and uploads just
    that rectangle. It is private to napari, so any surprise falls back to a full refresh
    (False). True also when the plane is not on screen: it is sliced afresh when shown.
    """
    y0, y1, x0, x1 = box
    try:
        if layer.contour or list(layer._slice_input.displayed) != [layer.ndim - 2, layer.ndim - 1]:
            return False
        shown = layer._get_pt_not_disp()
        if any(int(shown.get(axis, index)) != index for axis, index in enumerate(plane)):
            return True
        layer._slice.image.view[y0:y1, x0:x1] = layer.colormap._data_to_texture(
            np.asarray(layer.data[plane][y0:y1, x0:x1])
        )
        layer._accumulate_updated_slice((*(slice(i, i + 1) for i in plane), slice(y0, y1), slice(x0, x1)))
        layer._partial_labels_refresh()
    except (AttributeError, TypeError, ValueError, IndexError, KeyError):
        return False
    return True
