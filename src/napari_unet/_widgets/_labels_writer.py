"""Where a Segment result goes: the labels layer it updates, never over the user's edits.

A re-run updates the layer it wrote last for that image (one undo step restores the old
labels) unless the user edited it since, which the plane fingerprints recorded here tell;
then a new layer is written. The record is shared with Fine-tune (``ModelState.written``),
which uses it to tell a user's edit from Segment's own write.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Labels

from . import _lazy, _notify, _plan
from ._segment_run import JobResult, SegmentJob


class LabelsWriter:
    """Writes results into the viewer's labels layers and remembers what it wrote."""

    def __init__(self, viewer: Any, written: dict[Any, _plan.Written]) -> None:
        self.viewer = viewer
        # labels layer id -> what we wrote there; shared so Fine-tune can tell edits from our writes
        self._written = written
        self._target_for: dict[Any, Any] = {}  # image id -> labels id
        self._stores: dict[Any, Path] = {}  # lazy labels layer id -> its store in the cache

    def forget_store(self, event: Any) -> None:
        """A lazy labels layer was deleted: its store in the cache goes too (disk is not
        unlimited, and nothing else points at it; File > Save writes a copy elsewhere)."""
        path = self._stores.pop(getattr(event.value, "unique_id", None), None)
        if path is not None:
            _lazy.remove_store(path)

    def holds(self, store: Path) -> bool:
        """Whether a labels layer written here is backed by ``store``."""
        return Path(store) in self._stores.values()

    def _new_name(self, job: SegmentJob) -> str:
        return _plan.next_free_name(f"{job.image_name} labels", [lyr.name for lyr in self.viewer.layers])

    def result_layer(self, image_id: Any, image_name: str) -> Labels | None:
        """The labels layer of an image: the one we last wrote for it, or (first run) a layer
        already named '<image> labels'. Re-runs update it; Measure measures it."""
        uid = self._target_for.get(image_id)
        layer = _plan.layer_by_id(self.viewer.layers, uid) if uid is not None else None
        if layer is None:
            name = f"{image_name} labels"
            layer = next((lyr for lyr in self.viewer.layers if lyr.name == name), None)
        return layer if isinstance(layer, Labels) else None

    def _target_layer(self, job: SegmentJob) -> Any:
        return self.result_layer(job.image_id, job.image_name)

    def write(self, job: SegmentJob, result: JobResult) -> str:
        """Put the result into the target labels layer, never over edits; returns its name."""
        if not isinstance(result.labels, np.ndarray):  # a lazy stack's labels: a store on disk
            return self._add_lazy_labels(job, result)
        plan = job.plan
        labels = np.asarray(result.labels)
        target = self._target_layer(job)
        current = None
        kept = None
        if target is not None:
            current = np.asarray(target.data)
            written = self._written.get(target.unique_id)
            if (
                current.shape != plan.labels_shape
                or written is None
                or not _plan.untouched_since_written(current, written, plan.target)
            ):
                kept = target.name
                target, current = None, None
        same_as_result = False  # does the layer now hold exactly ``result.labels``?
        if target is None:
            full = _plan.merge_result(None, labels, plan)
            same_as_result = full is labels
            name = self._new_name(job)
            target = self._add_labels(full, name, job)
            if kept is not None:
                _notify.info(
                    f"'{kept}' was edited or not written by napari-unet; "
                    f"kept it and wrote the result to '{name}'"
                )
        elif plan.is_slice:
            values = _plan.slice_values(current, labels, plan)
            if values.dtype == current.dtype:
                local = np.nonzero(current[plan.target] != values)
                # one undo step (Ctrl+Z) restores the slice
                target.data_setitem(_plan.full_indices(plan.target, local), values[local])
            else:
                full = current.astype(values.dtype)
                full[plan.target] = values
                target.data = full
        else:
            full = _plan.merge_result(current, labels, plan)
            same_as_result = full.dtype == current.dtype
            idx = _plan.changed_indices(current, full) if same_as_result else ()
            if same_as_result and idx[0].size <= _plan.MAX_UNDO_PIXELS:
                target.data_setitem(idx, full[idx])  # one undo step (Ctrl+Z) restores the old labels
            else:
                target.data = full
        self._written[target.unique_id] = self._record(target, plan, result, same_as_result)
        self._target_for[job.image_id] = target.unique_id
        return target.name

    def _add_lazy_labels(self, job: SegmentJob, result: JobResult) -> str:
        """A new Labels layer backed by the zarr store (never merged into an existing layer:
        comparing it with one would read the whole stack)."""
        layer = self._add_labels(result.labels, self._new_name(job), job)
        self._target_for[job.image_id] = layer.unique_id
        if job.store is not None:
            self._stores[layer.unique_id] = job.store
        return layer.name

    def _add_labels(self, data: Any, name: str, job: SegmentJob) -> Labels:
        """A new Labels layer in the viewer, as ``viewer.add_labels`` makes it, but with its
        tool overlays built only when first used (see :func:`_build_overlays_when_enabled`)."""
        layer = Labels(data, name=name, **job.layer_geometry())
        _build_overlays_when_enabled(layer)
        self.viewer.add_layer(layer)
        return layer

    def _record(self, layer: Any, plan: _plan.Plan, result: JobResult, same_as_result: bool) -> _plan.Written:
        """Add what the layer holds now to the record used to recognise user edits.

        Whole-stack results were fingerprinted in the worker; when the layer holds exactly
        that array, only the (cheap) slice case hashes anything on the GUI thread."""
        data = np.asarray(layer.data)
        before = self._written.get(layer.unique_id)
        if not plan.is_slice:
            same = same_as_result and result.fingerprint is not None and data.dtype == result.labels.dtype
            return _plan.remember(before, result.fingerprint if same else _plan.fingerprint(data))
        if before is None or len(before) < len(_plan.plane_indices(data.shape)):
            return _plan.remember(before, _plan.fingerprint(data))  # a new layer: every plane
        return _plan.remember(before, _plan.fingerprint(data, _plan.plane_indices(data.shape, plan.target)))


def _build_overlays_when_enabled(layer: Labels) -> None:
    """Hide the layer's idle tool overlays (polygon, brush stroke) until its mode enables them.

    napari builds a vispy visual for every visible overlay of a layer when the layer is added,
    on the GUI thread: the polygon overlay alone took ~50 ms a layer, plus ~50 ms the first time
    in a session (vispy's dash patterns), about half of the window's freeze when a first result
    arrived (``benchmarks/profile_add_labels.py``). A hidden overlay's visual is built when it is
    shown, which happens here as the user picks the mode that uses it (polygon or paint)."""
    for overlay in getattr(layer, "_overlays", {}).values():
        if overlay.visible and getattr(overlay, "enabled", None) is False:
            overlay.visible = False
            overlay.events.enabled.connect(partial(_show_if_enabled, overlay))


def _show_if_enabled(overlay: Any, event: Any = None) -> None:
    if overlay.enabled:
        overlay.visible = True
