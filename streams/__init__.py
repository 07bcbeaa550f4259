"""Subjects, JetStream stream/consumer declarations and msgspec schemas: one source."""

from streams.definitions import (
    DEAD_LETTERS,
    EVENTS,
    STREAMS,
    ConsumerSpec,
    StreamConfigError,
    StreamSpec,
    ensure_stream,
    ensure_streams,
    missing_streams,
)
from streams.schemas import ErrorBody, Health, Readiness
from streams.subjects import (
    control_subject,
    dead_letter_subject,
    wedding_subject,
    wedding_wildcard,
)

__all__ = [
    "DEAD_LETTERS",
    "EVENTS",
    "STREAMS",
    "ConsumerSpec",
    "ErrorBody",
    "Health",
    "Readiness",
    "StreamConfigError",
    "StreamSpec",
    "control_subject",
    "dead_letter_subject",
    "ensure_stream",
    "ensure_streams",
    "missing_streams",
    "wedding_subject",
    "wedding_wildcard",
]
