"""Time as the web layer reads and shows it: start times asked for, and times in words.

A start time comes as RFC 3339 text, which says its offset: the API and the form never guess a
zone. Pages show stored times (naive UTC) in UTC, as they always have, or in a schedule's own
zone where the schedule is what they describe ("02:00 CET").
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from service.cron import from_utc, zone
from service.errors import InvalidInput
from service.faces import plans

RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(?P<zone>Z|[+-]\d{2}:\d{2})?")
EXAMPLE = "2026-12-03T14:05:00+01:00"


def start_of(plan: plans.P, start_at: Any, delay_s: Any) -> plans.P:
    """``plan`` set to start at ``start_at`` (RFC 3339 text) or after ``delay_s`` seconds.

    Raises:
        InvalidInput: naming the field: not RFC 3339, no offset, out of range, both given, a
            negative delay, a start more than a year away.
    """
    if isinstance(start_at, str):
        text = start_at.strip().upper()
        found = RFC3339.fullmatch(text)
        if found is None:
            raise InvalidInput(f"start_at {start_at[:60]!r} is not an RFC 3339 time such as {EXAMPLE}")
        if found["zone"] is None:
            raise InvalidInput(f"start_at {text} has no time zone; add one ({text}Z for UTC, or an offset "
                               "such as +01:00)")
        at = plans.parse_time(text, "start_at")
        try:
            at.astimezone(UTC)
        except OverflowError:  # year 1 at +01:00 is before the first representable UTC instant
            raise InvalidInput(f"start_at {text} is out of range; give a time near now") from None
        start_at = text
    return plans.with_start(plan, start_at, delay_s)


def clock_time(at: datetime, now: datetime, zone_name: str) -> str:
    """"14:05" ("14:05:30" with seconds), the date first when it is not ``now``'s day, then the zone."""
    text = at.strftime("%H:%M:%S" if at.second else "%H:%M")
    if at.date() != now.date():
        text = f"{at:%Y-%m-%d} {text}"
    return f"{text} {zone_name}"


def starts_in(at: datetime, now: datetime) -> str:
    """"in 40 s", "in 3 min", "in 5 h", "in 12 days"; "now" once it has come; "3 min ago" after."""
    left = (at - now).total_seconds()
    if abs(left) < 0.5:
        return "now"
    seconds = abs(left)
    if round(seconds) < 120:
        words = f"{round(seconds)} s"
    elif round(seconds / 60) < 120:
        words = f"{round(seconds / 60)} min"
    elif round(seconds / 3600) < 48:
        words = f"{round(seconds / 3600)} h"
    else:
        words = f"{round(seconds / 86400)} days"
    return f"in {words}" if left > 0 else f"{words} ago"


def utc_words(at: datetime, now: datetime) -> str:
    """"14:05 UTC (in 3 min)": a stored time as the pages show it, and how far ahead it is."""
    return f"{clock_time(at, now, 'UTC')} ({starts_in(at, now)})"


def local(at: datetime, timezone: str) -> str:
    """"2026-12-04 02:00 CET": a stored (naive UTC) instant in a schedule's zone, with the zone's
    abbreviation (or the zone's name where it has none but an offset)."""
    moment = from_utc(at, zone(timezone))
    short = moment.strftime("%Z")
    if not short or short[0] in "+-":
        short = timezone
    return moment.strftime("%Y-%m-%d %H:%M" + (":%S" if moment.second else "")) + f" {short}"


def scheduled(scheduled_for: datetime | None, started: bool, now: datetime) -> str | None:
    """"Scheduled for 14:05 UTC (in 3 min)" while work waits for its start and none of it began."""
    if scheduled_for is None or started or scheduled_for <= now:
        return None
    return f"Scheduled for {utc_words(scheduled_for, now)}"
