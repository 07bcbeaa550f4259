"""Process-wide logging: readable lines in dev, one JSON object per line in production;
both carry the current trace and span ids (OpenTelemetry) when a span is active."""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING

from opentelemetry import trace

if TYPE_CHECKING:
    from config.settings import LogSettings


class TraceIds(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` (hex, empty outside a span) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        tid = format(ctx.trace_id, "032x") if ctx.is_valid else ""
        sid = format(ctx.span_id, "016x") if ctx.is_valid else ""
        record.trace_id, record.span_id = tid, sid
        record.trace = f" [trace {tid} span {sid}]" if tid else ""
        return True


class NoQueryStrings(logging.Filter):
    """Cuts the query string off the request paths in uvicorn's own lines (``"WebSocket
    /ws/weddings/<id>?token=..." [accepted]``): a legacy client's query carries its session
    token, and a token read from a log opens a live session."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("uvicorn") and isinstance(record.args, tuple):
            record.args = tuple(
                a.split("?", 1)[0] if isinstance(a, str) and a.startswith("/") else a
                for a in record.args
            )
        return True


#: third-party loggers whose DEBUG output holds request headers and frame payloads
#: (session tokens, personal data): never more verbose than INFO
NEVER_DEBUG = ("uvicorn.error", "websockets")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if tid := getattr(record, "trace_id", ""):
            out["trace_id"], out["span_id"] = tid, getattr(record, "span_id", "")
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(settings: LogSettings, *, process: str = "wedsync") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s %(levelname)-7s {process} %(name)s: %(message)s%(trace)s"
            )
        )
    handler.addFilter(TraceIds())
    handler.addFilter(NoQueryStrings())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    for name in NEVER_DEBUG:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness poll otherwise
