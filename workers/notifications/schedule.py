"""When a delivery may go out: quiet hours, the daily digest and retry delays (pure)."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from streams.notifications import QuietHours


def quiet_until(now: dt.datetime, tz: str, quiet: QuietHours | None) -> dt.datetime | None:
    """If ``now`` falls in the quiet hours (local time of ``tz``), when they end (UTC)."""
    if quiet is None:
        return None
    start, end = quiet.minutes()
    if start == end:
        return None
    local = now.astimezone(zoneinfo.ZoneInfo(tz))
    minute = local.hour * 60 + local.minute
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    if not inside:
        return None
    day = local.date() if minute < end else local.date() + dt.timedelta(days=1)
    ends = dt.datetime.combine(day, dt.time(end // 60, end % 60), zoneinfo.ZoneInfo(tz))
    if ends <= now:  # the end clock time repeats (clocks go back): its second occurrence
        ends = ends.replace(fold=1)
    return ends.astimezone(dt.UTC)


def next_digest(now: dt.datetime, tz: str, hour: int) -> dt.datetime:
    """The next daily digest time (``hour``:00 local) strictly after ``now``."""
    zone = zoneinfo.ZoneInfo(tz)
    local = now.astimezone(zone)
    at = dt.datetime.combine(local.date(), dt.time(hour), zone)
    if at <= local:
        at = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(hour), zone)
    return at.astimezone(dt.UTC)


def retry_after(attempts: int, schedule: tuple[float, ...]) -> float | None:
    """Seconds before the next attempt after ``attempts`` failed ones; None: give up."""
    if attempts < 1 or attempts > len(schedule):
        return None
    return schedule[attempts - 1]
