"""Every NATS subject the system uses, named in one place.

Wedding ids are UUIDs and channels a fixed set, so neither can smuggle ``.``, ``*`` or
``>`` into a subject.
"""

from __future__ import annotations

import uuid

ROOT = "wedsync"
EVENTS_ROOT = f"{ROOT}.wedding"
DEAD_LETTER_ROOT = f"{ROOT}.dlq"
CONTROL_ROOT = f"{ROOT}.control"
PRESENCE_ROOT = f"{ROOT}.presence"
SIGNAL_ROOT = f"{ROOT}.signal"
CHANGES_ROOT = f"{ROOT}.changes"
# the presence bucket's changes, republished by JetStream once stored (core NATS, not
# captured by any stream): ``wedsync.live.presence.<key>``, the key ``<wedding>.<session>``
PRESENCE_LIVE_ROOT = f"{ROOT}.live.presence"


def _token(value: str) -> str:
    if not value or any(c in value for c in ".*> \t\r\n"):
        raise ValueError(f"not a subject token: {value!r}")
    return value


def wedding_subject(wedding_id: uuid.UUID | str, channel: str) -> str:
    """Durable events of one wedding channel: ``wedsync.wedding.<id>.<channel>``."""
    return f"{EVENTS_ROOT}.{_token(str(wedding_id))}.{_token(channel)}"


def wedding_wildcard(wedding_id: uuid.UUID | str) -> str:
    """Every channel of one wedding."""
    return f"{EVENTS_ROOT}.{_token(str(wedding_id))}.>"


def dead_letter_subject(consumer: str) -> str:
    """Where a worker's consumer puts messages it gave up on."""
    return f"{DEAD_LETTER_ROOT}.{_token(consumer)}"


def control_subject(wedding_id: uuid.UUID | str) -> str:
    """Core-NATS (not stored) control messages for one wedding, e.g. session revocation."""
    return f"{CONTROL_ROOT}.{_token(str(wedding_id))}"


def presence_subject(wedding_id: uuid.UUID | str, kind: str) -> str:
    """Durable presence log: ``wedsync.presence.<id>.<joined|left>``."""
    return f"{PRESENCE_ROOT}.{_token(str(wedding_id))}.{_token(kind)}"


def presence_live_subject(wedding_id: uuid.UUID | str) -> str:
    """Every presence record change of one wedding, as JetStream republishes it."""
    return f"{PRESENCE_LIVE_ROOT}.{_token(str(wedding_id))}.*"


def signal_subject(wedding_id: uuid.UUID | str) -> str:
    """Core NATS (never stored): ephemeral signals of one wedding's room (typing...)."""
    return f"{SIGNAL_ROOT}.{_token(str(wedding_id))}"


# core NATS request: every process answers with its Prometheus metrics (app/metrics.py)
METRICS_SCRAPE = f"{ROOT}.metrics.scrape"
