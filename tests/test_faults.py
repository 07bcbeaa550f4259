"""Issue 17's acceptance: NATS or PostgreSQL taken away while a wedding is in use, and
nothing acknowledged is lost.

Each scenario runs its own system (bench/faults): its own nats-server and PostgreSQL on
fixed ports in a temporary directory (stopped, or killed, and started again on the same
port and data; the session's servers are not touched), two `wedsync api` processes, a
`wedsync worker conflicts` and a `wedsync worker notifications` process sending email to
a real SMTP server. Three members on both gateways chat, mention an aunt (who hears by
email) and update tasks through the Python client the whole time; a burst of their work
is in flight when the service goes away. Afterwards every acknowledged message is in the
stream once and reached every member once, every acknowledged change was applied once
(versions 1..N), every member's folded view is ``GET /state``, every mention made one
notification and one email, nothing was dead-lettered, and every process is the one that
was started (nothing restarted by hand).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.faults import ACCEPTANCE, PAST_WINDOW, SHORT_WINDOW, Audit, FaultSystem, Outage, drill
from bench.faults.drill import Pace
from streams.definitions import CHANGES, EVENTS
from tests.kits.providers import SmtpServer

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

AUNT = "aunt@example.org"
PACE = Pace(warmup=3.0, after=5.0, settle_timeout=45.0, rate=4.0, change_every=1.5)


def evidence(system: FaultSystem, audit: Audit) -> str:
    """The broken promises, then what each process logged (WARNING and up)."""
    lines = ["", *audit.problems(), ""]
    for c in system.children:
        state = "running" if c.alive else f"EXITED {c.proc.returncode}"
        lines += [f"--- {c.name} (pid {c.pid}, {state}) ---", c.summary()]
    return "\n".join(lines)


async def run(tmp_path: Path, outage: Outage, env: dict[str, str] | None = None) -> None:
    with SmtpServer() as smtp:
        mail_env = {
            "WEDSYNC_SMTP_HOST": "127.0.0.1",
            "WEDSYNC_SMTP_PORT": str(smtp.port),
            "WEDSYNC_SMTP_STARTTLS": "false",
        }
        async with FaultSystem(tmp_path, env={**mail_env, **(env or {})}) as system:
            started = {c.name: c.pid for c in system.children}
            audit = await drill(
                outage,
                system.services,
                system.urls,
                system.settings.auth,
                system,
                pace=PACE,
                aunt_email=AUNT,
                mails=lambda: [(m.key, m.message_id) for m in smtp.to(AUNT)],
            )
            # the harness did what it says: traffic flowed, mentions were made
            assert audit.messages_sent >= 100 and audit.changes_sent >= 20, audit.as_dict()
            assert audit.mentions >= 10, audit.as_dict()
            assert {c.name: c.pid for c in system.children} == started
            assert audit.problems() == [], evidence(system, audit)


@pytest.mark.parametrize("outage", ACCEPTANCE, ids=[o.name for o in ACCEPTANCE])
async def test_nothing_acknowledged_is_lost(tmp_path: Path, outage: Outage) -> None:
    await run(tmp_path, outage)


async def test_a_postgresql_outage_longer_than_the_duplicate_window(tmp_path: Path) -> None:
    """Events published before the outage are no longer deduplicated after it: whatever
    was published for an uncommitted change, or left unmarked, must not come back twice."""
    assert PAST_WINDOW.seconds > SHORT_WINDOW
    await run(tmp_path, PAST_WINDOW, {"WEDSYNC_DUPLICATE_WINDOW": str(SHORT_WINDOW)})


async def test_the_duplicate_window_setting_reaches_the_streams(tmp_path: Path) -> None:
    """WEDSYNC_DUPLICATE_WINDOW is applied to the streams by `prepare` (what the test
    above relies on)."""
    async with FaultSystem(
        tmp_path, gateways=1, workers=(), env={"WEDSYNC_DUPLICATE_WINDOW": str(SHORT_WINDOW)}
    ) as system:
        assert system.nc is not None
        js = system.nc.jetstream()
        for name in (EVENTS.name, CHANGES.name):
            assert (await js.stream_info(name)).config.duplicate_window == SHORT_WINDOW
