"""The ``wedsync`` command: dev, cluster, api, worker NAME, retention run JOB, migrate, token,
admin-token, metrics-token."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from config.logging import configure_logging
from config.secrets import (
    PRINTED,
    MissingSecrets,
    UnknownDevSecret,
    printed_secret,
    require_secrets,
    with_dev_secrets,
)
from config.settings import Settings, SettingsError


async def _migrate(settings: Settings) -> int:
    from runtime.connections import connect, prepare
    from wedsync.embedded import embedded_services

    async with embedded_services(settings) as live, connect(live, name="wedsync-migrate") as c:
        await prepare(c, live)
    print("database schema and streams are up to date")
    return 0


async def _worker(settings: Settings, name: str) -> int:
    from app.metrics import MetricsResponder, watch_pool
    from config.telemetry import Telemetry
    from runtime.connections import connect
    from runtime.db import scope as db_scope
    from workers.registry import WORKERS
    from workers.runner import ConsumerRunner

    if name not in WORKERS:
        known = ", ".join(sorted(WORKERS)) or "none yet"
        print(f"unknown worker {name!r} (available: {known})", file=sys.stderr)
        return 2
    definition = WORKERS[name](settings)
    # a worker acts for whichever wedding an event or a due row names: its scans (due
    # deliveries, approvals, escalations, relays, presence samples) span weddings; the
    # consumers' handlers narrow each message's transaction to its wedding (scope.enter)
    db_scope.process_system(f"worker {name}: consumers and timers of every wedding")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # a stop signal while it still waits for NATS or PostgreSQL (which may never come: the
    # supervisor that started them is gone) ends the wait; once it is up, a graceful stop
    starting = asyncio.current_task()

    def on_signal() -> None:
        stop.set()
        if starting is not None:
            starting.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    async with contextlib.AsyncExitStack() as stack:
        try:
            telemetry = await stack.enter_async_context(Telemetry(settings.telemetry, name))
            conns = await stack.enter_async_context(
                connect(settings, name=f"wedsync-worker-{name}")
            )
            watch_pool(conns.pool)
            await stack.enter_async_context(MetricsResponder(conns.nc, telemetry))
            if definition.service is not None:
                running: Any = await stack.enter_async_context(definition.service(conns))
            else:
                assert definition.consumer is not None and definition.handler is not None
                running = await stack.enter_async_context(
                    ConsumerRunner(
                        conns.js,
                        conns.pool,
                        definition.consumer,
                        definition.handler,
                        settings.worker,
                    )
                )
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
            print(f"wedsync worker {name}: stopped before it was up", file=sys.stderr)
            return 0
        starting = None  # up: a signal only sets stop from here on
        stopped = asyncio.ensure_future(stop.wait())
        failed = asyncio.ensure_future(running.wait())
        await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
        if failed.done():
            failed.result()
        else:
            failed.cancel()
    return 0


async def _retention(settings: Settings, job_name: str, weddings: list[str] | None) -> int:
    import uuid

    from runtime.connections import connect
    from runtime.db import scope as db_scope
    from workers.registry import retention_jobs
    from workers.retention import JobBusy, run_job
    from workers.retention.progress import Bar

    db_scope.process_system(f"retention {job_name}: over every wedding")
    async with connect(settings, name=f"wedsync-retention-{job_name}") as conns:
        only = [uuid.UUID(w) for w in weddings] if weddings else None
        jobs = retention_jobs(settings, conns, weddings=only)
        if job_name not in jobs:
            print(f"unknown job {job_name!r} (available: {', '.join(jobs)})", file=sys.stderr)
            return 2
        try:
            with Bar(job_name) as bar:
                counts = await run_job(conns.pool, jobs[job_name], bar)
        except JobBusy as exc:
            print(str(exc), file=sys.stderr)
            return 1
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def _api(settings: Settings) -> int:
    import uvicorn

    common: dict[str, Any] = {
        "host": settings.server.host,
        "port": settings.server.port,
        # our logging (config/logging.py) and access log (app/access_log.py): uvicorn's
        # shows query strings (a legacy client's session token); its DEBUG, and that of
        # the websockets library, dump headers and frames (tokens, personal data)
        "log_config": None,
        "access_log": False,
        "log_level": max(logging.INFO, logging.getLevelName(settings.log.level.upper())),
        "ws": settings.server.ws_impl.value,
        "ws_per_message_deflate": False,  # ~90 KB per idle connection otherwise
        "ws_max_size": 1024 * 1024,  # larger frames close the socket (1009)
        "ws_ping_interval": 15.0,  # protocol pings: a dead peer is dropped within ~30 s
        "ws_ping_timeout": 15.0,
        "lifespan": "on",
        # a peer that stopped reading never lets its socket flush: do not wait for it forever
        "timeout_graceful_shutdown": settings.server.shutdown_timeout,
        # X-Forwarded-For only from the proxies named (uvicorn's default trusts 127.0.0.1,
        # so a client on this host could pick its own address and dodge the per-IP limit)
        "proxy_headers": bool(settings.server.proxies()),
        "forwarded_allow_ips": settings.server.proxies() or None,
    }
    if settings.server.processes > 1:
        uvicorn.run(
            "app.factory:app_from_env", factory=True, workers=settings.server.processes, **common
        )
    else:
        from app.access_log import AccessLog
        from app.factory import create_app

        uvicorn.run(AccessLog(create_app(settings)), **common)
    return 0


def _run_fast(main: Coroutine[Any, Any, int]) -> int:
    """Run a long-lived worker on uvloop when it is installed (it comes with uvicorn's
    standard extra, which serves the API on it too): a worker's time is mostly socket
    writes to PostgreSQL and NATS, which uvloop makes cheaper (docs/benchmarks.md)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wedsync", description="WedSync realtime backend")
    sub = p.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="embedded NATS + PostgreSQL, the API and every worker")
    dev.add_argument("--api-processes", type=int, help="API server processes (default 1)")
    dev.add_argument("--port", type=int, help="API port (0 picks a free one)")
    cluster = sub.add_parser("cluster", help="3 clustered NATS, PostgreSQL, 2 APIs, workers")
    cluster.add_argument("--port", type=int, help="first API port (default 8000; next: +1)")
    sub.add_parser("api", help="the HTTP/WebSocket API on configured NATS and PostgreSQL")
    worker = sub.add_parser("worker", help="run one worker process")
    worker.add_argument("name")
    retention = sub.add_parser("retention", help="run a retention job now")
    retention_sub = retention.add_subparsers(dest="action", required=True)
    run = retention_sub.add_parser("run", help="run one job once, with a progress bar")
    run.add_argument("job", help="archive or cleanup")
    run.add_argument("--wedding", action="append", help="archive only this wedding (repeatable)")
    sub.add_parser("migrate", help="apply database migrations and stream declarations")
    token = sub.add_parser("token", help="print a user JWT signed with the HS256 secret")
    token.add_argument("--user", required=True, help="user id (the `sub` claim)")
    token.add_argument("--name")
    token.add_argument("--email")
    token.add_argument("--ttl", type=float, default=24 * 3600, help="seconds (default a day)")
    admin_token = sub.add_parser(
        "admin-token", help="print the server API's admin token (/api/admin)"
    )
    metrics_token = sub.add_parser("metrics-token", help="print the bearer token of GET /metrics")
    for printing in (token, admin_token, metrics_token):
        printing.add_argument(
            "--new-secret",
            action="store_true",
            help="create the data dir's development secrets if it has none (by default "
            "refused: no running server would know them)",
        )
    return p


def _print_secret(settings: Settings, args: argparse.Namespace) -> int:
    """``wedsync token`` / ``admin-token`` / ``metrics-token``: what a running server knows
    (configured, or in its data dir), never a secret made up on the spot unless asked."""
    from app.auth.tokens import issue_token

    auth = settings.auth
    if args.command == "token" and not auth.jwt_secret and (auth.jwt_public_key or auth.jwks_url):
        print(
            "wedsync token: signs HS256 tokens with WEDSYNC_JWT_SECRET, which is unset; "
            "RS256/ES256 tokens (WEDSYNC_JWT_PUBLIC_KEY, WEDSYNC_JWKS_URL) come from your "
            "identity provider",
            file=sys.stderr,
        )
        return 2
    if args.new_secret:
        settings = with_dev_secrets(settings)
    try:
        secret = printed_secret(settings, args.command)
    except UnknownDevSecret as exc:
        print(f"wedsync {args.command}: {exc}", file=sys.stderr)
        return 2
    if args.command != "token":
        print(secret)
        return 0
    signing = dataclasses.replace(auth, jwt_secret=secret)
    print(issue_token(signing, args.user, name=args.name, email=args.email, ttl=args.ttl))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = dict(os.environ)
    if args.command == "dev":
        if args.api_processes:
            env["WEDSYNC_API_PROCESSES"] = str(args.api_processes)
        if args.port is not None:
            env["WEDSYNC_PORT"] = str(args.port)
        # a developer's webhook receiver runs on their machine
        env.setdefault("WEDSYNC_WEBHOOK_ALLOW_PRIVATE", "true")
        env.setdefault("WEDSYNC_DEV_DEMO", "true")  # /demo/ and its sign-in (app/demo)
    if args.command == "cluster":  # wedsync/cluster.py: the production shape, locally
        from wedsync.cluster import cluster_env

        env = cluster_env({**env, **({"WEDSYNC_PORT": str(args.port)} if args.port else {})})
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log, process=args.command)
    try:
        if args.command == "dev":
            settings.dev.crash_limit()
        if args.command in ("dev", "api"):
            settings.server.proxies()
            settings.server.origins()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command in ("dev", "cluster"):
        settings = with_dev_secrets(settings)  # dev hands them to its children
    if args.command == "api":
        try:
            require_secrets(settings)  # never generated outside `wedsync dev`
        except MissingSecrets as exc:
            print(f"wedsync api: {exc}", file=sys.stderr)
            return 2
    if args.command in PRINTED:
        return _print_secret(settings, args)
    if args.command == "dev":
        from wedsync.embedded.process import EmbeddedError
        from wedsync.supervisor import StartFailed, run_dev

        try:
            return asyncio.run(run_dev(settings))
        except (StartFailed, EmbeddedError) as exc:  # the reason is the message: no traceback
            print(f"wedsync dev: {exc}", file=sys.stderr)
            return 1
    if args.command == "cluster":
        from wedsync.cluster import main as cluster_main

        return cluster_main(settings)
    if args.command == "api":
        return _api(settings)
    if args.command == "worker":
        return _run_fast(_worker(settings, args.name))
    if args.command == "retention":
        return asyncio.run(_retention(settings, args.job, args.wedding))
    return asyncio.run(_migrate(settings))


if __name__ == "__main__":
    sys.exit(main())
