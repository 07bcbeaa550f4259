"""The load generator: raw WebSockets from several processes, the same code for every target.

Each load process (``spawn``: no inherited event loop or sockets) opens its share of the
seats from a rotating set of 127.x source addresses (each has its own ~28 000 ephemeral
ports), then on "go" sends chat messages open-loop at ``rate`` per socket and/or a ping
per socket every ``heartbeat`` seconds, until "stop". It reports cumulative counters once a
second (the main process prints them: live progress) and, at the end, its histograms and
per-second counts, which the main process merges.

What a target speaks is a `bench.protocols.Wire`; nothing here knows WedSync from socket.io.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import queue
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import websockets
from hdrh.histogram import HdrHistogram
from websockets.exceptions import ConnectionClosed

from bench.protocols import WIRES, Kind, Opened
from bench.seats import Seat, raise_fd_limit
from bench.stats import Timeline, merged, new_histogram, record_seconds
from client.backoff import Backoff

COUNTERS = (
    "opened",
    "connect_failures",
    "gave_up",
    "sent",
    "send_failures",
    "acked",
    "delivered",
    "errors",
    "shed",
    "pings",
    "pongs",
    "dropped",
    "reconnects",  # sockets opened again after a drop (--reconnect)
    "resumed",  # of those, the replay asked for came back complete
    "duplicates",  # events at or below the socket's last seq: seen twice, not counted
)


@dataclass(frozen=True)
class LoadSpec:
    """One load process's work."""

    wire: str  # a key of bench.protocols.WIRES
    seats: list[Seat]
    epoch: float  # wall-clock zero of every per-second count
    sources: tuple[str, ...] = ("127.0.0.1",)
    rate: float = 0.0  # chat messages per second per socket
    duration: float = 0.0  # seconds of sending after "go"
    heartbeat: float = 0.0  # seconds between pings on each socket (0: none)
    resend: bool = True  # send an `overloaded` frame again after retry_after, as the SDK does
    pad: int = 32  # bytes of text per message (on top of the timestamp)
    connect_concurrency: int = 100
    connect_timeout: float = 60.0
    retries: int = 3
    # a dropped socket connects again and resumes after the last seq it saw, with the SDK's
    # full-jitter backoff (sdk/js/src/backoff.ts), on its own gateway or the next of these
    reconnect: bool = False
    gateways: tuple[str, ...] = ()
    backoff: Backoff = Backoff()


_RETRY = Backoff(base=0.5)  # a first connect refused: retried soon, spread out


class _Gone(Exception):
    """A reconnecting socket that could not open again before the run stopped."""


class _Socket:
    __slots__ = ("dropped_at", "epoch", "ping_at", "seat", "seq", "ws")

    def __init__(self, seat: Seat, ws: Any, epoch: str | None) -> None:
        self.seat, self.ws, self.epoch = seat, ws, epoch
        self.ping_at = 0.0  # send time of the unanswered ping, if any
        self.seq = 0  # the last event's stream sequence seen (resume after it)
        self.dropped_at = 0.0  # when a reconnecting socket lost its connection


class Loader:
    """The inside of one load process."""

    def __init__(self, index: int, spec: LoadSpec, reports: Any) -> None:
        self.index, self.spec, self.reports = index, spec, reports
        self.wire = WIRES[spec.wire]
        self.timeline = Timeline(spec.epoch)
        self.delivery, self.ack = new_histogram(), new_histogram()
        self.connect, self.rtt = new_histogram(), new_histogram()
        self.recovery = new_histogram()  # drop -> `resumed` of a reconnecting socket
        self.rehandshake = new_histogram()  # connect -> welcome of a reconnect that worked
        self.window = new_histogram()  # delivery latency since the last tick
        self.by_second: dict[int, HdrHistogram] = {}  # delivery latency per wall second
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.pending: dict[int, float] = {}  # ack id -> send time
        # ids unique per run and loader: a server that deduplicates by (session, id), as
        # WedSync does, must not take a later run's messages for re-sends of an earlier one
        self.id_base = (int(spec.epoch * 1000) % 10**7) * 10**8 + index * 10**7
        self.sockets: list[_Socket] = []
        self.readers: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak refs
        self.resends: set[asyncio.Task[None]] = set()  # shed frames waiting for retry_after
        self.failures: list[str] = []  # a sample, for the report
        self.stopping = self.sending_done = False
        self.connect_s = 0.0
        # wall-clock span of the traffic: rates are over it, not over the nominal duration
        # (a server that falls behind is still acking during the drain)
        self.first_sent = self.last_ack = self.last_delivery = 0.0

    # -- connecting ---------------------------------------------------------------------
    async def _attempt(self, url: str, seat: Seat, source: str) -> tuple[Any, Opened] | None:
        """One connect and handshake; None (the failure counted) if either failed."""
        timeout = self.spec.connect_timeout
        try:
            ws = await websockets.connect(
                url,
                compression=None,
                ping_interval=None,
                max_size=2**22,
                open_timeout=timeout,
                close_timeout=1,
                proxy=None,
                local_addr=(source, 0),
            )
        except Exception as exc:
            self._failed(exc)
            return None
        try:
            return ws, await self.wire.handshake(ws, seat, timeout)
        except Exception as exc:
            self._failed(exc)
            await ws.close()
            return None

    async def _open(self, k: int, seat: Seat, sem: asyncio.Semaphore) -> None:
        source = self.spec.sources[k % len(self.spec.sources)]
        async with sem:
            for attempt in range(self.spec.retries + 1):
                started = time.perf_counter()
                got = await self._attempt(self.wire.url(seat), seat, source)
                if got is not None:
                    ws, opened = got
                    record_seconds(self.connect, time.perf_counter() - started)
                    sock = _Socket(seat, ws, opened.epoch)
                    self.sockets.append(sock)
                    self.counts["opened"] += 1
                    self.timeline.add("opened")
                    reader = asyncio.create_task(self._read(sock, opened.rest))
                    self.readers.add(reader)
                    reader.add_done_callback(self.readers.discard)
                    return
                # full jitter: a refused burst must not come back all at once
                await asyncio.sleep(_RETRY.delay(attempt))
        self.counts["gave_up"] += 1

    def _second(self, t: float) -> HdrHistogram:
        second = max(0, int(t - self.spec.epoch))
        hist = self.by_second.get(second)
        if hist is None:
            hist = self.by_second[second] = new_histogram()
        return hist

    def _failed(self, exc: BaseException) -> None:
        self.counts["connect_failures"] += 1
        if len(self.failures) < 5:
            self.failures.append(repr(exc)[:200])

    # -- receiving ----------------------------------------------------------------------
    async def _read(self, sock: _Socket, first: Sequence[str | bytes]) -> None:
        while True:
            try:
                await self._frames(sock, first)
                async for message in sock.ws:
                    await self._frames(sock, self.wire.split(message))
            except ConnectionClosed:
                pass
            if self.stopping:
                return
            self.counts["dropped"] += 1
            if not self.spec.reconnect:
                return
            try:
                first = await self._reopen(sock)
            except _Gone:
                return

    async def _reopen(self, sock: _Socket) -> Sequence[str | bytes]:
        """Connect again (own gateway first, then the others) and ask for what was missed."""
        spec, wire = self.spec, self.wire
        sock.dropped_at = time.time()
        bases = [sock.seat.url, *(g for g in spec.gateways if g != sock.seat.url)]
        attempt = 0
        while not self.stopping:
            await asyncio.sleep(spec.backoff.delay(attempt))
            url = wire.url(sock.seat, bases[attempt % len(bases)], sock.seq, sock.epoch)
            attempt += 1
            started = time.perf_counter()
            got = await self._attempt(url, sock.seat, spec.sources[attempt % len(spec.sources)])
            if got is None:
                continue
            ws, opened = got
            record_seconds(self.rehandshake, time.perf_counter() - started)
            sock.ws = ws
            sock.epoch = opened.epoch or sock.epoch
            self.counts["reconnects"] += 1
            self.timeline.add("reconnects")
            return opened.rest
        raise _Gone

    async def _frames(self, sock: _Socket, frames: Sequence[str | bytes]) -> None:
        wire, counts, now = self.wire, self.counts, time.time
        for raw in frames:
            kind, value, seq = wire.parse(raw)
            if kind is Kind.DELIVERY:
                if seq:
                    if seq <= sock.seq:
                        counts["duplicates"] += 1
                        continue
                    sock.seq = seq
                t = now()
                record_seconds(self.delivery, t - value)
                record_seconds(self.window, t - value)
                record_seconds(self._second(t), t - value)
                counts["delivered"] += 1
                self.timeline.add("delivered", now=t)
                self.last_delivery = t
            elif kind is Kind.ACK:
                sent_at = self.pending.pop(int(value), None)
                if sent_at is not None:
                    t = now()
                    record_seconds(self.ack, t - sent_at)
                    counts["acked"] += 1
                    self.timeline.add("acked", now=t)
                    self.last_ack = t
            elif kind is Kind.PONG and sock.ping_at:
                record_seconds(self.rtt, now() - sock.ping_at)
                sock.ping_at = 0.0
                counts["pongs"] += 1
            elif kind is Kind.SERVER_PING:
                await sock.ws.send(wire.pong_reply)
            elif kind is Kind.SHED and not self.spec.resend:
                counts["shed"] += 1
                counts["errors"] += 1
                self.pending.pop(int(value), None)
            elif kind is Kind.SHED:
                counts["shed"] += 1
                resend = asyncio.create_task(self._resend(sock, int(value), wire.retry_after(raw)))
                self.resends.add(resend)
                resend.add_done_callback(self.resends.discard)
            elif kind is Kind.RESUMED and sock.dropped_at:
                record_seconds(self.recovery, now() - sock.dropped_at)
                sock.dropped_at = 0.0
                counts["resumed"] += 1
            elif kind is Kind.ERROR:
                counts["errors"] += 1

    # -- sending ------------------------------------------------------------------------
    async def _send(self) -> None:
        """Open loop: the n-th message is due at n / (rate x sockets) whatever happened to
        the earlier ones, so a slow server shows up as latency, not as a lower offer."""
        socks, spec = self.sockets, self.spec
        total = spec.rate * len(socks)
        if total <= 0 or spec.duration <= 0:
            return
        pad, clock = "x" * spec.pad, time.perf_counter
        t0, n = clock(), 0
        while (elapsed := clock() - t0) < spec.duration:
            due = min(int(elapsed * total) + 1, int(spec.duration * total))
            while n < due:
                sock = socks[n % len(socks)]
                n += 1  # ack ids from 1: socket.io's join uses 0
                ack_id = self.id_base + n
                sent_at = time.time()
                self.pending[ack_id] = sent_at
                try:
                    await sock.ws.send(self.wire.message(ack_id, sent_at, pad))
                except ConnectionClosed:
                    self.pending.pop(ack_id, None)
                    self.counts["send_failures"] += 1
                    continue
                self.counts["sent"] += 1
                self.timeline.add("sent", now=sent_at)
                self.first_sent = self.first_sent or sent_at
            await asyncio.sleep(max(0.0, n / total - (clock() - t0)))

    async def _resend(self, sock: _Socket, ack_id: int, wait: float) -> None:
        """A shed frame again, same id and send time (its latency includes the wait)."""
        sent_at = self.pending.get(ack_id)
        if sent_at is None:
            return
        await asyncio.sleep(wait)
        try:
            await sock.ws.send(self.wire.message(ack_id, sent_at, "x" * self.spec.pad))
        except ConnectionClosed:
            self.pending.pop(ack_id, None)
            self.counts["send_failures"] += 1

    async def _heartbeat(self) -> None:
        """One ping per socket every ``heartbeat`` seconds, spread over the interval."""
        frame = self.wire.ping()
        if frame is None or self.spec.heartbeat <= 0 or not self.sockets:
            return
        period, clock = self.spec.heartbeat, time.perf_counter
        while True:
            start, socks = clock(), list(self.sockets)
            for i, sock in enumerate(socks):
                if i % 32 == 0:
                    await asyncio.sleep(max(0.0, start + period * i / len(socks) - clock()))
                sock.ping_at = time.time()
                try:
                    await sock.ws.send(frame)
                    self.counts["pings"] += 1
                except ConnectionClosed:
                    pass
            await asyncio.sleep(max(0.0, start + period - clock()))

    # -- reporting ----------------------------------------------------------------------
    def _snapshot(self) -> dict[str, Any]:
        window = self.window
        p99 = window.get_value_at_percentile(99) if window.get_total_count() else 0
        window.reset()
        return {**self.counts, "window_p99_us": p99, "sending_done": self.sending_done}

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.reports.put(("tick", self.index, self._snapshot()))

    def final(self) -> dict[str, Any]:
        return {
            **self.counts,
            "connect_s": self.connect_s,
            "failures": self.failures,
            "delivery": self.delivery.encode(),
            "ack": self.ack.encode(),
            "connect": self.connect.encode(),
            "rtt": self.rtt.encode(),
            "recovery": self.recovery.encode(),
            "rehandshake": self.rehandshake.encode(),
            "timeline": self.timeline.series,
            "pid": os.getpid(),
            "by_second": {s: h.encode() for s, h in self.by_second.items()},
            "first_sent": self.first_sent,
            "last_ack": self.last_ack,
            "last_delivery": self.last_delivery,
        }

    async def run(self, go: Any, stop: Any) -> None:
        loop = asyncio.get_running_loop()
        ticker = asyncio.create_task(self._tick())
        started = time.perf_counter()
        sem = asyncio.Semaphore(self.spec.connect_concurrency)
        await asyncio.gather(*(self._open(k, s, sem) for k, s in enumerate(self.spec.seats)))
        self.connect_s = time.perf_counter() - started
        self.reports.put(("connected", self.index, dict(self.counts)))
        await loop.run_in_executor(None, _wait_for, go)
        heartbeat = asyncio.create_task(self._heartbeat())
        await self._send()
        self.sending_done = True
        await loop.run_in_executor(None, _wait_for, stop)
        self.stopping = True
        for resend in list(self.resends):
            resend.cancel()
        heartbeat.cancel()
        ticker.cancel()
        self.reports.put(("done", self.index, self.final()))
        closing = [asyncio.create_task(s.ws.close()) for s in self.sockets]
        if closing:
            await asyncio.wait(closing, timeout=5)


def _wait_for(event: Any) -> None:
    """Wait for the main process's signal; exit if the main process died meanwhile."""
    parent = os.getppid()
    while not event.wait(0.5):
        if os.getppid() != parent:
            os._exit(1)


def loader_main(index: int, spec: LoadSpec, reports: Any, go: Any, stop: Any) -> None:
    raise_fd_limit()
    try:
        import uvloop

        uvloop.install()  # the generator's own CPU is part of every number on 2 cores
    except ImportError:
        pass
    asyncio.run(Loader(index, spec, reports).run(go, stop))


def split(seats: list[Seat], loaders: int) -> list[list[Seat]]:
    """Round-robin: a room's members land on different processes (as its real members
    would be different machines), and every process gets a near-equal share."""
    return [seats[i::loaders] for i in range(loaders) if seats[i::loaders]]


@dataclass
class PoolResult:
    counts: dict[str, int]
    delivery: HdrHistogram
    ack: HdrHistogram
    connect: HdrHistogram
    rtt: HdrHistogram
    recovery: HdrHistogram  # drop -> resumed, per reconnecting socket
    rehandshake: HdrHistogram  # connect -> welcome of each successful reconnect
    timeline: dict[str, list[int]]
    connect_s: float
    traffic_span: dict[str, float]  # "acked"/"delivered": seconds from first send to last one
    failures: list[str] = field(default_factory=list)
    # delivery latency by wall second since the epoch (the per-second tails)
    by_second: dict[int, HdrHistogram] = field(default_factory=dict)

    def p99_per_second_ms(self) -> list[float]:
        """p99 of the deliveries of each second, from the first second with any, in ms."""
        if not self.by_second:
            return []
        first, last = min(self.by_second), max(self.by_second)
        empty = new_histogram()
        return [
            round(self.by_second.get(s, empty).get_value_at_percentile(99) / 1000, 1)
            for s in range(first, last + 1)
        ]


class LoaderPool:
    """Starts the load processes and follows them from the main process."""

    def __init__(self, label: str, specs: list[LoadSpec]) -> None:
        ctx = mp.get_context("spawn")
        self.label, self.specs = label, specs
        self.reports: Any = ctx.Queue()
        self.go_event, self.stop_event = ctx.Event(), ctx.Event()
        self.procs = [
            ctx.Process(
                target=loader_main,
                daemon=True,
                name=f"loader-{i}",
                args=(i, spec, self.reports, self.go_event, self.stop_event),
            )
            for i, spec in enumerate(specs)
        ]
        self.latest: dict[int, dict[str, Any]] = {}
        self._printed: dict[str, float] = {}
        self._printed_at = 0.0
        self.epoch = specs[0].epoch

    def start(self) -> None:
        for p in self.procs:
            p.start()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = dict.fromkeys(COUNTERS, 0)
        for snap in self.latest.values():
            for k in COUNTERS:
                out[k] += snap.get(k, 0)
        out["window_p99_us"] = max(
            (s.get("window_p99_us", 0) for s in self.latest.values()), default=0
        )
        return out

    @property
    def sending_done(self) -> bool:
        return len(self.latest) == len(self.procs) and all(
            s.get("sending_done") for s in self.latest.values()
        )

    async def _next(self, timeout: float) -> tuple[str, int, dict[str, Any]] | None:
        def get() -> tuple[str, int, dict[str, Any]] | None:
            try:
                item: tuple[str, int, dict[str, Any]] = self.reports.get(timeout=timeout)
                return item
            except queue.Empty:
                return None

        item = await asyncio.get_running_loop().run_in_executor(None, get)
        if item is None:
            for p in self.procs:
                if p.exitcode is not None and p.exitcode != 0:
                    raise RuntimeError(f"{p.name} exited with {p.exitcode}")
        elif item[0] in ("tick", "connected"):
            self.latest[item[1]] = {**self.latest.get(item[1], {}), **item[2]}
        return item

    def _progress(self) -> None:
        """One line a second: totals so far and rates over the last second."""
        now = time.perf_counter()
        if now - self._printed_at < 1.0:
            return
        totals = self.totals()
        span = now - self._printed_at if self._printed_at else 1.0
        parts = [f"open {int(totals['opened'] + totals['reconnects'] - totals['dropped'])}"]
        for key in ("sent", "acked", "delivered", "pongs"):
            delta = totals[key] - self._printed.get(key, 0)
            if totals[key]:
                parts.append(f"{key} {delta / span:,.0f}/s")
        for key in (
            "connect_failures",
            "gave_up",
            "errors",
            "dropped",
            "reconnects",
            "send_failures",
        ):
            if totals[key]:
                parts.append(f"{key} {int(totals[key])}")
        if totals["window_p99_us"]:
            parts.append(f"p99 {totals['window_p99_us'] / 1000:.1f} ms")
        elapsed = time.time() - self.epoch
        print(f"[{self.label} {elapsed:5.1f}s] " + "  ".join(parts), file=sys.stderr, flush=True)
        self._printed, self._printed_at = totals, now

    async def wait_connected(self, timeout: float) -> None:
        connected: set[int] = set()
        deadline = time.perf_counter() + timeout
        while len(connected) < len(self.procs):
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{self.label}: sockets not open after {timeout:g} s")
            item = await self._next(0.25)
            if item is not None and item[0] == "connected":
                connected.add(item[1])
            self._progress()

    def go(self) -> None:
        self.go_event.set()

    async def watch(
        self,
        seconds: float,
        until: Callable[[LoaderPool], bool] | None = None,
        timeout: float = 0.0,
    ) -> bool:
        """Print progress for ``seconds``; then, with ``until``, keep going until it holds
        or ``timeout`` more seconds pass. Whether ``until`` held."""
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            await self._next(0.25)
            self._progress()
        if until is None:
            return True
        deadline = time.perf_counter() + timeout
        while not until(self):
            if time.perf_counter() > deadline:
                return False
            await self._next(0.25)
            self._progress()
        return True

    async def finish(self, timeout: float = 60.0) -> PoolResult:
        self.stop_event.set()
        finals: dict[int, dict[str, Any]] = {}
        deadline = time.perf_counter() + timeout
        while len(finals) < len(self.procs):
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{self.label}: load processes did not report")
            item = await self._next(0.5)
            if item is not None and item[0] == "done":
                finals[item[1]] = item[2]
        loop = asyncio.get_running_loop()
        for p in self.procs:
            await loop.run_in_executor(None, p.join, 15)
            if p.is_alive():
                p.terminate()
        timeline = Timeline(self.epoch)
        for f in finals.values():
            timeline.merge(f["timeline"])
        values = list(finals.values())
        return PoolResult(
            counts={k: sum(f[k] for f in values) for k in COUNTERS},
            delivery=merged([f["delivery"] for f in values]),
            ack=merged([f["ack"] for f in values]),
            connect=merged([f["connect"] for f in values]),
            rtt=merged([f["rtt"] for f in values]),
            recovery=merged([f["recovery"] for f in values]),
            rehandshake=merged([f["rehandshake"] for f in values]),
            timeline=timeline.series,
            connect_s=max(f["connect_s"] for f in values),
            traffic_span=_spans(values),
            failures=[x for f in values for x in f["failures"]][:10],
            by_second={
                s: merged([f["by_second"][s] for f in values if s in f["by_second"]])
                for s in {s for f in values for s in f["by_second"]}
            },
        )


def _spans(finals: list[dict[str, Any]]) -> dict[str, float]:
    starts = [f["first_sent"] for f in finals if f["first_sent"]]
    if not starts:
        return {"acked": 0.0, "delivered": 0.0}
    start = min(starts)
    return {
        "acked": max(0.0, max(f["last_ack"] for f in finals) - start),
        "delivered": max(0.0, max(f["last_delivery"] for f in finals) - start),
    }
