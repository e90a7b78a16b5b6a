"""Where the GUI-thread time of a first Segment result's labels layer goes, and what avoids it.

    xvfb-run -a .venv/bin/python benchmarks/profile_add_labels.py [--size 2048] [--repeats 3]
        [--variants add_labels,overlays_on_demand,...] [--top 25] [--no-profile]

Every measurement runs in a fresh process, since the first Labels layer of a session pays
one-time costs (imports, vispy's dash-pattern atlas, shader code), with a shown viewer under
Xvfb holding a SIZE x SIZE synthetic nuclei image and the Segment widget docked, as in
``bench_gui_responsiveness.py``. The labels are that sample's nuclei (960 at 2048x2048) as
uint16, the dtype Segment writes for fewer than 65535 objects.

Prints, first, the split of one first ``viewer.add_labels`` (and of one with the tool overlays
hidden): ``Labels(...)`` construction, then ``add_layer``'s event callbacks over 1 ms (the
vispy layer, each overlay's visual, the Qt layer controls, ...), the first draw (paintGL) and
any full (generation 2) garbage collection; cProfile's top cumulative napari and vispy entries
of a first add and of a second one in the same process. Then, for each way of creating the
layer (``--variants``, names as listed in ``VARIANTS``), the worst
lateness of a 10 ms QTimer on the GUI thread (the longest blocked event-loop tick; a range
over the repeats), the steps' own times, and checks that the result is the same: the layer's
name, scale and data, a screenshot identical to plain ``add_labels``, the polygon overlay
working once its mode is chosen, and an edit that one undo restores.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import io
import itertools
import json
import os
import pstats
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

VARIANTS = {
    "add_labels": "viewer.add_labels(labels) in one handler (what Segment did)",
    "worker_construct": "Labels(...) built in a worker thread; only viewer.add_layer on the GUI thread",
    "overlays_deferred": "add_layer with the polygon and brush overlays hidden; each shown in a later tick",
    "overlays_on_demand": "overlays hidden until their mode enables them (what Segment does now)",
    "empty_ahead": "an empty 1x1 labels layer made ahead (at the click); layer.data = labels on the result",
    "uint32": "add_labels of the same labels as uint32 (texture converted on the CPU)",
    "napari_async": "add_labels with NAPARI_ASYNC=1 (slicing in napari's thread pool)",
    "on_demand_worker": "overlays_on_demand with Labels(...) built in a worker thread",
    "on_demand_tiny_first": "overlays_on_demand adding a 1x1 layer; layer.data = labels in the next tick",
    "on_demand_dash_warm": "overlays_on_demand, vispy's dash-pattern atlas built ahead in a thread",
    "on_demand_shown_later": "overlays_on_demand, the layer added with visible=False, shown a tick later",
}
OVERLAYS = ("polygon", "brush_stroke")  # the Labels layer's tool overlays, visible from the start
STEP_GAP_MS = 60  # between the steps of a variant: the 10 ms probe ticks in between


def _sample(size: int) -> tuple[np.ndarray, np.ndarray]:
    from napari_unet.samples.synthetic import nuclei_2d

    sample = nuclei_2d(shape=(size, size), n_nuclei=int(60 * (size / 512) ** 2), seed=0)
    return sample.image, np.asarray(sample.labels).astype(np.uint16)


class Probe:
    """A 10 ms timer's ticks, paintGL calls and full garbage collections on the GUI thread."""

    def __init__(self, viewer: Any) -> None:
        from qtpy.QtCore import Qt, QTimer

        self.ticks: list[float] = []
        self.paints: list[tuple[float, float]] = []
        self.gcs: list[tuple[float, float]] = []
        self._gc_start = 0.0
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        native = viewer.window._qt_viewer.canvas._scene_canvas.native
        cls = next(c for c in type(native).__mro__ if "paintGL" in c.__dict__)
        paint = cls.paintGL

        def timed_paint(this: Any) -> None:
            t0 = time.perf_counter()
            paint(this)
            self.paints.append((t0, time.perf_counter() - t0))

        cls.paintGL = timed_paint
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        elif info["generation"] == 2:
            self.gcs.append((self._gc_start, time.perf_counter() - self._gc_start))

    def worst_tick(self, start: float, end: float) -> float:
        inside = [t for t in self.ticks if start <= t <= end]
        return max(((b - a) * 1000 - 10.0 for a, b in itertools.pairwise(inside)), default=0.0)

    def within(self, events: list[tuple[float, float]], start: float, end: float) -> list[float]:
        return [round(d * 1000, 1) for t, d in events if start <= t <= end]


def _make_viewer(size: int) -> tuple[Any, Any, np.ndarray]:
    import napari
    from qtpy.QtWidgets import QApplication

    image, labels = _sample(size)
    viewer = napari.Viewer(show=True)
    viewer.add_image(image, name="bench")
    viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    app = QApplication.instance()
    for _ in range(30):  # let the window settle and draw
        app.processEvents()
        time.sleep(0.02)
    return viewer, app, labels


def _hide_overlays(layer: Any) -> None:
    for key in OVERLAYS:
        layer._overlays[key].visible = False


def _build_in_thread(make: Callable[[], Any]) -> Callable[[], Any]:
    """Start building off the GUI thread now; the returned call waits for it (the worker's share)."""
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.setdefault("layer", make()))
    thread.start()
    return lambda: (thread.join(), box["layer"])[1]


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One variant in this (fresh) process: the steps, then the checks; returns the figures."""
    from napari.layers import Labels
    from qtpy.QtCore import QEventLoop, QTimer

    from napari_unet._widgets._labels_writer import _build_overlays_when_enabled

    viewer, app, labels = _make_viewer(args.size)
    data = labels.astype(np.uint32) if args.child == "uint32" else labels
    kw: dict[str, Any] = {"name": "bench labels", "scale": (1.0, 1.0)}
    probe = Probe(viewer)
    box: dict[str, Any] = {}
    variant = args.child

    def add_labels() -> None:
        box["layer"] = viewer.add_labels(data, **kw)

    def add_hidden(make: Callable[[], Any], on_demand: bool = True) -> Callable[[], None]:
        """Add the layer with its tool overlays hidden: until their mode enables them, as
        Segment's LabelsWriter does, or (``on_demand=False``) until a later step shows them."""

        def step() -> None:
            layer = make()
            if on_demand:
                _build_overlays_when_enabled(layer)
            else:
                _hide_overlays(layer)
            viewer.add_layer(layer)
            box["layer"] = layer

        return step

    steps: list[tuple[str, Callable[[], None]]]
    if variant in ("add_labels", "uint32", "napari_async"):
        steps = [("add_labels", add_labels)]
    elif variant == "worker_construct":
        wait = _build_in_thread(lambda: Labels(data, **kw))
        time.sleep(0.5)
        steps = [("add_layer", lambda: box.setdefault("layer", viewer.add_layer(wait())))]
    elif variant == "overlays_deferred":
        steps = [("add_layer, overlays hidden", add_hidden(lambda: Labels(data, **kw), on_demand=False))]
        steps += [
            (f"show {key}", lambda key=key: setattr(box["layer"]._overlays[key], "visible", True))
            for key in OVERLAYS
        ]
    elif variant in ("overlays_on_demand", "on_demand_worker", "on_demand_dash_warm"):
        make = lambda: Labels(data, **kw)  # noqa: E731
        if variant == "on_demand_worker":
            make = _build_in_thread(make)
            time.sleep(0.5)
        if variant == "on_demand_dash_warm":
            from vispy.visuals.line.dash_atlas import DashAtlas

            threading.Thread(target=DashAtlas).start()
            time.sleep(0.5)
        steps = [("add_layer, overlays hidden", add_hidden(make))]
    elif variant == "on_demand_tiny_first":
        steps = [
            (
                "add 1x1 layer, overlays hidden",
                add_hidden(lambda: Labels(np.zeros((1, 1), data.dtype), **kw)),
            ),
            ("layer.data = labels", lambda: setattr(box["layer"], "data", data)),
        ]
    elif variant == "on_demand_shown_later":
        steps = [
            ("add invisible layer, overlays hidden", add_hidden(lambda: Labels(data, visible=False, **kw))),
            ("layer.visible = True", lambda: setattr(box["layer"], "visible", True)),
        ]
    elif variant == "empty_ahead":
        steps = [
            (
                "add empty 1x1 layer (ahead)",
                lambda: box.setdefault("layer", viewer.add_labels(np.zeros((1, 1), data.dtype), **kw)),
            ),
            ("layer.data = labels", lambda: setattr(box["layer"], "data", data)),
        ]
    else:
        raise SystemExit(f"unknown variant {variant}")

    times: list[tuple[str, float, float]] = []
    loop = QEventLoop()

    def run(k: int) -> None:
        if k == len(steps):
            QTimer.singleShot(1000, loop.quit)
            return
        name, fn = steps[k]
        t0 = time.perf_counter()
        fn()
        times.append((name, t0, time.perf_counter() - t0))
        QTimer.singleShot(STEP_GAP_MS, lambda: run(k + 1))

    probe.timer.start()
    t_start = time.perf_counter()
    QTimer.singleShot(300, lambda: run(0))
    loop.exec()
    t_first = times[0][1]
    t_end = time.perf_counter()
    out: dict[str, Any] = {
        "variant": variant,
        "idle_ms": probe.worst_tick(t_start + 0.05, t_first),
        "worst_ms": probe.worst_tick(t_first - 0.011, t_end),
        "steps": [(n, round(d * 1000, 1)) for n, _, d in times],
        "paints_ms": [p for p in probe.within(probe.paints, t_first, t_end) if p > 2],
        "gc2_ms": probe.within(probe.gcs, t_first, t_end),
        "load": f"{os.getloadavg()[0]:.1f}",
    }
    layer = box["layer"]
    for _ in range(10):
        app.processEvents()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    out["screenshot_md5"] = hashlib.md5(np.ascontiguousarray(shot).tobytes()).hexdigest()
    out["same_data"] = bool(np.array_equal(np.asarray(layer.data), data))
    out["name_scale"] = [layer.name, [float(s) for s in layer.scale]]
    # the polygon overlay: its mode chosen later by the user; how long that takes
    t0 = time.perf_counter()
    layer.mode = "polygon"
    app.processEvents()
    out["first_polygon_mode_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    visuals = viewer.window._qt_viewer.canvas._layer_overlay_to_visual.get(layer, {})
    out["polygon_overlay_ready"] = any(type(o).__name__ == "LabelsPolygonOverlay" for o in visuals)
    layer.mode = "paint"
    app.processEvents()
    out["brush_overlay_ready"] = any(type(o).__name__ == "LabelsBrushStrokeOverlay" for o in visuals)
    layer.mode = "pan_zoom"
    # one edit through the API the brush uses, then one undo
    before = np.asarray(layer.data).copy()
    layer.paint((10, 10), 7, refresh=True)
    edited = not np.array_equal(np.asarray(layer.data), before)
    layer.undo()
    out["undo_ok"] = bool(edited and np.array_equal(np.asarray(layer.data), before))
    viewer.close()
    return out


def profile(args: argparse.Namespace, hide_overlays: bool = False) -> None:
    """Split one first add_labels (in this fresh process) into its parts, then cProfile another."""
    import napari._qt.qt_viewer as qt_viewer_mod
    import napari._vispy.canvas as canvas_mod
    from napari._vispy.layers.labels import VispyLabelsLayer
    from napari.layers import Labels
    from napari.utils.events.event import EventEmitter

    viewer, app, labels = _make_viewer(args.size)
    probe = Probe(viewer)
    parts: list[tuple[float, int, str, float]] = []  # start, nesting, what, seconds
    depth = [0]

    def timed(name: str | Callable[..., str], fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            depth[0] += 1
            try:
                return fn(*a, **k)
            finally:
                depth[0] -= 1
                label = name(*a, **k) if callable(name) else name
                parts.append((t0, depth[0], label, time.perf_counter() - t0))

        return wrapper

    def callback_name(emitter: Any, cb: Any, event: Any) -> str:
        if isinstance(cb, tuple):  # napari keeps (weakref to the object, method name)
            obj = cb[0]() if callable(cb[0]) else cb[0]
            cb_name = f"{type(obj).__name__}.{cb[1]}"
        else:
            cb_name = getattr(cb, "__qualname__", repr(cb))
        return f"{type(emitter.source).__name__}.{getattr(event, 'type', '?')} -> {cb_name}"

    invoke = EventEmitter._invoke_callback
    events_depth = [0]

    def timed_invoke(emitter: Any, cb: Any, event: Any) -> Any:
        events_deep = events_depth[0]
        events_depth[0] += 1
        depth[0] += 1
        t0 = time.perf_counter()
        try:
            return invoke(emitter, cb, event)
        finally:
            depth[0] -= 1
            events_depth[0] -= 1
            if events_deep == 0 and time.perf_counter() - t0 > 0.001:  # a callback of add_layer's own events
                name = f"event {callback_name(emitter, cb, event)}"
                parts.append((t0, depth[0], name, time.perf_counter() - t0))

    qt_viewer_mod.create_vispy_layer = timed(
        "vispy layer (LabelNode + VolumeNode)", qt_viewer_mod.create_vispy_layer
    )
    canvas_mod.create_vispy_overlay = timed(
        lambda **k: f"overlay visual: {type(k['overlay']).__name__}", canvas_mod.create_vispy_overlay
    )
    VispyLabelsLayer._on_colormap_change = timed("colormap texture", VispyLabelsLayer._on_colormap_change)
    VispyLabelsLayer._on_data_change = timed("data -> texture", VispyLabelsLayer._on_data_change)

    def first_draw() -> float:
        n = len(probe.paints)
        t0 = time.perf_counter()
        while len(probe.paints) == n and time.perf_counter() - t0 < 2:
            app.processEvents()
        return time.perf_counter() - t0

    def make(name: str) -> Any:
        layer = Labels(labels, name=name, scale=(1.0, 1.0))
        if hide_overlays:
            _hide_overlays(layer)
        return layer

    t0 = time.perf_counter()
    layer = make("bench labels")
    t1 = time.perf_counter()
    EventEmitter._invoke_callback = timed_invoke  # type: ignore[method-assign]
    viewer.add_layer(layer)
    EventEmitter._invoke_callback = invoke  # type: ignore[method-assign]
    t2 = time.perf_counter()
    wait = first_draw()
    t3 = time.perf_counter()
    how = "tool overlays hidden" if hide_overlays else "as viewer.add_labels makes it"
    print(f"\n== one first Labels layer ({how}): {args.size}x{args.size} uint16, {labels.max()} objects")
    print(f"Labels(...) construction          {1000 * (t1 - t0):7.1f} ms")
    print(f"viewer.add_layer                  {1000 * (t2 - t1):7.1f} ms; its events' callbacks over 1 ms:")
    for _, deep, name, d in sorted(parts):
        print(f"  {1000 * d:7.1f} ms  {'  ' * deep}{name}")
    paints = ", ".join(f"{d * 1000:.1f}" for t, d in probe.paints if t >= t2)
    print(f"until the first draw              {1000 * wait:7.1f} ms (paintGL {paints} ms)")
    for t, d in probe.gcs:
        if t0 <= t <= t3:
            print(f"full garbage collection inside: {1000 * d:.1f} ms (at +{1000 * (t - t0):.0f} ms)")

    # a second layer in the same process: what every add costs, without the one-time part
    pr = cProfile.Profile()
    second = make("bench labels [2]")
    pr.enable()
    viewer.add_layer(second)
    first_draw()
    pr.disable()
    _print_profile(pr, args.top, f"a second add_layer + draw in the same process ({how})")
    viewer.close()


def profile_first(args: argparse.Namespace) -> None:
    """cProfile of the first Labels(...) + add_layer + draw in a fresh process."""
    from napari.layers import Labels

    viewer, app, labels = _make_viewer(args.size)
    pr = cProfile.Profile()
    pr.enable()
    layer = Labels(labels, name="bench labels", scale=(1.0, 1.0))
    viewer.add_layer(layer)
    for _ in range(5):
        app.processEvents()
    viewer.window._qt_viewer.canvas._scene_canvas.native.repaint()
    pr.disable()
    _print_profile(pr, args.top, "first Labels(...) + add_layer + draw in a fresh process")
    viewer.close()


_INTERESTING = ("napari/", "vispy/", "weakref", "dash_atlas", "importlib", "paintGL", "processEvents")
_BORING = ("napari/utils/events/", "_collections_abc", "frozen.py", "vispy/util/event.py")


def _print_profile(pr: cProfile.Profile, top: int, title: str) -> None:
    stream = io.StringIO()
    stats = pstats.Stats(pr, stream=stream)
    rows = []
    for (path, line, fn), (_, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{path}:{line}({fn})"
        if any(s in where for s in _INTERESTING) and not any(s in where for s in _BORING):
            short = where.split("site-packages/")[-1]
            rows.append((ct, tt, nc, short))
    rows.sort(reverse=True)
    print(f"\n== cProfile, {title}: top {top} cumulative (napari/vispy; event plumbing left out)")
    print(f"{'cum ms':>8s} {'own ms':>8s} {'calls':>6s}  function")
    for ct, tt, nc, short in rows[:top]:
        print(f"{1000 * ct:8.1f} {1000 * tt:8.1f} {nc:6d}  {short[:120]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--top", type=int, default=25, help="cProfile rows to print")
    ap.add_argument("--no-profile", action="store_true", help="only the variants")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child in ("profile", "profile_hidden"):
        profile(args, hide_overlays=args.child == "profile_hidden")
        return 0
    if args.child == "profile_first":
        profile_first(args)
        return 0
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return 0

    def spawn(name: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, __file__, "--child", name, "--size", str(args.size), "--top", str(args.top)]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)

    if not args.no_profile:
        for name in ("profile", "profile_first", "profile_hidden"):
            proc = spawn(name)
            print(proc.stdout.rstrip() or proc.stderr[-3000:])
    print(
        f"\n== worst GUI tick per variant ({args.repeats} fresh processes each, the variants in turn "
        "so that a change in the machine's load hits them alike; 10 ms timer lateness)"
    )
    variants = args.variants.split(",")
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for variant in variants:
            env = dict(os.environ, NAPARI_ASYNC="1") if variant == "napari_async" else None
            proc = spawn(variant, env)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(f"{variant}: failed\n{proc.stderr[-2000:]}")
                continue
            results[variant].append(json.loads(line[len("RESULT ") :]))
    reference = None
    for variant, runs in results.items():
        if not runs:
            continue
        worst = sorted(r["worst_ms"] for r in runs)
        last = runs[-1]
        reference = reference or last["screenshot_md5"]
        print(f"\n{variant}: {VARIANTS[variant]}")
        print(
            f"  worst tick {worst[0]:.0f}-{worst[-1]:.0f} ms ({', '.join(f'{w:.0f}' for w in worst)}); "
            f"idle {max(r['idle_ms'] for r in runs):.0f} ms; load avg {', '.join(r['load'] for r in runs)}"
        )
        for r in runs:
            steps = "; ".join(f"{n} {d:.0f} ms" for n, d in r["steps"])
            print(f"  steps: {steps} | paints {r['paints_ms']} ms | full GCs {r['gc2_ms']} ms")
        print(
            f"  same: data {last['same_data']}, name/scale {last['name_scale']}, screenshot "
            f"{'== first variant' if last['screenshot_md5'] == reference else 'DIFFERS'}, "
            f"polygon overlay {last['polygon_overlay_ready']}, brush overlay {last['brush_overlay_ready']}, "
            f"undo {last['undo_ok']}; first switch to polygon mode {last['first_polygon_mode_ms']:.0f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
