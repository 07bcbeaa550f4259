"""Start whichever backing services are not configured, under one data-dir lock."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from config.settings import Settings
from wedsync.embedded.nats_server import EmbeddedNats
from wedsync.embedded.postgres import EmbeddedPostgres
from wedsync.embedded.process import EmbeddedError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Exclusive for one running system per data dir; the kernel drops it if we die."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "wedsync.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = path.read_text().strip() or "?"
            raise EmbeddedError(f"data dir {data_dir} is in use by pid {owner}") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def embedded_services(settings: Settings) -> AsyncIterator[Settings]:
    """Yield settings whose NATS and database URLs point at running servers.

    Configured URLs are used as they are; for each one that is unset, a server is started
    with its data in ``settings.data_dir`` and stopped (cleanly) on exit.
    """
    if not settings.embedded:
        yield settings
        return
    data_dir = settings.data_dir.resolve()
    with data_dir_lock(data_dir):
        async with contextlib.AsyncExitStack() as stack:
            nats_url, db_url = settings.nats.url, settings.database.url
            if nats_url is None:
                nats = await stack.enter_async_context(EmbeddedNats(data_dir / "nats"))
                nats_url = nats.url
                log.info("embedded nats-server ready at %s (pid %s)", nats_url, nats.pid)
            if db_url is None:
                pg = await stack.enter_async_context(EmbeddedPostgres(data_dir / "postgres"))
                db_url = pg.url
                log.info("embedded PostgreSQL ready on port %s (pid %s)", pg.port, pg.pid)
            yield settings.with_services(nats_url, db_url)
