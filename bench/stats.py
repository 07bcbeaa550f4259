"""Measurements shared by every scenario: latency histograms, per-second counts, CPU/RSS.

Latencies are recorded in microseconds (HdrHistogram, 3 significant digits, up to a
minute). Per-second counts are bucketed by whole seconds since one wall-clock epoch that
the main process hands to every load process, so buckets of different processes add up.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field

import psutil
from hdrh.histogram import HdrHistogram

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, 60_000_000, 3)  # microseconds, up to a minute


def record_seconds(hist: HdrHistogram, seconds: float) -> None:
    # clamp: a clock step or a value beyond the range must not abort a run
    hist.record_value(min(60_000_000, max(1, int(seconds * 1e6))))


def merged(encoded: list[bytes]) -> HdrHistogram:
    hist = new_histogram()
    for blob in encoded:
        hist.decode_and_add(blob)
    return hist


def percentiles_us(hist: HdrHistogram) -> dict[str, float]:
    """p50/p90/p99/p99.9/max/mean in microseconds, and the number of samples."""
    out: dict[str, float] = {
        "p" + f"{p:g}".replace(".", "_") + "_us": float(hist.get_value_at_percentile(p))
        for p in PERCENTILES
    }
    out["max_us"] = float(hist.get_max_value())
    out["mean_us"] = round(hist.get_mean_value(), 1)
    out["count"] = hist.get_total_count()
    return out


@dataclass
class Timeline:
    """Counts per whole second since ``epoch`` (wall clock), one series per name."""

    epoch: float
    series: dict[str, list[int]] = field(default_factory=dict)

    def add(self, name: str, n: int = 1, now: float | None = None) -> None:
        second = max(0, int((time.time() if now is None else now) - self.epoch))
        counts = self.series.setdefault(name, [])
        if len(counts) <= second:
            counts.extend([0] * (second + 1 - len(counts)))
        counts[second] += n

    def merge(self, other: dict[str, list[int]]) -> None:
        for name, counts in other.items():
            mine = self.series.setdefault(name, [])
            if len(mine) < len(counts):
                mine.extend([0] * (len(counts) - len(mine)))
            for i, n in enumerate(counts):
                mine[i] += n


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (uvicorn workers, node children)."""
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for proc in process_tree(pid):
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
    return total


def service_pids() -> dict[str, list[int]]:
    """Embedded nats-server and PostgreSQL processes started by this process."""
    groups: dict[str, list[int]] = {"nats-server": [], "postgres": []}
    for child in psutil.Process(os.getpid()).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            name = child.name()
            if "nats-server" in name:
                groups["nats-server"].append(child.pid)
            elif "postgres" in name:
                groups["postgres"].append(child.pid)
    return groups


class CpuMeter:
    """CPU used by named groups of processes between ``start`` and ``stop``, in percent of
    one core (200 % is both cores of this machine): says which process limits a run."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self._start: dict[int, float] = {}
        self._t0 = 0.0

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        times = proc.cpu_times()
        return float(times.user + times.system)

    def _snapshot(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for pids in self.groups.values():
            for pid in pids:
                for proc in process_tree(pid):
                    with contextlib.suppress(psutil.Error):
                        out[proc.pid] = self._cpu(proc)
        return out

    def start(self) -> None:
        self._t0, self._start = time.perf_counter(), self._snapshot()

    def stop(self) -> dict[str, float]:
        elapsed = max(1e-9, time.perf_counter() - self._t0)
        now = self._snapshot()
        result: dict[str, float] = {}
        for name, pids in self.groups.items():
            used = 0.0
            for pid in pids:
                for proc in process_tree(pid):
                    if proc.pid in now:
                        used += now[proc.pid] - self._start.get(proc.pid, 0.0)
            result[name] = round(100 * used / elapsed, 1)
        return result
