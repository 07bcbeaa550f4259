"""Result files: one JSON document and one PNG per run, side by side in the output dir.

The PNG has two panels: the latency distribution as a percentile plot straight from the
HdrHistogram (x: percentile on a log scale of 1/(1-q), so the tail is visible; y: latency,
log scale) and throughput over time (per-second counts).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from hdrh.histogram import HdrHistogram

DEFAULT_OUT = Path("bench/results")


@dataclass
class Figure:
    title: str
    latency: dict[str, HdrHistogram] = field(default_factory=dict)  # label -> microseconds
    timeline: dict[str, list[float]] = field(default_factory=dict)  # label -> value per x
    latency_title: str = "latency distribution"
    timeline_title: str = "throughput over time"
    timeline_xlabel: str = "seconds since start"
    timeline_ylabel: str = "per second"


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        # others' work on the same 2 cores skews every number: say how busy it was
        "loadavg_1m_5m": [round(x, 2) for x in os.getloadavg()[:2]],
    }


def _percentile_curve(hist: HdrHistogram) -> tuple[list[float], list[float]]:
    """(x, latency ms) with x = log10(1 / (1 - q)): 0 is the median's left, 2 is p99."""
    count = hist.get_total_count()
    xs, ys = [], []
    # no point resolving percentiles finer than one sample
    top = math.log10(max(count, 10))
    steps = 200
    for i in range(steps + 1):
        x = top * i / steps
        q = 100.0 * (1.0 - 10.0**-x)
        xs.append(x)
        ys.append(max(hist.get_value_at_percentile(q), 1) / 1000)
    return xs, ys


def plot(figure: Figure, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a benchmark machine
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    fig.suptitle(figure.title)
    ticks = [0.0]
    for label, hist in figure.latency.items():
        if hist.get_total_count() == 0:
            continue
        xs, ys = _percentile_curve(hist)
        left.plot(xs, ys, label=label)
        ticks = max(ticks, [t for t in (0.0, 1.0, 2.0, 3.0, 4.0, 5.0) if t <= xs[-1]], key=len)
    left.set_xticks(ticks, [f"{100 * (1 - 10**-t):g}%" for t in ticks])
    left.set_yscale("log")
    left.yaxis.set_major_formatter(ScalarFormatter())  # 2, 5, 10 ms rather than 10^0.3
    left.set_xlabel("percentile")
    left.set_ylabel("ms")
    left.set_title(figure.latency_title)
    left.grid(True, which="both", alpha=0.3)
    if figure.latency:
        left.legend(fontsize="small")
    for label, values in figure.timeline.items():
        right.plot(range(len(values)), values, label=label, marker="." if len(values) < 30 else "")
    right.set_xlabel(figure.timeline_xlabel)
    right.set_ylabel(figure.timeline_ylabel)
    right.set_title(figure.timeline_title)
    right.grid(True, alpha=0.3)
    if figure.timeline:
        right.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(out: Path, name: str, result: dict[str, Any], figure: Figure) -> Path:
    """``out/NAME.json`` and ``out/NAME.png``; the JSON names the PNG. Returns the JSON."""
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{name}.png"
    plot(figure, png)
    document = {**result, "machine": machine(), "png": str(png)}
    path = out / f"{name}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {path} and {png}", file=sys.stderr)
    return path
