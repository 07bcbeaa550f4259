"""Stopping a background task for good.

``task.cancel()`` then ``await task`` waits forever when the task swallows the cancellation
and carries on — which Python 3.11's ``asyncio.wait_for`` does when the awaited future
completes in the same loop iteration as the cancel (CPython gh-86296; nats-py's requests go
through it). A gateway with 5 000 sockets once never exited on SIGTERM for that reason: its
consumer-lag loop lost the cancel in a ``consumer_info`` request and slept on.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self, TypeVar

T = TypeVar("T")

#: seconds between two cancellations of a task that did not end
AGAIN_AFTER = 1.0


async def stop(task: asyncio.Task[T]) -> None:
    """Cancel ``task`` until it has ended (again if it swallowed a cancellation); its own
    failure, if it failed, is raised here. Our own cancellation propagates."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=AGAIN_AFTER)
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


class Background:
    """An async context manager owning one background task: ``run()`` from ``async with``
    until its exit, then stopped by :func:`stop` (its failure, if any, raised there).
    Subclasses set ``name`` and implement ``run``; ``enabled()`` False starts nothing."""

    name: str = "background"

    _task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        raise NotImplementedError

    def enabled(self) -> bool:
        return True

    async def __aenter__(self) -> Self:
        if self.enabled():
            self._task = asyncio.create_task(self.run(), name=self.name)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            await stop(task)
