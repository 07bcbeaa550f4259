"""Who may touch a wedding: membership (404 otherwise) and admin roles (403, audited)."""

from __future__ import annotations

import uuid

from app.auth.tokens import Identity
from app.errors import Forbidden, NotFound
from app.weddings import store
from runtime.db import audit
from runtime.db.types import Conn
from streams.permissions import ADMINS, Role


async def require_member(conn: Conn, wedding_id: uuid.UUID, who: Identity) -> store.Membership:
    """The caller's membership; a wedding they are not in does not exist for them."""
    found = await store.membership(conn, wedding_id, who.user_id)
    if found is None:
        raise NotFound("wedding not found")
    return found


async def require_role(
    conn: Conn,
    m: store.Membership,
    who: Identity,
    ip: str | None,
    action: str,
    allowed: frozenset[Role] = ADMINS,
) -> None:
    if m.role not in allowed:
        await audit.record(
            conn,
            m.wedding_id,
            who.user_id,
            "permission_denied",
            ip,
            attempted=action,
            role=m.role.value,
        )
        raise Forbidden(f"role {m.role.value} may not {action.replace('_', ' ')}")
