"""drain: how plain functions, the CLI and helpers run the core's generators."""

from __future__ import annotations

import pytest

from napari_unet.common.generators import drain


def _work(log: list[str]):
    try:
        yield 1
        yield 2
        return "result"
    finally:
        log.append("cleaned up")


def test_drain_returns_the_result_and_passes_each_yield_on() -> None:
    log: list[str] = []
    seen: list[int] = []
    assert drain(_work(log), seen.append) == "result"
    assert seen == [1, 2] and log == ["cleaned up"]


def test_drain_closes_the_generator_when_the_callback_fails() -> None:
    log: list[str] = []

    def fail(item: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        drain(_work(log), fail)
    assert log == ["cleaned up"], "the generator's clean-up ran at once"
