"""Running the core's generators to their end.

All long work in the core is a generator (one yield per tile batch or training step, the
result as its return value) so that napari workers can drive it; plain functions, the CLI
and helpers drive the same generators to their end with :func:`drain`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

Y = TypeVar("Y")
R = TypeVar("R")


def drain(gen: Generator[Y, Any, R], on_yield: Callable[[Y], Any] | None = None) -> R:
    """Run ``gen`` to its end and return its return value, passing each yield to ``on_yield``.

    The generator is closed however this ends (an exception in ``on_yield``, Ctrl-C), so its
    clean-up (``finally`` blocks: temporary stores, torch threads) runs at once.
    """
    try:
        while True:
            item = next(gen)
            if on_yield is not None:
                on_yield(item)
    except StopIteration as stop:
        return stop.value
    finally:
        gen.close()
