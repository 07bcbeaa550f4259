"""Measure `wedsync dev` cold start: process exec to the "ready" line, fresh and warm data dir.

python bench/cold_start.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one(data_dir: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEDSYNC_")}
    env |= {"WEDSYNC_DATA_DIR": str(data_dir)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wedsync.cli", "dev", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "ready at" in line:
            elapsed = time.perf_counter() - t0
            break
    else:
        raise SystemExit(f"wedsync dev exited with {proc.wait()}")
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    fresh, warm = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            fresh.append(one(Path(tmp) / "data"))
            warm.append(one(Path(tmp) / "data"))
    for name, xs in (("fresh data dir (initdb)", fresh), ("existing data dir", warm)):
        print(f"{name}: median {statistics.median(xs):.2f}s  runs {[round(x, 2) for x in xs]}")


if __name__ == "__main__":
    main()
