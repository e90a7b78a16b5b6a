"""A proofreading session: one image, its labels, and the net's probabilities kept per plane.

    session = Session(image, labels, axes="YX")       # model None = the bundled one
    session.add((120, 88))                             # a missed nucleus
    session.split([(40, 30), (44, 52)])                # two nuclei merged into one
    session.merge([(10, 10), (12, 18)])                # or session.merge([3, 7])
    session.delete((200, 150))                         # a false object
    session.undo()                                     # the last edit, whole

Points of stacks lead with the plane's index: ``(z, y, x)``, ``(t, y, x)``, ``(t, z, y, x)``.
``add`` and ``split`` act on that plane; ``merge`` and ``delete`` on the frame's whole volume,
so an object of a z-stack keeps one id through z. Every tool refuses with a
:class:`~napari_unet.proofread.edits.ProofreadError` (one line, nothing changed) where it
cannot act.

The probabilities of a plane are computed by the engine the first time a tool needs them
(:func:`~napari_unet.engine.plane_probabilities.iter_plane_probabilities`: the normalisation,
object scale and tiles of Segment) and kept; ``plan_*`` methods compute an edit without
applying it (the napari widget applies it as one undo step).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import numpy as np

from napari_unet.common.axes import output_axes, validate_axes
from napari_unet.common.generators import drain
from napari_unet.engine.config import PredictConfig, Progress
from napari_unet.engine.object_size import equivalent_diameters, object_areas
from napari_unet.engine.plane_probabilities import iter_plane_probabilities, object_diameter_px
from napari_unet.engine.postprocess import PostprocessParams
from napari_unet.engine.setup import SegmentJob, default_params, prepare
from napari_unet.models.model_file import Model, ModelFileError
from napari_unet.proofread.edits import Edit, ProofreadError
from napari_unet.proofread.operations import (
    PlaneEvidence,
    add_object,
    delete_object,
    merge_objects,
    plane_point,
    split_object,
)

__all__ = ["Session"]

Lead = tuple[int, ...]
MIN_OBJECTS_FOR_SIZE = 5  # the labels tell the objects' size once they hold this many


class Session:
    """Proofread ``labels`` of ``image`` with the tools of :mod:`napari_unet.proofread.operations`.

    Parameters
    ----------
    image : array-like
        The image the labels were made from (numpy or dask), axes ``axes``.
    labels : numpy.ndarray
        Integer labels of the image's shape without its C axis (Y and X last).
    model : Model, str or None
        The model whose probabilities guide the tools (None: the bundled one); only loaded
        when a plane's probabilities are needed and were not given.
    axes : str
        The image's axes, e.g. ``"YX"``, ``"ZYX"``, ``"TCYX"``.
    channel : int, optional
        The channel a one-channel model sees.
    params : PostprocessParams, optional
        The thresholds the labels were made with (None: the model card's); ``add`` lowers them.
    config : PredictConfig
        How the probabilities are computed (the object diameter, tiles, device).
    probabilities : array or dict, optional
        Probabilities already computed: (K, H, W) for a 2D image, or ``{plane index: (K, H, W)}``.
    copy : bool
        Work on a copy of ``labels`` (default); False edits the given array in place.
    """

    def __init__(
        self,
        image: Any,
        labels: np.ndarray,
        model: Model | str | None = None,
        axes: str = "YX",
        *,
        channel: int | None = None,
        params: PostprocessParams | None = None,
        config: PredictConfig = PredictConfig(),
        probabilities: np.ndarray | dict[Lead, np.ndarray] | None = None,
        copy: bool = True,
    ) -> None:
        self.axes = validate_axes(axes, np.shape(image))
        self.labels_axes = output_axes(self.axes)
        if not self.labels_axes.endswith("YX"):
            raise ProofreadError(f"proofreading needs Y and X as the last axes, not {self.axes!r}")
        labels = np.array(labels, copy=True) if copy else labels
        if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iu":
            raise ProofreadError(f"labels must be an integer array, not {getattr(labels, 'dtype', labels)}")
        want = tuple(n for a, n in zip(self.axes, np.shape(image), strict=True) if a != "C")
        if labels.shape != want:
            raise ProofreadError(f"labels of shape {labels.shape} do not fit the image (expected {want})")
        self.image = image
        self.labels = labels
        self.lead_axes = self.labels_axes[:-2]
        self._model = model
        self._channel = channel
        self._params = params
        self._config = config
        self._job: SegmentJob | None = None
        self._evidence: dict[Lead, PlaneEvidence] = {}
        self.history: list[Edit] = []
        self._max_id = int(labels.max(initial=0))
        self._stale = False  # the labels changed outside the session: find the top id again
        if probabilities is not None:
            given = probabilities if isinstance(probabilities, dict) else {(): probabilities}
            for lead, probs in given.items():
                self.set_probabilities(tuple(lead), probs)

    # -- where a point lies ---------------------------------------------------------------
    def split_point(self, point: Sequence[float]) -> tuple[Lead, tuple[float, float]]:
        """A point's plane index (the leading axes) and its (y, x), checked against the labels."""
        point = tuple(point)
        if len(point) != self.labels.ndim:
            raise ProofreadError(
                f"a point of these {self.labels_axes} labels has {self.labels.ndim} coordinates, "
                f"got {len(point)}"
            )
        lead = tuple(round(float(c)) for c in point[:-2])
        for a, i, n in zip(self.lead_axes, lead, self.labels.shape, strict=False):
            if not 0 <= i < n:
                raise ProofreadError(f"{a} = {i} is outside the stack (0..{n - 1})")
        return lead, (float(point[-2]), float(point[-1]))

    def _plane(self, lead: Lead) -> np.ndarray:
        return self.labels[lead]

    def object_at(self, point: Sequence[float]) -> int:
        """The id under ``point`` (0: background); a point outside the labels is refused."""
        lead, yx = self.split_point(point)
        plane = self._plane(lead)
        return int(plane[plane_point(plane, yx)])

    def _volume_index(self, lead: Lead) -> tuple[Any, ...]:
        """The index of the frame holding plane ``lead``: merge and delete act on it whole."""
        return tuple(i if a == "T" else slice(None) for a, i in zip(self.lead_axes, lead, strict=True))

    def _tz(self, lead: Lead) -> tuple[int, int]:
        t = lead[self.lead_axes.index("T")] if "T" in self.lead_axes else 0
        z = lead[self.lead_axes.index("Z")] if "Z" in self.lead_axes else 0
        return t, z

    # -- probabilities ----------------------------------------------------------------------
    def _prepared(self) -> SegmentJob:
        if self._job is None:
            try:
                self._job = prepare(
                    self.image, self._model, self.axes, self._channel, self._params, self._config
                )
            except ModelFileError as exc:
                raise ProofreadError(
                    f"no probabilities for this plane and no model to compute them: {exc}"
                ) from exc
        return self._job

    @property
    def params(self) -> PostprocessParams:
        """The post-processing thresholds the tools start from (sizes at the image's scale)."""
        if self._job is not None:
            return self._job.params  # the given ones, their sizes converted with the job's zoom
        if self._params is not None:
            return self._params
        if isinstance(self._model, Model):
            return default_params(self._model)
        return PostprocessParams()

    @property
    def config(self) -> PredictConfig:
        """How the probabilities are computed (object diameter, tiles, device)."""
        return self._config

    def has_probabilities(self, lead: Lead) -> bool:
        """Whether the probabilities of plane ``lead`` are at hand (no net run needed)."""
        return tuple(lead) in self._evidence

    def set_probabilities(self, lead: Lead, probs: np.ndarray) -> None:
        """Keep (K, H, W) probabilities for plane ``lead`` (e.g. those Segment computed)."""
        probs = np.asarray(probs)
        if probs.shape[-2:] != self.labels.shape[-2:]:
            raise ProofreadError(
                f"probabilities of shape {probs.shape} do not fit planes of {self.labels.shape[-2:]}"
            )
        self._evidence[tuple(lead)] = PlaneEvidence.from_probabilities(probs)

    def iter_probabilities(self, lead: Lead = ()) -> Generator[Progress, None, None]:
        """Compute and keep plane ``lead``'s probabilities, yielding progress (for a worker)."""
        lead = tuple(lead)
        if lead in self._evidence:
            return
        probs = yield from iter_plane_probabilities(self._prepared(), *self._tz(lead))
        self._evidence[lead] = PlaneEvidence.from_probabilities(probs)

    def evidence(self, lead: Lead) -> PlaneEvidence:
        """Plane ``lead``'s interior / foreground / boundary maps, computed once."""
        if lead not in self._evidence:
            drain(self.iter_probabilities(lead))
        return self._evidence[lead]

    def forget_probabilities(self) -> None:
        """Drop every kept plane (after the image or the model changed)."""
        self._evidence.clear()
        self._job = None

    def diameter(self, lead: Lead, areas: np.ndarray | None = None) -> float:
        """The typical object diameter (px): from the plane's own objects, else the model's scale.

        ``areas``: :func:`object_areas` of the plane when the caller has counted them.
        """
        diameters = equivalent_diameters(self._plane(lead), areas)
        if diameters.size >= MIN_OBJECTS_FOR_SIZE:
            return float(np.median(diameters))
        return object_diameter_px(self._prepared())

    # -- the tools: plan (no change) ---------------------------------------------------------
    @staticmethod
    def _embed(index: tuple[Any, ...], edit: Edit) -> Edit:
        """An edit of ``labels[index]`` as an edit of the whole labels array.

        ``index`` holds ints (axes the edit does not span: a plane's z, a frame's t) and
        ``slice(None)`` (axes it spans, whose slices the edit's region gives, in order).
        """
        inner = iter(edit.region)
        region = tuple(slice(i, i + 1) if isinstance(i, int) else next(inner) for i in index) + tuple(inner)
        shape = tuple(s.stop - s.start for s in region)
        return Edit(region, edit.before.reshape(shape), edit.after.reshape(shape), edit.ids, edit.message)

    def _next_id(self, count: int = 1) -> int:
        """The first of ``count`` unused ids (above every id of the labels)."""
        if self._stale:
            self._max_id, self._stale = int(self.labels.max(initial=0)), False
        top = self._max_id + count
        if top > np.iinfo(self.labels.dtype).max:
            raise ProofreadError(
                f"the labels are {self.labels.dtype} and have no free id left (max {self._max_id}): "
                "convert them to a larger type"
            )
        return self._max_id + 1

    def plan_add(self, point: Sequence[float]) -> Edit:
        """The edit that :meth:`add` would make."""
        lead, yx = self.split_point(point)
        plane = self._plane(lead)
        areas = object_areas(plane)  # one pass for the typical size and the largest object
        edit = add_object(
            plane,
            self.evidence(lead),
            yx,
            self._next_id(),
            self.diameter(lead, areas),
            self.params,
            largest_area=float(areas.max(initial=0)),
            protected=self.edited_ids(),
        )
        return self._embed(lead, edit)

    def edited_ids(self) -> frozenset[int]:
        """Ids the session's edits made or changed: an add never trims them (the user shaped them)."""
        return frozenset(i for edit in self.history for i in edit.ids)

    def plan_split(self, points: Sequence[Sequence[float]]) -> Edit:
        """The edit that :meth:`split` would make (all points on one plane)."""
        if len(points) < 2:
            raise ProofreadError("split needs two or more points inside one object")
        placed = [self.split_point(p) for p in points]
        leads = {lead for lead, _ in placed}
        if len(leads) > 1:
            raise ProofreadError("split points must lie on one plane")
        (lead,) = leads
        edit = split_object(
            self._plane(lead),
            self.evidence(lead),
            [yx for _, yx in placed],
            self._next_id(len(points) - 1),
            self.diameter(lead),
        )
        return self._embed(lead, edit)

    def plan_merge(self, items: Sequence[Any], index: Sequence[int] | None = None) -> Edit:
        """The edit that :meth:`merge` would make: ``items`` are points or object ids."""
        items = list(items)
        if items and all(isinstance(i, int | np.integer) for i in items):
            lead = tuple(index) if index is not None else (0,) * len(self.lead_axes)
            if "T" in self.lead_axes and index is None:
                raise ProofreadError("give the frame (index=) to merge ids of a time-lapse")
            ids = [int(i) for i in items]
        else:
            placed = [self.split_point(p) for p in items]
            frames = {self._tz(lead)[0] for lead, _ in placed}
            if len(frames) > 1:
                raise ProofreadError("merge points must lie in one time point")
            lead = placed[0][0] if placed else (0,) * len(self.lead_axes)
            ids = [self.object_at(p) for p in items]
        volume = self.labels[self._volume_index(lead)]
        return self._embed(self._volume_index(lead), merge_objects(volume, ids))

    def plan_delete(self, point: Sequence[float]) -> Edit:
        """The edit that :meth:`delete` would make."""
        lead, yx = self.split_point(point)
        y, x = plane_point(self._plane(lead), yx)
        oid = int(self._plane(lead)[y, x])
        if oid == 0:
            raise ProofreadError(f"there is no object at ({y}, {x}) to delete")
        volume = self.labels[self._volume_index(lead)]
        return self._embed(self._volume_index(lead), delete_object(volume, oid))

    # -- the tools: apply --------------------------------------------------------------------
    def apply(self, edit: Edit) -> np.ndarray:
        """Write ``edit`` into the labels, remember it for :meth:`undo`; return the labels."""
        edit.apply(self.labels)
        self.record(edit)
        return self.labels

    def record(self, edit: Edit) -> None:
        """Remember an edit already written into the labels (napari's ``data_setitem`` wrote it)."""
        self.history.append(edit)
        self._max_id = max(self._max_id, *edit.ids, 0)

    def add(self, point: Sequence[float]) -> np.ndarray:
        """Add the object the probabilities support at ``point``; return the labels."""
        return self.apply(self.plan_add(point))

    def split(self, points: Sequence[Sequence[float]]) -> np.ndarray:
        """Cut the object under ``points`` into one part per point; return the labels."""
        return self.apply(self.plan_split(points))

    def merge(self, items: Sequence[Any], index: Sequence[int] | None = None) -> np.ndarray:
        """Make the objects under points (or with ids) ``items`` one; return the labels."""
        return self.apply(self.plan_merge(items, index))

    def delete(self, point: Sequence[float]) -> np.ndarray:
        """Remove the object under ``point`` (through z in a z-stack); return the labels."""
        return self.apply(self.plan_delete(point))

    def undo(self) -> np.ndarray:
        """Take back the last edit whole; return the labels."""
        if not self.history:
            raise ProofreadError("nothing to undo")
        self.history.pop().revert(self.labels)
        return self.labels

    def note_external_edit(self) -> None:
        """The labels changed outside the session (a brush stroke, an undo).

        The next new id is looked up again when one is needed (not now: a big stack's maximum
        takes a while).
        """
        self._stale = True
