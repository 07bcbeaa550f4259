"""Typed settings, built once from ``WEDSYNC_*`` environment variables and passed down.

Nothing here reads the environment at import time: ``Settings.from_env()`` is called by the
entry point (CLI, app factory for server workers, test fixtures) and the result is handed to
every component explicitly.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

PREFIX = "WEDSYNC_"


class SettingsError(ValueError):
    """An environment variable holds a value its setting cannot take."""


def _setting(default: Any, env: str, help: str) -> Any:
    return field(default=default, metadata={"env": PREFIX + env, "help": help})


class WebSocketImpl(StrEnum):
    """uvicorn's WebSocket protocol implementations (all speak the same ASGI)."""

    WEBSOCKETS = "websockets"  # the websockets library's asyncio protocol (legacy)
    SANSIO = "websockets-sansio"  # the same library's sans-I/O core, timers not tasks
    WSPROTO = "wsproto"


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = _setting("127.0.0.1", "HOST", "Interface the HTTP/WebSocket API binds to.")
    port: int = _setting(8000, "PORT", "Port of the HTTP/WebSocket API (0 picks a free one).")
    processes: int = _setting(1, "API_PROCESSES", "API server processes sharing the port.")
    ws_impl: WebSocketImpl = _setting(
        WebSocketImpl.SANSIO,
        "WS_IMPL",
        "uvicorn's WebSocket implementation: `websockets-sansio` (uvicorn's own default), "
        "`websockets` (deprecated by uvicorn; slower, docs/benchmarks.md) or `wsproto`.",
    )
    gc_freeze_every: float = _setting(
        5.0,
        "GC_FREEZE_EVERY",
        "Seconds between two `gc.freeze()` of an API process: what is alive then is no longer "
        "walked by the garbage collector, whose full pause otherwise grows with every socket "
        'held (0: never; docs/operations.md, "Garbage collector").',
    )
    gc_reclaim_every: float = _setting(
        3600.0,
        "GC_RECLAIM_EVERY",
        "Seconds between two full collections of everything frozen (one logged pause; frees "
        "reference cycles of objects that died after they were frozen; 0: never).",
    )
    trusted_proxies: str = _setting(
        "",
        "TRUSTED_PROXIES",
        "Comma-separated IPs or networks of reverse proxies whose `X-Forwarded-For` / "
        "`X-Forwarded-Proto` are believed (empty: none; the peer address is the client).",
    )
    shutdown_timeout: float = _setting(
        3.0,
        "SHUTDOWN_TIMEOUT",
        "Seconds a stopping API process waits for open connections before closing them hard.",
    )
    cors_origins: str = _setting(
        "",
        "CORS_ORIGINS",
        "Comma-separated origins (`https://app.example.com`) whose pages may call the HTTP API "
        "and open WebSockets (empty: none but the API's own; `wedsync dev` adds its own and "
        "`http://localhost:5173`).",
    )

    def proxies(self) -> list[str]:
        """``trusted_proxies`` as a list, each entry checked (``*`` trusts every peer)."""
        out = []
        for entry in (p.strip() for p in self.trusted_proxies.split(",")):
            if not entry:
                continue
            if entry != "*":
                try:
                    ipaddress.ip_network(entry)
                except ValueError:
                    raise SettingsError(
                        f"WEDSYNC_TRUSTED_PROXIES: {entry!r} is not an IP address or network"
                    ) from None
            out.append(entry)
        return out

    def origins(self) -> list[str]:
        """``cors_origins`` as a list of ``scheme://host[:port]``, each entry checked."""
        out = []
        for entry in (o.strip() for o in self.cors_origins.split(",")):
            if not entry:
                continue
            scheme, sep, rest = entry.partition("://")
            if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
                raise SettingsError(
                    f"WEDSYNC_CORS_ORIGINS: {entry!r} is not an origin (scheme://host[:port], "
                    "no path; `*` is not accepted)"
                )
            out.append(entry.lower())
        return out


@dataclass(frozen=True, slots=True)
class NatsSettings:
    url: str | None = _setting(
        None, "NATS_URL", "NATS server URL(s), comma separated. Unset: embedded nats-server."
    )
    connect_timeout: float = _setting(5.0, "NATS_CONNECT_TIMEOUT", "Seconds to wait for NATS.")
    replicas: int = _setting(1, "STREAM_REPLICAS", "JetStream replicas per stream (cluster).")
    duplicate_window: float | None = _setting(
        None,
        "DUPLICATE_WINDOW",
        "Seconds a stream stores a repeated `Nats-Msg-Id` once (every stream). Unset: each "
        "stream's own (300; dead letters 120). Short only to test outages longer than it.",
    )


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    url: str | None = _setting(
        None,
        "DATABASE_URL",
        "PostgreSQL DSN (postgresql://...) of the runtime role the app and workers run as: "
        "no superuser, no BYPASSRLS, no DDL (docs/security.md). Unset: embedded PostgreSQL.",
    )
    migrate_url: str | None = _setting(
        None,
        "MIGRATE_DATABASE_URL",
        "DSN of the owner role that `wedsync migrate` and startup migrations run as. Unset: "
        "`WEDSYNC_DATABASE_URL` (one role for both: no least privilege); embedded: its superuser.",
    )
    pool_min: int = _setting(1, "DB_POOL_MIN", "Minimum connections in each process's pool.")
    pool_max: int = _setting(10, "DB_POOL_MAX", "Maximum connections in each process's pool.")


@dataclass(frozen=True, slots=True)
class AuthSettings:
    jwt_secret: str | None = _setting(
        None, "JWT_SECRET", "HS256 secret for user JWTs. Unset in dev: generated in the data dir."
    )
    jwt_public_key: str | None = _setting(
        None, "JWT_PUBLIC_KEY", "PEM public key (or path to one) for RS256/ES256 user JWTs."
    )
    jwks_url: str | None = _setting(None, "JWKS_URL", "JWKS URL for RS256/ES256 user JWTs.")
    jwks_refetch_cooldown: float = _setting(
        1.0,
        "JWKS_REFETCH_COOLDOWN",
        "Seconds between JWK set refetches forced by an unknown `kid` (rotation pickup delay; "
        "bounds refetch storms from forged kids).",
    )
    jwt_issuer: str | None = _setting(None, "JWT_ISSUER", "Required `iss` claim, if set.")
    jwt_audience: str | None = _setting(None, "JWT_AUDIENCE", "Required `aud` claim, if set.")
    data_key: str | None = _setting(
        None,
        "DATA_KEY",
        "Fernet key(s), comma separated, newest first, encrypting contact details at rest. "
        "Unset in dev: generated in the data dir.",
    )
    admin_token: str | None = _setting(
        None,
        "ADMIN_TOKEN",
        "Bearer token of the server API for operators and backends (`/api/admin`). "
        "Unset in dev: generated in the data dir (`wedsync admin-token` prints it).",
    )
    metrics_token: str | None = _setting(
        None,
        "METRICS_TOKEN",
        "Bearer token a Prometheus scraper sends to `GET /metrics` (the admin token works "
        "too). Unset in dev: generated in the data dir (`wedsync metrics-token` prints it).",
    )
    session_ttl: float = _setting(
        8 * 3600.0, "SESSION_TTL", "Seconds a collaboration session lives after its last use."
    )
    max_sessions: int = _setting(
        5, "MAX_SESSIONS", "Concurrent sessions per user per wedding; the oldest is ended."
    )
    rate_user: str = _setting(
        "120/minute", "RATE_LIMIT_USER", "HTTP requests allowed per user (limits syntax)."
    )
    rate_ip: str = _setting(
        "600/minute",
        "RATE_LIMIT_IP",
        "HTTP requests allowed per client IP (limits syntax); `/healthz`, `/readyz`, "
        "`/metrics` and the admin API are not counted here.",
    )
    rate_ws: str = _setting(
        "600/minute",
        "RATE_LIMIT_WS",
        "WebSocket handshakes allowed per client IP, checked before the session token is "
        "looked up (HTTP 429 beyond).",
    )
    rate_admin: str = _setting(
        "6000/minute", "RATE_LIMIT_ADMIN", "Admin API requests allowed per admin token."
    )


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    max_frame: int = _setting(65536, "WS_MAX_FRAME", "Largest client frame in bytes (`too_large`).")
    rate: float = _setting(
        20.0, "WS_RATE", "Messages, changes and presence frames per second per connection."
    )
    burst: float = _setting(40.0, "WS_BURST", "Such frames a connection may send at once.")
    queue: int = _setting(
        1024, "WS_QUEUE", "Frames queued for one socket before it is closed as a slow consumer."
    )
    max_per_user: int = _setting(
        8, "WS_MAX_PER_USER", "Open sockets per user per wedding in one gateway process (4029)."
    )
    max_lag: float = _setting(
        0.1,
        "WS_MAX_LAG",
        "Event loop lag (seconds) above which a gateway refuses part of the frames "
        "(`overloaded`); 0 turns lag-based shedding off.",
    )
    max_inflight: int = _setting(
        1024,
        "WS_MAX_INFLIGHT",
        "Publishes to JetStream one gateway process has in flight before it refuses "
        "frames (`overloaded`).",
    )
    auth_timeout: float = _setting(
        5.0,
        "WS_AUTH_TIMEOUT",
        "Seconds a socket opened without a token has to send its `auth` frame (else 4008).",
    )
    query_token: bool = _setting(
        True,
        "WS_QUERY_TOKEN",
        "Accept the legacy `?token=` in the WebSocket URL (never logged; proxies may log it). "
        "`false` refuses it with 4500.",
    )
    resume_rate: float = _setting(
        1000.0,
        "WS_RESUME_RATE",
        "Replayed events per second per user, wedding and gateway process (resume budget).",
    )
    resume_burst: float = _setting(
        20000.0,
        "WS_RESUME_BURST",
        "Resume budget a user may spend at once: a resume costs 100 plus one per event "
        "replayed; one that cannot pay its 100 is refused (`rate_limited`).",
    )


@dataclass(frozen=True, slots=True)
class PresenceSettings:
    batch: float = _setting(
        0.05, "PRESENCE_BATCH", "Seconds presence diffs of a busy room are batched over."
    )
    idle_after: float = _setting(
        120.0, "PRESENCE_IDLE_AFTER", "Seconds without activity before a member shows `idle`."
    )
    away_after: float = _setting(
        600.0, "PRESENCE_AWAY_AFTER", "Seconds without activity before a member shows `away`."
    )
    grace: float = _setting(
        5.0, "PRESENCE_GRACE", "Seconds after a disconnect before the leave (a reconnect cancels)."
    )
    ttl: float = _setting(
        15.0,
        "PRESENCE_TTL",
        "Seconds without a gateway heartbeat before its connections are expired by the worker.",
    )
    heartbeat: float = _setting(
        3.0, "PRESENCE_HEARTBEAT", "Seconds between a gateway process's presence heartbeats."
    )
    write_every: float = _setting(
        0.25,
        "PRESENCE_WRITE_EVERY",
        "Least seconds between two presence writes of one socket (updates between coalesce).",
    )
    sample_every: float = _setting(
        30.0, "PRESENCE_SAMPLE_EVERY", "Seconds between presence analytics samples (minutes)."
    )


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = _setting("INFO", "LOG_LEVEL", "Log level (DEBUG, INFO, WARNING, ERROR).")
    format: str = _setting("dev", "LOG_FORMAT", "`dev` (readable) or `json` (production).")


@dataclass(frozen=True, slots=True)
class DevSettings:
    restart_delay: float = _setting(
        0.5,
        "DEV_RESTART_DELAY",
        "Seconds `wedsync dev` waits before restarting a crashed child; doubles with each "
        "crash of that child within the crash-loop window (at most 30 s).",
    )
    crash_loop: str = _setting(
        "5/60",
        "DEV_CRASH_LOOP",
        "`N/S`: the Nth crash of one child within S seconds is a crash loop: `wedsync dev` "
        "stops everything and exits 1.",
    )
    demo: bool = _setting(
        False,
        "DEV_DEMO",
        "Serve the demo app at `/demo/` and its token endpoint `POST /api/dev/token`, which "
        "signs in anyone as anyone: development only (`wedsync dev` turns it on unless set).",
    )

    def crash_limit(self) -> tuple[int, float]:
        """(crashes, seconds) of ``crash_loop``."""
        count, _, window = self.crash_loop.partition("/")
        try:
            n, s = int(count), float(window)
        except ValueError:
            n, s = 0, 0.0
        if n < 1 or s <= 0:
            raise SettingsError(
                f"WEDSYNC_DEV_CRASH_LOOP={self.crash_loop!r} is not N/S (e.g. 5/60)"
            )
        return n, s


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    max_deliveries: int = _setting(
        5, "WORKER_MAX_DELIVERIES", "Attempts per message before it goes to the dead-letter stream."
    )
    retry_base_delay: float = _setting(
        1.0, "WORKER_RETRY_BASE_DELAY", "Seconds before the first redelivery; doubles each attempt."
    )
    retry_max_delay: float = _setting(
        300.0, "WORKER_RETRY_MAX_DELAY", "Upper bound of the redelivery delay, in seconds."
    )
    ack_wait: float = _setting(
        30.0, "WORKER_ACK_WAIT", "Seconds a delivered message may stay unacknowledged."
    )
    batch: int = _setting(32, "WORKER_BATCH", "Messages fetched per pull request.")


@dataclass(frozen=True, slots=True)
class ConflictSettings:
    partitions: int = _setting(
        4,
        "CONFLICT_PARTITIONS",
        "Partitions of the changes stream (change only with the workers drained).",
    )
    own_partitions: str = _setting(
        "",
        "CONFLICT_OWN_PARTITIONS",
        "Comma-separated partitions this conflicts worker applies (empty: all).",
    )
    approval_threshold: int = _setting(
        50000,
        "APPROVAL_THRESHOLD",
        "Budget amount (minor units) a non-couple change may move from its last approved value, "
        "and the largest line it may delete or mark paid/approved, without the couple's approval.",
    )
    approval_ttl: float = _setting(
        172800.0, "APPROVAL_TTL", "Seconds before an undecided budget approval expires."
    )

    def owned(self) -> list[int]:
        if not self.own_partitions.strip():
            return list(range(self.partitions))
        return sorted({int(p) for p in self.own_partitions.split(",") if p.strip()})


def _seconds_list(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


@dataclass(frozen=True, slots=True)
class NotifySettings:
    smtp_host: str | None = _setting(None, "SMTP_HOST", "SMTP server for email. Unset: no email.")
    smtp_port: int = _setting(587, "SMTP_PORT", "SMTP server port.")
    smtp_starttls: bool = _setting(True, "SMTP_STARTTLS", "Upgrade the SMTP connection (STARTTLS).")
    smtp_username: str | None = _setting(None, "SMTP_USERNAME", "SMTP login, if required.")
    smtp_password: str | None = _setting(None, "SMTP_PASSWORD", "SMTP password, if required.")
    smtp_from: str = _setting(
        "WedSync <notifications@wedsync.invalid>", "SMTP_FROM", "From address of every email."
    )
    sms_base_url: str | None = _setting(
        None,
        "SMS_BASE_URL",
        "Twilio-compatible REST API base (https://api.twilio.com). Unset: no SMS.",
    )
    sms_account_sid: str = _setting("", "SMS_ACCOUNT_SID", "SMS provider account SID.")
    sms_auth_token: str = _setting("", "SMS_AUTH_TOKEN", "SMS provider auth token.")
    sms_from: str = _setting("", "SMS_FROM", "Sender number (E.164) of every SMS.")
    vapid_private_key: str | None = _setting(
        None,
        "VAPID_PRIVATE_KEY",
        "PEM EC P-256 key signing Web Push (VAPID). Unset in dev: generated in the data dir.",
    )
    vapid_subject: str = _setting(
        "mailto:ops@wedsync.invalid", "VAPID_SUBJECT", "VAPID `sub` claim (mailto: or https:)."
    )
    send_timeout: float = _setting(
        10.0, "NOTIFY_SEND_TIMEOUT", "Seconds one provider call may take."
    )
    concurrency: int = _setting(
        8, "NOTIFY_CONCURRENCY", "Sends in flight per notifications worker."
    )
    unseen_after: float = _setting(
        300.0,
        "NOTIFY_UNSEEN_AFTER",
        "Seconds an in-app notice to a member active in the room may stay unread before "
        "its email/SMS/push goes out.",
    )
    escalate_every: float = _setting(
        300.0,
        "NOTIFY_ESCALATE_EVERY",
        "Seconds between emergency SMS rounds to couple and planner until acknowledged.",
    )
    escalate_rounds: int = _setting(12, "NOTIFY_ESCALATE_ROUNDS", "Most emergency SMS rounds.")
    retry: str = _setting(
        "30,120,600,1800",
        "NOTIFY_RETRY",
        "Seconds before each retry of a failed email/SMS/push; then it is dead-lettered.",
    )
    webhook_retry: str = _setting(
        "5,300,1800,7200,18000,36000",
        "WEBHOOK_RETRY",
        "Seconds before each webhook retry; after the last the endpoint is disabled.",
    )
    webhook_allow_private: bool = _setting(
        False,
        "WEBHOOK_ALLOW_PRIVATE",
        "Allow webhook URLs to loopback, private and link-local addresses (dev and tests with "
        "local receivers only; `wedsync dev` turns it on unless set).",
    )
    digest_hour: int = _setting(
        18, "NOTIFY_DIGEST_HOUR", "Local hour (wedding time zone) of the daily email digest."
    )

    def retry_schedule(self) -> tuple[float, ...]:
        return _seconds_list(self.retry)

    def webhook_schedule(self) -> tuple[float, ...]:
        return _seconds_list(self.webhook_retry)


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    hot_days: int = _setting(
        90,
        "RETENTION_HOT_DAYS",
        "Days events stay in JetStream before the archive job moves them to PostgreSQL "
        "(a wedding's own `hot_days` overrides it).",
    )
    after_completed_days: int = _setting(
        30,
        "RETENTION_AFTER_COMPLETED_DAYS",
        "Days after a wedding is `completed` when all its events are archived (until then "
        "the hot retention applies).",
    )
    archive_batch: int = _setting(
        500, "RETENTION_ARCHIVE_BATCH", "Events archived per transaction and JetStream purge."
    )
    session_grace_days: int = _setting(
        30,
        "RETENTION_SESSION_GRACE_DAYS",
        "Days ended or expired sessions are kept, then deleted.",
    )
    presence_detail_days: int = _setting(
        60,
        "RETENTION_PRESENCE_DETAIL_DAYS",
        "Days per-minute presence is kept before it is rolled up to daily counts.",
    )
    delivery_log_days: int = _setting(
        90,
        "RETENTION_DELIVERY_LOG_DAYS",
        "Days finished notification deliveries and their attempts are kept.",
    )
    dead_letter_days: int = _setting(
        30, "RETENTION_DEAD_LETTER_DAYS", "Days dead letters stay in WEDSYNC_DLQ."
    )
    archive_cron: str = _setting(
        "17 * * * *", "RETENTION_ARCHIVE_CRON", "When the archive job runs (crontab, UTC)."
    )
    cleanup_cron: str = _setting(
        "43 3 * * *", "RETENTION_CLEANUP_CRON", "When the cleanup job runs (crontab, UTC)."
    )


def _standard(default: Any, env: str, help: str) -> Any:
    """A setting under its standard (non-WEDSYNC_) name, such as OpenTelemetry's OTEL_*."""
    return field(default=default, metadata={"env": env, "help": help})


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    service_name: str = _standard(
        "wedsync",
        "OTEL_SERVICE_NAME",
        "Service name prefix of traces and metrics (`-api`, `-conflicts`... per process).",
    )
    traces_exporter: str = _standard(
        "none",
        "OTEL_TRACES_EXPORTER",
        "`otlp`, `console` (dev) or `none`. OTLP reads the standard `OTEL_EXPORTER_OTLP_*` "
        "variables (endpoint, headers, timeout).",
    )
    metrics_exporter: str = _standard(
        "none",
        "OTEL_METRICS_EXPORTER",
        "`otlp`, `console` or `none`; `GET /metrics` (Prometheus) is always served.",
    )
    otlp_protocol: str = _standard(
        "http/protobuf", "OTEL_EXPORTER_OTLP_PROTOCOL", "`http/protobuf` or `grpc`."
    )
    sampler: str = _standard(
        "parentbased_always_on",
        "OTEL_TRACES_SAMPLER",
        "`[parentbased_]always_on`, `[parentbased_]always_off` or "
        "`[parentbased_]traceidratio`; always parent-based (a trace is kept or dropped whole).",
    )
    sampler_arg: float = _standard(
        1.0, "OTEL_TRACES_SAMPLER_ARG", "Ratio of traces kept by `traceidratio`."
    )
    gather: float = _setting(
        0.25,
        "METRICS_GATHER",
        "Seconds `GET /metrics` waits for every process's metrics over NATS.",
    )
    lag_every: float = _setting(
        5.0,
        "METRICS_LAG_EVERY",
        "Seconds between JetStream consumer lag readings of an API process.",
    )


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = _setting(
        Path(".wedsync"), "DATA_DIR", "Where embedded NATS/PostgreSQL and dev secrets keep data."
    )
    server: ServerSettings = field(default_factory=ServerSettings)
    nats: NatsSettings = field(default_factory=NatsSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    presence: PresenceSettings = field(default_factory=PresenceSettings)
    log: LogSettings = field(default_factory=LogSettings)
    dev: DevSettings = field(default_factory=DevSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    conflicts: ConflictSettings = field(default_factory=ConflictSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)

    @property
    def embedded(self) -> bool:
        """True when at least one backing service must be started in-process."""
        return self.nats.url is None or self.database.url is None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        built: Settings = _build(cls, environ)
        return built

    def with_services(
        self, nats_url: str, database_url: str, migrate_url: str | None = None
    ) -> Settings:
        """A copy pointing at running services (used once embedded ones are up)."""
        db = dataclasses.replace(self.database, url=database_url)
        if migrate_url is not None:
            db = dataclasses.replace(db, migrate_url=migrate_url)
        return dataclasses.replace(
            self, nats=dataclasses.replace(self.nats, url=nats_url), database=db
        )

    def to_env(self) -> dict[str, str]:
        """The environment that rebuilds these settings in a child process."""
        return {env: str(value) for env, _, value in _walk(self) if value is not None}


def _build(cls: type[Any], environ: Mapping[str, str]) -> Any:
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            values[f.name] = _build(tp, environ)  # type: ignore[arg-type]
            continue
        env = f.metadata["env"]
        raw = environ.get(env)
        if raw is None or raw == "":
            continue
        values[f.name] = _parse(env, raw, tp)
    return cls(**values)


def _parse(env: str, raw: str, tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        (tp,) = [a for a in get_args(tp) if a is not type(None)]
    try:
        if tp is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return tp(raw)
    except ValueError:
        raise SettingsError(f"{env}={raw!r} is not a valid {tp.__name__}") from None


def _walk(obj: Any) -> Iterator[tuple[str, str, Any]]:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _walk(value)
        else:
            yield f.metadata["env"], f.metadata["help"], value


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting: the documentation table."""
    return [(env, "" if d is None else str(d), h) for env, h, d in _walk(Settings())]


def markdown_table() -> str:
    """The README's settings table (`python -m config.settings` prints it)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for env, default, meaning in describe():
        rows.append(f"| `{env}` | {f'`{default}`' if default else '(unset)'} | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
