"""Keep Python's full garbage collections out of a long worker run.

Measured with ``benchmarks/bench_gui_finetune.py``: the one GUI freeze left while training
(260-280 ms, right after Fine-tune was clicked) was a generation-2 collection. napari's
process holds millions of objects; the worker's start (copying the model, building samples)
allocates enough to trigger a full collection, and that holds the GIL while it walks them all,
so the GUI thread waits. ``gc.freeze()`` moves every existing object into a permanent
generation that collections skip, so those during the run only walk what the run allocated
(milliseconds). Nothing is lost: garbage among the frozen objects is collected after
``gc.unfreeze()``, when the run ends, exactly as it would have been without the run.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable

_lock = threading.Lock()
_holders = 0


def defer_full_collections() -> Callable[[], None]:
    """Freeze the current heap for a run; returns the (idempotent) release to call at its end.

    Runs may overlap (Segment and Fine-tune): the heap is unfrozen when the last one ends.
    """
    global _holders
    with _lock:
        if _holders == 0:
            gc.freeze()
        _holders += 1
    released = False

    def release() -> None:
        global _holders
        nonlocal released
        with _lock:
            if released:
                return
            released = True
            _holders -= 1
            if _holders == 0:
                gc.unfreeze()

    return release
