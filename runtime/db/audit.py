"""The audit log: membership changes, joins, leaves and permission denials."""

from __future__ import annotations

import json
import uuid
from typing import Any

from runtime.db.types import Conn


async def record(
    conn: Conn,
    wedding_id: uuid.UUID,
    actor: str,
    action: str,
    ip: str | None,
    **details: Any,
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (wedding_id, actor, action, ip, details) VALUES ($1,$2,$3,$4,$5)",
        wedding_id,
        actor,
        action,
        ip,
        json.dumps(details),
    )


async def page(
    conn: Conn, wedding_id: uuid.UUID, *, before: int | None, limit: int
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT id, actor, action, host(ip) AS ip, at, details FROM audit_log
           WHERE wedding_id = $1 AND ($2::bigint IS NULL OR id < $2)
           ORDER BY id DESC LIMIT $3""",
        wedding_id,
        before,
        limit,
    )
    return [dict(r) | {"details": json.loads(r["details"])} for r in rows]
