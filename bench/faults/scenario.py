"""`python -m bench faults`: the operator's outage drill (issue 17) — NATS and PostgreSQL
taken away while a wedding is in use; lost / duplicated / recovered-in per outage.

By default it starts its own system (bench/faults/system.py: own nats-server and
PostgreSQL, two `wedsync api`, the conflicts and notifications workers) and runs every
acceptance outage on it, one fresh wedding each, then the PostgreSQL outage longer than
the stream duplicate window on a second system started with a short window, then issue
20's on `wedsync cluster`'s shape (bench/faults/cluster.py: three NATS nodes, R3): the
events stream's leader killed, and a rolling restart of the APIs. Against a
running system, give its gateways (``--url``, repeatable), its JWT secret and the shell
commands that stop, kill and start each service; outages without commands are skipped::

    python -m bench faults
    python -m bench faults --outages nats-term --seconds 5
    python -m bench faults --url http://10.0.0.5:8000 --jwt-secret "$SECRET" \\
        --nats-url nats://10.0.0.5:4222 \\
        --nats-term 'systemctl stop nats' --nats-start 'systemctl start nats' \\
        --postgres-term 'pg_ctl -D /srv/pg stop -m fast' --postgres-start 'pg_ctl -D /srv/pg start'

Lost counts acknowledged messages or changes missing from the stream or never applied,
stream events a member never received, and mentions with no notification (or email);
duplicated counts the same things stored, applied, received or notified twice. Recovered
in: seconds from the service's restart until a marker message, change and notification
went all the way through (bench/faults/drill.py). Results: ``--out``/faults.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.faults.audit import Audit
from bench.faults.cluster import CLUSTER_ACCEPTANCE, CLUSTER_ENV, CLUSTER_WORKERS, ClusterServices
from bench.faults.drill import Pace, drill
from bench.faults.services import (
    ACCEPTANCE,
    HOW,
    PAST_WINDOW,
    SERVICES,
    SHORT_WINDOW,
    CommandServices,
    Outage,
)
from bench.faults.system import WORKERS, FaultSystem, RemoteSystem
from bench.report import machine
from config.settings import AuthSettings

OUTAGES = {o.name: o for o in (*ACCEPTANCE, PAST_WINDOW, *CLUSTER_ACCEPTANCE)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--outages",
        default=",".join(OUTAGES),
        help=f"comma-separated, in order (default all: {', '.join(OUTAGES)})",
    )
    p.add_argument(
        "--seconds", type=float, help="every outage lasts this long instead of its own duration"
    )
    pace = Pace()
    p.add_argument("--warmup", type=float, default=pace.warmup, help="traffic before a fault")
    p.add_argument("--after", type=float, default=pace.after, help="traffic after the restart")
    p.add_argument(
        "--settle",
        type=float,
        default=pace.settle_timeout,
        help="seconds to wait for everything to arrive before auditing",
    )
    p.add_argument("--rate", type=float, default=pace.rate, help="messages/s per member")
    p.add_argument(
        "--change-every",
        type=float,
        default=pace.change_every,
        help="seconds between a member's changes",
    )
    p.add_argument(
        "--keep",
        type=Path,
        help="run our own system in this directory and keep it (logs/: each process)",
    )
    p.add_argument("--log-level", default="WARNING", help="of our own system's processes")
    p.add_argument("--url", action="append", help="a running system's gateway (repeatable)")
    p.add_argument(
        "--jwt-secret",
        default=os.environ.get("WEDSYNC_JWT_SECRET"),
        help="its HS256 secret (default $WEDSYNC_JWT_SECRET)",
    )
    p.add_argument("--nats-url", help="its NATS, to count dead letters")
    for service in SERVICES:
        for action in (*HOW, "start"):
            p.add_argument(
                f"--{service}-{action}",
                metavar="CMD",
                help=f"shell command: {action} {service} (with --url)",
            )


def _row(a: Audit, outage: Outage) -> str:
    recovered = "never" if a.recovered_in is None else f"{a.recovered_in:.1f} s"
    problems = "; ".join(a.problems()) or "-"
    return f"{outage.label:<28} {a.lost:>6} {a.duplicated:>11} {recovered:>13}   {problems}"


HEADER = f"{'outage':<28} {'lost':>6} {'duplicated':>11} {'recovered in':>13}   problems"


async def run(args: argparse.Namespace) -> Path:
    names = [n.strip() for n in args.outages.split(",") if n.strip()]
    unknown = [n for n in names if n not in OUTAGES]
    if unknown:
        raise SystemExit(f"unknown outages {unknown} (known: {', '.join(OUTAGES)})")
    outages = [OUTAGES[n] for n in names]
    if args.seconds is not None:
        outages = [dataclasses.replace(o, seconds=args.seconds) for o in outages]
    pace = Pace(
        warmup=args.warmup,
        after=args.after,
        settle_timeout=args.settle,
        rate=args.rate,
        change_every=args.change_every,
    )
    results: list[dict[str, Any]] = []
    print(HEADER, flush=True)

    def report(a: Audit, outage: Outage) -> None:
        print(_row(a, outage), flush=True)
        results.append({"outage": dataclasses.asdict(outage), "label": outage.label, **a.as_dict()})

    if args.url:
        await _remote(args, outages, pace, report)
    else:
        await _own(outages, pace, report, args.keep, args.log_level)
    return _write(
        args.out,
        {
            "scenario": "faults",
            "pace": dataclasses.asdict(pace),
            "outages": results,
            "machine": machine(),
        },
    )


def _write(out: Path, document: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "faults.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


async def _own(
    outages: list[Outage], pace: Pace, report: Any, keep: Path | None, log_level: str
) -> None:
    """Our own systems: one with the streams' own duplicate windows, one with a short one
    for the outage meant to outlast it."""
    groups: dict[str, list[Outage]] = {}
    cluster = {o.name for o in CLUSTER_ACCEPTANCE}
    for o in outages:
        group = "cluster" if o.name in cluster else "default"
        groups.setdefault("short" if o.name == PAST_WINDOW.name else group, []).append(o)
    for group, todo in groups.items():
        env = {"WEDSYNC_DUPLICATE_WINDOW": str(SHORT_WINDOW)} if group == "short" else {}
        with contextlib.ExitStack() as stack:
            root = (
                keep / group
                if keep
                else Path(
                    stack.enter_context(tempfile.TemporaryDirectory(prefix="wedsync-faults-"))
                )
            )
            services: ClusterServices | None = None
            workers: tuple[str, ...] = WORKERS
            if group == "cluster":  # wedsync cluster's shape: 3 NATS nodes, R3
                services, env, workers = ClusterServices(root), CLUSTER_ENV, CLUSTER_WORKERS
            async with FaultSystem(
                root, env=env, log_level=log_level, services=services, workers=workers
            ) as system:
                if isinstance(services, ClusterServices):
                    services.system = system
                for outage in todo:
                    a = await drill(
                        outage,
                        system.services,
                        system.urls,
                        system.settings.auth,
                        system,
                        pace=pace,
                        log=lambda line: print(f"  {line}", file=sys.stderr),
                    )
                    report(a, outage)
            if keep:
                print(f"  logs of every process: {root / 'logs'}", file=sys.stderr)


async def _remote(args: argparse.Namespace, outages: list[Outage], pace: Pace, report: Any) -> None:
    if not args.jwt_secret:
        raise SystemExit("--jwt-secret (or WEDSYNC_JWT_SECRET) is needed to join as members")
    commands = {
        (s, a): getattr(args, f"{s}_{a}")
        for s in SERVICES
        for a in (*HOW, "start")
        if getattr(args, f"{s}_{a}")
    }
    services = CommandServices(commands)
    auth = AuthSettings(jwt_secret=args.jwt_secret)
    async with RemoteSystem(args.nats_url) as system:
        for outage in outages:
            if not services.can(outage.service, outage.how):
                print(
                    f"{outage.label:<28} skipped: no --{outage.service}-{outage.how} / "
                    f"--{outage.service}-start command",
                    flush=True,
                )
                continue
            report(await drill(outage, services, args.url, auth, system, pace=pace), outage)
