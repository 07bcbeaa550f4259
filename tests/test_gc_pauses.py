"""The API process's garbage-collector policy (runtime/gc_pauses.py): what is alive is frozen
out of every collection, and what died frozen is reclaimed at the next reclaim."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from collections.abc import Iterator

import pytest

from runtime import gc_pauses


class Node:
    """An object in a reference cycle: only the cycle collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()  # other tests see a process as they expect it


async def test_what_is_alive_is_frozen_and_a_cycle_that_died_frozen_is_reclaimed() -> None:
    async with gc_pauses.Freezer(freeze_every=0.05, reclaim_every=0) as freezer:
        node = Node()
        alive = weakref.ref(node)
        async with asyncio.timeout(10):
            await freezer.next_round()  # it survived a young collection: frozen
        del node
        gc.collect()
        assert alive() is not None, "a frozen object is out of reach of the collector"
        assert gc.get_freeze_count() > 0
    async with gc_pauses.Freezer(freeze_every=0.05, reclaim_every=0.05) as freezer:
        async with asyncio.timeout(10):
            await freezer.next_round()  # the reclaim: unfrozen, collected, frozen again
        assert alive() is None


async def test_a_slow_collection_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(gc_pauses, "SLOW", 0.0)
    gc_pauses.watch()
    gc_pauses.watch()  # idempotent
    assert gc.callbacks.count(gc_pauses._callback) == 1
    try:
        with caplog.at_level(logging.WARNING, logger="runtime.gc_pauses"):
            gc.collect()
        assert "garbage collection of generation 2 stopped the process for" in caplog.text
    finally:
        gc.callbacks.remove(gc_pauses._callback)
