"""`peers`: the same fan-out load against WedSync, python-socketio and Node.js socket.io.

    python -m bench peers                      # 250 rooms x 8 at 0.5 msg/s each, 30 s
    python -m bench peers --rate 1             # 2 000 messages/s in

One after the other in the same run, each target gets the same rooms, members, rate,
duration and load generator (bench/loadgen.py; only the wire protocol differs):

- ``wedsync``: the system under test, ``--gateways`` API processes (default 1, as the peers
  are one process each) + embedded NATS + PostgreSQL; a message is acked once durable in
  JetStream.
- ``python-socketio``: socketio.AsyncServer with rooms on uvicorn (bench/peers/
  socketio_server.py); acked once queued to the room, nothing stored.
- ``node``: the socket.io server from npm (bench/peers/node/server.js), installed into
  bench/peers/node/node_modules on first use; same semantics as python-socketio.

Reports each target's numbers and WedSync's throughput and p99 as ratios to each peer's
(throughput ratio > 1: WedSync carries more; p99 ratio < 1: WedSync is faster).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench import fanout
from bench.loadgen import PoolResult
from bench.report import Figure, write
from bench.stats import service_pids
from bench.system import Seat, populate, raise_fd_limit, running_system
from wedsync.embedded.process import free_port

NODE_DIR = Path(__file__).resolve().parent / "node"
TARGETS = ("wedsync", "python-socketio", "node")


def add_arguments(p: argparse.ArgumentParser) -> None:
    fanout.load_arguments(p)
    # the independent generator's shape (issue 19): 250 rooms x 8, 1 000 messages/s in
    p.set_defaults(gateways=1, rooms=250, members=8, rate=0.5, duration=30.0)
    p.add_argument(
        "--targets", default=",".join(TARGETS), help=f"comma separated, of {', '.join(TARGETS)}"
    )


class Skipped(Exception):
    """A peer that cannot run on this machine (no node or npm); the reason is reported."""


async def _wait_port(port: int, proc: asyncio.subprocess.Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.returncode is not None:
            raise RuntimeError(f"peer server exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"peer server not listening on {port}") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


@contextlib.asynccontextmanager
async def _server(cmd: list[str], port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, preexec_fn=raise_fd_limit, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        await _wait_port(port, proc, 60)
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def npm_install() -> str:
    """``npm install`` into bench/peers/node once; the node binary to run the server with."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise Skipped("node and npm are not on PATH")
    if not (NODE_DIR / "node_modules" / "socket.io" / "package.json").exists():
        print("npm install (socket.io) into bench/peers/node ...", file=sys.stderr, flush=True)
        proc = await asyncio.create_subprocess_exec(
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            cwd=NODE_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), 300)
        except TimeoutError:
            proc.kill()
            raise Skipped("npm install did not finish in 300 s (registry unreachable?)") from None
        if proc.returncode != 0:
            raise Skipped(f"npm install failed: {output.decode(errors='replace')[-500:]}")
    return node


def peer_seats(url: str, args: argparse.Namespace) -> list[Seat]:
    """socket.io has no accounts: a seat is a room name and a socket."""
    return [
        Seat(url, f"room-{r}", f"u{r}-{m}", "")
        for r in range(args.rooms)
        for m in range(args.members)
    ]


async def _run_target(name: str, args: argparse.Namespace) -> tuple[dict[str, Any], PoolResult]:
    label = f"peers {name}"
    if name == "wedsync":
        async with running_system(args.gateways) as system:
            seats = await populate(system, args.rooms, args.members, fanout.ROLES)
            pids = {"server": [p.pid for p in system.procs], **service_pids()}
            return await fanout.drive(
                label, "wedsync", seats, args, pids, gc_pauses=system.gc_pauses
            )
    port = free_port()
    if name == "python-socketio":
        cmd = [sys.executable, "-m", "bench.peers.socketio_server", str(port)]
    elif name == "node":
        cmd = [await npm_install(), str(NODE_DIR / "server.js"), str(port)]
    else:
        raise SystemExit(f"unknown target {name!r}: one of {', '.join(TARGETS)}")
    async with _server(cmd, port) as proc:
        seats = peer_seats(f"http://127.0.0.1:{port}", args)
        return await fanout.drive(label, "socketio", seats, args, {"server": [proc.pid]})


def ratios(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float | None]:
    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 3) if b else None

    return {
        "accepted_per_s": ratio(ours["accepted_per_s"], theirs["accepted_per_s"]),
        "deliveries_per_s": ratio(ours["deliveries_per_s"], theirs["deliveries_per_s"]),
        "p99": ratio(ours["latency_us"]["p99_us"], theirs["latency_us"]["p99_us"]),
        "p50": ratio(ours["latency_us"]["p50_us"], theirs["latency_us"]["p50_us"]),
    }


async def run(args: argparse.Namespace) -> Path:
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    results: dict[str, dict[str, Any]] = {}
    runs: dict[str, PoolResult] = {}
    skipped: dict[str, str] = {}
    for name in names:
        try:
            results[name], runs[name] = await _run_target(name, args)
        except Skipped as exc:
            print(f"peers: {name} skipped: {exc}", file=sys.stderr, flush=True)
            skipped[name] = str(exc)
    versions = {"python-socketio": _version("python-socketio"), "socket.io (node)": _node_version()}
    out: dict[str, Any] = {
        "scenario": "peers",
        "config": fanout.config(args),
        "versions": versions,
        "targets": results,
        "skipped": skipped,
        "ratios": {
            name: ratios(results["wedsync"], r)
            for name, r in results.items()
            if name != "wedsync" and "wedsync" in results
        },
    }
    figure = Figure(
        f"peers: {args.rooms} rooms x {args.members}, {args.rate:g} msg/s per member",
        latency={name: r.delivery for name, r in runs.items()},
        timeline={
            f"{name} delivered": [float(v) for v in r.timeline.get("delivered", [])]
            for name, r in runs.items()
        },
        timeline_xlabel="seconds since the target's start",
    )
    return write(args.out, "peers", out, figure)


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _node_version() -> str | None:
    import json

    manifest = NODE_DIR / "node_modules" / "socket.io" / "package.json"
    return str(json.loads(manifest.read_text())["version"]) if manifest.exists() else None
