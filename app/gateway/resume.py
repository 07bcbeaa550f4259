"""Resume: replay what a client missed, then hand over to live events (docs/protocol.md,
"Resume")."""

from __future__ import annotations

from app.gateway.connection import Lifecycle, frame_text
from app.gateway.context import SocketContext
from app.gateway.hub import GUESTS
from runtime.eventlog import events_between, fully_held, last_seq, same_epoch
from streams.protocol import Close, ErrorCode, ResumedFrame


async def resume(
    ctx: SocketContext, after_seq: int, epoch: str | None, on_connect: bool = False
) -> None:
    """Replay what the client missed, then hand over to live events: no gap, no duplicate.

    A position from another epoch of the stream (it was recreated) means nothing here:
    nothing is replayed and ``recovered`` is false, so the client reloads state over HTTP.
    A replay that fails raises (the socket closes with 4002 and the client resumes again):
    the live events held meanwhile are never released without the ``resumed`` before them.
    """
    conns, hub, conn = ctx.conns, ctx.hub, ctx.conn
    if conn.state is Lifecycle.REPLAYING:
        conn.refuse(ErrorCode.INVALID, "a resume is already running")
        return
    budget = hub.replays.start(conn.wedding_id, conn.user_id)
    if budget is None:
        if on_connect:  # it is not at the welcome's position: going live would be a gap
            conn.request_close(
                Close.TRY_LATER, f"{ErrorCode.RATE_LIMITED}: too many resumes, retry later"
            )
        else:
            limit = f"over {hub.replays.rate:g} replayed events per second: resume later"
            conn.refuse(ErrorCode.RATE_LIMITED, limit)
        return
    conn.start_replay()  # live events are held from here
    try:
        # what is stored now (the room's cached head may name a since-purged event);
        # anything newer is held while we replay
        upto = await last_seq(conns.js, conns.pool, conn.wedding_id)
        if (epoch is not None and not same_epoch(epoch, hub.epoch)) or after_seq > upto:
            recovered = False  # a position from a recreated stream: skip to now
        else:
            recovered = await fully_held(conns.js, conns.pool, conn.wedding_id, after_seq)
            conn.last_sent = after_seq
            async for seq, channel, data in events_between(
                conns.js, conns.pool, conn.wedding_id, after_seq, upto
            ):
                if channel == GUESTS and hub.contacts is not None:
                    data = hub.contacts.open_event_bytes(data)
                budget.spend(1)
                await conn.replayed(seq, channel, data)
        conn.last_sent = max(conn.last_sent, upto)
        done = ResumedFrame(
            after_seq=after_seq, last_seq=conn.last_sent, recovered=recovered, epoch=hub.epoch
        )
        await conn.queue.put(frame_text(done))
    finally:
        conn.replay_stopped()
    conn.finish_replay()  # held live events after the replayed ones, none twice
