"""runtime/tasks.py: a background task that swallows a cancellation still stops."""

from __future__ import annotations

import asyncio

import pytest

from runtime import tasks


async def test_a_task_that_swallows_its_cancellation_is_stopped_all_the_same() -> None:
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        # as Python 3.11's wait_for does when its future completes with the cancel
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()
        await asyncio.Event().wait()  # and carries on as if nothing happened

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)  # it started
    async with asyncio.timeout(10):
        await tasks.stop(task)
    assert swallowed.is_set() and task.cancelled()


async def test_a_task_that_failed_raises_its_failure() -> None:
    async def failing() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(failing())
    await asyncio.wait({task})
    with pytest.raises(RuntimeError, match="boom"):
        await tasks.stop(task)


async def test_a_background_service_runs_inside_its_block_only() -> None:
    class Ticker(tasks.Background):
        name = "ticker"

        def __init__(self) -> None:
            self.ticks = 0
            self.ticked = asyncio.Event()

        async def run(self) -> None:
            while True:
                self.ticks += 1
                self.ticked.set()
                await asyncio.sleep(0)

    ticker = Ticker()
    async with asyncio.timeout(10):
        async with ticker:
            await ticker.ticked.wait()
        after = ticker.ticks
        for _ in range(5):
            await asyncio.sleep(0)
    assert after > 0 and ticker.ticks == after  # nothing ticks after the block


async def test_a_disabled_background_service_starts_nothing() -> None:
    class Off(tasks.Background):
        async def run(self) -> None:
            raise AssertionError("must not run")

        def enabled(self) -> bool:
            return False

    async with Off():
        await asyncio.sleep(0)
