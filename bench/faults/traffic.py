"""A wedding in use while a service is away: members chatting, mentioning and changing
state through the Python client (client/), each keeping what it was told.

Three members (couple, planner, family) on the gateways round-robin, each with a
``WeddingClient`` (it reconnects, resumes, and re-sends what was not acknowledged with the
same ids), and an aunt who never connects: she is only mentioned, and hears about it in
her inbox (and by email when the workers have SMTP). Every message carries its client id
in ``data.ref`` so that what the stream holds can be matched to what was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from app.auth import issue_token
from client import ClientClosed, ServerError, WeddingClient
from client.backoff import Backoff
from config.settings import AuthSettings
from streams.protocol import EventFrame, ResumedFrame
from streams.state import State, fold

ROLES = ("couple", "planner", "family")
CHAT, TASKS = "chat", "tasks"  # channels every one of ROLES reads and writes


@dataclass
class Send:
    """One message or change as its sender saw it."""

    kind: str  # "message" | "change"
    id: str
    user: str
    at: float  # monotonic time it was handed to the client
    data: dict[str, Any] = field(default_factory=dict)
    acked_at: float | None = None
    seq: int | None = None  # its seq in WEDSYNC_EVENTS (message) or WEDSYNC_CHANGES (change)
    error: str | None = None  # the server's refusal, or why the client gave up

    @property
    def done(self) -> bool:
        return self.acked_at is not None or self.error is not None


class Member:
    """One connected member: its client, what it sent, what it received and folded."""

    def __init__(self, user: str, role: str, client: WeddingClient) -> None:
        self.user, self.role, self.client = user, role, client
        self.start_seq = 0  # the welcome's head: everything after it must arrive
        self.sends: list[Send] = []
        self.received: list[tuple[int, dict[str, Any]]] = []  # (seq, event) in arrival order
        self.arrived: dict[int, float] = {}  # seq -> monotonic arrival time
        self.state: State = {}
        self.tombstones: dict[tuple[str, str], int] = {}
        self.unrecovered = 0  # resumes the server could not serve (a gap to reload over)
        self.task = f"t-{user}"  # the task this member edits
        self._reader: asyncio.Task[None] | None = None
        self._flights: set[asyncio.Task[None]] = set()
        self._n = 0

    def start(self) -> None:
        assert self.client.welcome is not None
        self.start_seq = self.client.welcome.last_seq
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ClientClosed):
            async for item in self.client.events():
                if isinstance(item, ResumedFrame):
                    self.unrecovered += not item.recovered
                    continue
                assert isinstance(item, EventFrame)
                event = msgspec.to_builtins(item.event)
                self.received.append((item.seq, event))
                self.arrived[item.seq] = time.monotonic()
                fold(self.state, self.tombstones, event)

    @property
    def last_seq(self) -> int:
        return self.client.last_seq or 0

    def _next_id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}-{self.user}-{self._n}"

    def say(self, text: str) -> Send:
        """Send a chat message (in the background); its record."""
        cid = self._next_id("m")
        s = Send("message", cid, self.user, time.monotonic(), {"text": text, "ref": cid})
        self._fly(s, self.client.send(CHAT, s.data, id=cid))
        return s

    def change(self, op: str, fields: dict[str, Any], base: int | None) -> Send:
        """Send a change of this member's task (in the background); its record."""
        cid = self._next_id("c")
        s = Send("change", cid, self.user, time.monotonic(), {"op": op, "fields": fields})
        self._fly(s, self.client.change(TASKS, self.task, op, fields, base, id=cid))
        return s

    def _fly(self, s: Send, request: Any) -> None:
        self.sends.append(s)

        async def fly() -> None:
            try:
                s.seq = await request
                s.acked_at = time.monotonic()
            except ServerError as exc:
                s.error = exc.code
            except ClientClosed as exc:
                s.error = f"closed: {exc}"

        task = asyncio.create_task(fly())
        self._flights.add(task)
        task.add_done_callback(self._flights.discard)

    @property
    def unsettled(self) -> list[Send]:
        return [s for s in self.sends if not s.done]

    def outcomes(self) -> set[str]:
        """Client ids of this member's changes whose outcome event it received."""
        out = set()
        for _, e in self.received:
            change = e["data"].get("change") if isinstance(e.get("data"), dict) else None
            if isinstance(change, dict) and change.get("by") == self.user:
                out.add(change["id"])
        return out

    async def close(self) -> None:
        await self.client.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for t in list(self._flights):
            t.cancel()


class Wedding:
    """A wedding created over HTTP: ``members`` connected, ``aunt`` only ever mentioned."""

    def __init__(self, urls: list[str], auth: AuthSettings) -> None:
        self.urls, self.auth = urls, auth
        self.id = ""
        self.couple = "couple-" + uuid.uuid4().hex[:8]
        self.aunt = "aunt-" + uuid.uuid4().hex[:8]
        self.members: list[Member] = []

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + issue_token(self.auth, user)}

    async def request(self, method: str, path: str, user: str, **kw: Any) -> Any:
        """One HTTP call as ``user`` (any gateway); raises on failure."""
        async with httpx.AsyncClient(base_url=self.urls[0], timeout=10) as c:
            r = await c.request(method, path, headers=self.headers(user), **kw)
            r.raise_for_status()
            return r.json() if r.content else None

    async def create(
        self, *, aunt_email: str | None = None, client_backoff: Backoff | None = None
    ) -> None:
        """The wedding, its members (connected, past the welcome) and the aunt."""
        body = {"name": "Drill", "date": "2027-06-12", "timezone": "UTC"}
        self.id = (await self.request("POST", "/api/weddings", self.couple, json=body))["id"]
        users = [self.couple]
        for role in ROLES[1:]:
            user = f"{role}-{uuid.uuid4().hex[:8]}"
            await self.request(
                "PUT", f"/api/weddings/{self.id}/members/{user}", self.couple, json={"role": role}
            )
            users.append(user)
        aunt = {"role": "family", "display_name": "Aunt May"}
        if aunt_email:
            aunt["email"] = aunt_email
        await self.request(
            "PUT", f"/api/weddings/{self.id}/members/{self.aunt}", self.couple, json=aunt
        )
        # mentions reach her by email when there is a mail server, in-app always
        await self.request(
            "PUT",
            f"/api/weddings/{self.id}/notification-preferences",
            self.aunt,
            json={"channels": {"mentions": ["email"] if aunt_email else []}},
        )
        for i, (user, role) in enumerate(zip(users, ROLES, strict=True)):
            joined = await self.request("POST", f"/api/collaboration/join/{self.id}", user)
            client = WeddingClient(
                self.urls[i % len(self.urls)],
                self.id,
                joined["session_token"],
                backoff=client_backoff or Backoff(base=0.1, cap=2.0),
            )
            await client.start()
            member = Member(user, role, client)
            member.start()
            self.members.append(member)

    async def history(self) -> list[dict[str, Any]]:
        """Every event of the wedding in the stream (as the couple: every channel)."""
        out: list[dict[str, Any]] = []
        after: int | None = 0
        while after is not None:
            page = await self.request(
                "GET",
                f"/api/weddings/{self.id}/events",
                self.couple,
                params={"after_seq": after, "limit": 1000},
            )
            out += page["events"]
            after = page["next_after_seq"]
        return out

    async def state(self, user: str) -> dict[str, Any]:
        body: dict[str, Any] = await self.request("GET", f"/api/weddings/{self.id}/state", user)
        return body

    async def inbox(self) -> list[dict[str, Any]]:
        """The aunt's notifications of this wedding."""
        out: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:
            page = await self.request(
                "GET",
                "/api/notifications",
                self.aunt,
                params={"wedding_id": self.id, "offset": offset, "limit": 200},
            )
            out += page["notifications"]
            offset = page["next"]
        return out

    async def deliveries(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        before: int | None = None
        while True:
            params: dict[str, Any] = {"limit": 200}
            if before is not None:
                params["before"] = before
            page = await self.request(
                "GET",
                f"/api/weddings/{self.id}/notifications/deliveries",
                self.couple,
                params=params,
            )
            out += page["deliveries"]
            before = page["next_before"]
            if before is None:
                return out

    async def close(self) -> None:
        await asyncio.gather(*(m.close() for m in self.members), return_exceptions=True)


class Traffic:
    """Members chatting at ``rate`` messages/s each (every ``mention_every``-th one
    mentions the aunt) and updating their task every ``change_every`` s, open loop: a
    send that waits for its ack does not hold back the next one."""

    def __init__(
        self,
        wedding: Wedding,
        *,
        rate: float = 4.0,
        change_every: float = 1.5,
        mention_every: int = 8,
    ) -> None:
        self.wedding = wedding
        self.rate, self.change_every, self.mention_every = rate, change_every, mention_every
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def seed(self, timeout: float = 30.0) -> None:
        """Each member creates its task and sees it created (before any fault)."""
        sends = [m.change("create", {"title": f"{m.user} 0"}, None) for m in self.wedding.members]
        deadline = time.monotonic() + timeout
        while not all(
            s.id in m.outcomes() for s, m in zip(sends, self.wedding.members, strict=True)
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the seed tasks were not created: is the conflicts worker up?")
            await asyncio.sleep(0.05)

    def start(self) -> None:
        for k, m in enumerate(self.wedding.members):
            self._tasks.append(asyncio.create_task(self._chatter(m, k)))

    def burst(self, messages: int = 5, changes: int = 5) -> list[Send]:
        """A burst from every member at once (fired just before a fault: work in flight)."""
        out = []
        for m in self.wedding.members:
            for _ in range(changes):
                out.append(m.change("update", {"title": f"{m.user} burst {len(m.sends)}"}, 1))
            for _ in range(messages):
                out.append(m.say("a burst"))
        return out

    async def _chatter(self, m: Member, k: int) -> None:
        t0, n = time.monotonic(), 0
        next_change = t0 + self.change_every * (k + 1) / len(self.wedding.members)
        while not self._stop.is_set():
            n += 1
            if n % self.mention_every == k % self.mention_every:
                m.say(f"@{self.wedding.aunt} can you bring the cake stand? ({n})")
            else:
                m.say(f"message {n}")
            now = time.monotonic()
            if now >= next_change:
                # updates are all based on version 1: last writer wins, versions go 1..N
                m.change("update", {"title": f"{m.user} {n}"}, 1)
                next_change += self.change_every
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, t0 + n / self.rate - now))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    @property
    def sends(self) -> Iterable[Send]:
        for m in self.wedding.members:
            yield from m.sends
