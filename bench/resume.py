"""Resume: replaying N missed events to one client, from JetStream and from the archive.

    python bench/resume.py --events 10000 --repeat 5

Starts embedded NATS + PostgreSQL and one `wedsync api` process, creates a wedding with two
members, stores ``--events`` chat events (published straight to JetStream with the
gateway's envelope), then times a client that connects with ``after_seq`` before them until
its ``resumed`` frame, counting the replayed events. Then the archive job moves every event
to PostgreSQL (timed: events archived per second) and the resume is timed again, now served
from the archive. Writes a JSON result file and a PNG beside it (distribution of the
resume times, replay rate per run); also `python -m bench resume`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec
import websockets

from bench.report import Figure, write
from bench.stats import new_histogram, record_seconds
from bench.system import Seat, populate, running_system
from runtime.connections import connect
from runtime.db import scope as db_scope
from streams.definitions import EVENTS
from streams.permissions import Channel, Role
from streams.protocol import Actor, Event
from streams.subjects import wedding_subject
from workers.retention import ArchiveJob


async def resume_once(seat: Seat, after: int, expected: int, batch: bool) -> tuple[float, int]:
    """Seconds from connecting to the ``resumed`` frame; ``batch``: ask for batched frames
    (several newline-separated frames per WebSocket message, docs/protocol.md)."""
    url = seat.ws_url + f"?after_seq={after}" + ("&batch=1" if batch else "")
    started = time.perf_counter()
    replayed = 0
    async with websockets.connect(url, max_size=2**24, subprotocols=seat.subprotocols) as ws:
        resumed = False
        while not resumed:
            for line in str(await asyncio.wait_for(ws.recv(), 60)).split("\n"):
                frame = json.loads(line)
                if frame["type"] == "event":
                    replayed += 1
                elif frame["type"] == "resumed":
                    assert frame["recovered"], frame
                    resumed = True
    elapsed = time.perf_counter() - started
    assert replayed == expected, (replayed, expected)
    return elapsed, replayed


async def timed(seat: Seat, after: int, n: int, repeat: int, batch: bool) -> dict[str, Any]:
    times = [(await resume_once(seat, after, n, batch))[0] for _ in range(repeat)]
    return {
        "median_s": round(statistics.median(times), 3),
        "max_s": round(max(times), 3),
        "events_per_s": round(n / statistics.median(times)),
        "runs_s": [round(t, 4) for t in times],
    }


def figure(args: argparse.Namespace, cases: dict[str, dict[str, Any]]) -> Figure:
    hists = {}
    for label, case in cases.items():
        hists[label] = hist = new_histogram()
        for t in case["runs_s"]:
            record_seconds(hist, t)
    return Figure(
        f"resume: {args.events} missed events, {args.repeat} runs each",
        latency=hists,
        latency_title="time to replay every missed event",
        timeline={
            label: [args.events / t for t in case["runs_s"]] for label, case in cases.items()
        },
        timeline_title="replay rate",
        timeline_xlabel="run",
        timeline_ylabel="events per second",
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    # the archive job runs in-process here, as `wedsync retention run archive` would
    db_scope.process_system("bench: in-process archive job")
    async with running_system(1) as system:
        couple, member = await populate(system, 1, 2, ("planner",))
        wedding = uuid.UUID(couple.wedding)
        async with connect(system.settings, name="bench-resume") as conns:
            enc = msgspec.json.Encoder()
            subject = wedding_subject(wedding, Channel.CHAT)
            head = (await conns.js.stream_info(EVENTS.name)).state.last_seq
            acks = []
            for i in range(args.events):
                event = Event(
                    id=uuid.uuid4().hex,
                    type="message",
                    channel=Channel.CHAT,
                    actor=Actor(couple.user, Role.COUPLE),
                    data={"text": f"message {i} " + "x" * args.pad},
                    ts=time.time(),
                )
                acks.append(conns.js.publish(subject, enc.encode(event), stream=EVENTS.name))
                if len(acks) == 500:
                    await asyncio.gather(*acks)
                    acks = []
            await asyncio.gather(*acks)
            held = await timed(member, head, args.events, args.repeat, False)
            print(f"from JetStream: {held}", file=sys.stderr)
            held_b = await timed(member, head, args.events, args.repeat, True)
            print(f"from JetStream, batch=1: {held_b}", file=sys.stderr)
            job = ArchiveJob(conns.nc, conns.js, conns.pool, system.settings.retention)
            started = time.perf_counter()
            archived, purged = await job.wedding(
                wedding, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
            )
            archive_s = time.perf_counter() - started
            assert archived == purged == args.events, (archived, purged)
            print(f"archived {archived} in {archive_s:.2f} s", file=sys.stderr)
            from_archive = await timed(member, head, args.events, args.repeat, False)
            print(f"from the archive: {from_archive}", file=sys.stderr)
            archive_b = await timed(member, head, args.events, args.repeat, True)
            print(f"from the archive, batch=1: {archive_b}", file=sys.stderr)
    return {
        "scenario": "resume",
        "events": args.events,
        "event_bytes": args.pad + 90,
        "repeat": args.repeat,
        "from_jetstream": held,
        "from_archive": from_archive,
        "from_jetstream_batched": held_b,
        "from_archive_batched": archive_b,
        "archive_job": {
            "seconds": round(archive_s, 2),
            "events_per_s": round(args.events / archive_s),
        },
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=10000)
    p.add_argument("--pad", type=int, default=100, help="extra bytes of text per event")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("bench/results/resume.json"))
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    cases = {
        "from JetStream": result["from_jetstream"],
        "from JetStream, batch=1": result["from_jetstream_batched"],
        "from the archive": result["from_archive"],
        "from the archive, batch=1": result["from_archive_batched"],
    }
    write(args.out.parent, args.out.stem, result, figure(args, cases))


if __name__ == "__main__":
    main()
