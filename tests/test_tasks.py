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
