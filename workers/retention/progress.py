"""A terminal progress bar for ``wedsync retention run JOB`` (rich)."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Bar:
    """A :class:`workers.retention.Progress` drawn on stderr: items done of the total, and
    the running counts the job reports."""

    def __init__(self, job: str) -> None:
        self.job = job
        self.counts: dict[str, int] = {}
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[counts]}"),
            console=Console(stderr=True),
        )
        self._task = self._bar.add_task(job, total=None, unit="", counts="")

    def __enter__(self) -> Self:
        self._bar.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._bar.stop()

    def total(self, n: int, unit: str) -> None:
        self._bar.update(self._task, total=n, unit=unit)

    def advance(self, n: int = 1, **counts: int) -> None:
        for k, v in counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        shown = " ".join(f"{k}={v}" for k, v in self.counts.items())
        self._bar.update(self._task, advance=n, counts=shown)
