"""Fault drills: NATS and PostgreSQL taken away from a running system while a wedding is in
use, and what it cost — lost, duplicated, recovered in (issue 17; docs/runtime.md "What
each outage does"). ``python -m bench faults`` runs them; tests/test_faults.py asserts
that nothing was lost or duplicated."""

from bench.faults.audit import Audit, audit, settle
from bench.faults.drill import Pace, drill
from bench.faults.services import (
    ACCEPTANCE,
    PAST_WINDOW,
    SHORT_WINDOW,
    CommandServices,
    Outage,
    OwnServices,
)
from bench.faults.system import FaultSystem, RemoteSystem

__all__ = [
    "ACCEPTANCE",
    "PAST_WINDOW",
    "SHORT_WINDOW",
    "Audit",
    "CommandServices",
    "FaultSystem",
    "Outage",
    "OwnServices",
    "Pace",
    "RemoteSystem",
    "audit",
    "drill",
    "settle",
]
