"""Roles, channels and who may read or write what: the one permission matrix.

Enforced in one place (``permissions_for``) by the HTTP API, the gateway and the workers.
See docs/permissions.md for the reasoning behind each cell.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class Role(StrEnum):
    COUPLE = "couple"
    PLANNER = "planner"
    VENDOR = "vendor"
    FAMILY = "family"
    GUEST = "guest"


class Channel(StrEnum):
    TIMELINE = "timeline"
    BUDGET = "budget"
    VENDORS = "vendors"
    GUESTS = "guests"
    TASKS = "tasks"
    CHAT = "chat"
    EMERGENCY = "emergency"


class WeddingStatus(StrEnum):
    PLANNING = "planning"
    WEDDING_DAY = "wedding_day"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class Access(msgspec.Struct, frozen=True):
    read: bool
    write: bool


_ = Access(read=False, write=False)
R = Access(read=True, write=False)
RW = Access(read=True, write=True)

C = Channel
MATRIX: dict[Role, dict[Channel, Access]] = {
    #             timeline    budget     vendors    guests     tasks      chat       emergency
    Role.COUPLE: {
        C.TIMELINE: RW,
        C.BUDGET: RW,
        C.VENDORS: RW,
        C.GUESTS: RW,
        C.TASKS: RW,
        C.CHAT: RW,
        C.EMERGENCY: RW,
    },
    Role.PLANNER: {
        C.TIMELINE: RW,
        C.BUDGET: RW,
        C.VENDORS: RW,
        C.GUESTS: RW,
        C.TASKS: RW,
        C.CHAT: RW,
        C.EMERGENCY: RW,
    },
    Role.VENDOR: {
        C.TIMELINE: R,
        C.BUDGET: _,
        C.VENDORS: RW,
        C.GUESTS: _,
        C.TASKS: RW,
        C.CHAT: RW,
        C.EMERGENCY: RW,
    },
    Role.FAMILY: {
        C.TIMELINE: R,
        C.BUDGET: _,
        C.VENDORS: R,
        C.GUESTS: RW,
        C.TASKS: RW,
        C.CHAT: RW,
        C.EMERGENCY: RW,
    },
    Role.GUEST: {
        C.TIMELINE: R,
        C.BUDGET: _,
        C.VENDORS: _,
        C.GUESTS: _,
        C.TASKS: _,
        C.CHAT: RW,
        C.EMERGENCY: R,
    },
}

#: Roles that administer a wedding: edit it, manage members, read the audit log.
ADMINS = frozenset({Role.COUPLE, Role.PLANNER})


def permissions_for(role: Role, status: WeddingStatus) -> dict[str, Access]:
    """What ``role`` may do on each channel of a wedding in ``status``.

    A completed wedding is an archive: everything readable stays readable, nothing is
    writable. A cancelled wedding cannot be joined at all (checked by the caller).
    """
    row = MATRIX[role]
    if status in (WeddingStatus.COMPLETED, WeddingStatus.CANCELLED):
        return {ch.value: Access(read=a.read, write=False) for ch, a in row.items()}
    return {ch.value: a for ch, a in row.items()}


def can_read(role: Role, channel: Channel) -> bool:
    return MATRIX[role][channel].read


def can_write(role: Role, channel: Channel, status: WeddingStatus) -> bool:
    return permissions_for(role, status)[channel.value].write


#: Allowed status moves; anything not listed is refused with 409.
TRANSITIONS: dict[WeddingStatus, frozenset[WeddingStatus]] = {
    WeddingStatus.PLANNING: frozenset({WeddingStatus.WEDDING_DAY, WeddingStatus.CANCELLED}),
    WeddingStatus.WEDDING_DAY: frozenset({WeddingStatus.COMPLETED, WeddingStatus.CANCELLED}),
    WeddingStatus.COMPLETED: frozenset(),
    WeddingStatus.CANCELLED: frozenset(),
}
