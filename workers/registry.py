"""The workers this build ships, by the name `wedsync worker NAME` takes.

Each entry builds the worker's consumer spec and handler from the settings; `wedsync dev`
starts one process for each. Later issues register conflicts, notifications, presence and
retention here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from config.settings import Settings
from streams.definitions import ConsumerSpec
from workers.runner import Handler


@dataclass(frozen=True, slots=True)
class WorkerDefinition:
    name: str
    consumer: ConsumerSpec
    handler: Handler


WORKERS: dict[str, Callable[[Settings], WorkerDefinition]] = {}
