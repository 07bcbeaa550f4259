"""The python-socketio peer of `python -m bench peers`: AsyncServer with rooms on uvicorn.

    python -m bench.peers.socketio_server PORT

"join" puts the socket in a room; "msg" is broadcast to the socket's room, sender
included, and acknowledged to the sender (the handler's return value is the ack). Served
with the same uvicorn WebSocket options as `wedsync api`.
"""

from __future__ import annotations

import sys
from typing import Any

import socketio
import uvicorn

sio = socketio.AsyncServer(async_mode="asgi", transports=["websocket"], cors_allowed_origins=[])
rooms: dict[str, str] = {}  # sid -> its room


@sio.on("join")  # type: ignore[untyped-decorator,unused-ignore]
async def join(sid: str, room: str) -> str:
    await sio.enter_room(sid, room)
    rooms[sid] = room
    return "ok"


@sio.on("msg")  # type: ignore[untyped-decorator,unused-ignore]
async def msg(sid: str, data: Any) -> None:
    await sio.emit("msg", data, room=rooms[sid])


@sio.on("disconnect")  # type: ignore[untyped-decorator,unused-ignore]
async def disconnect(sid: str, *_: Any) -> None:
    rooms.pop(sid, None)


def main() -> None:
    port = int(sys.argv[1])
    uvicorn.run(
        socketio.ASGIApp(sio),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws_per_message_deflate=False,
        ws_max_size=1024 * 1024,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
