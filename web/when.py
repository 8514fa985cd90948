"""Time as the web layer reads and shows it: start times asked for, and times in words.

A start time comes as RFC 3339 text, which says its offset: the API and the form never guess a
zone. Pages show stored times (naive UTC) in UTC, as they always have, or in a schedule's own
zone where the schedule is what they describe ("02:00 CET").
"""

from __future__ import annotations

from datetime import datetime

from service.cron import from_utc, zone
from service.faces import summary


def starts_in(at: datetime, now: datetime) -> str:
    """"in 3 min", or "3 min ago" for a time passed (a fire's)."""
    return summary.starts_in(at, now, past="{} ago")


def utc_words(at: datetime, now: datetime) -> str:
    """"14:05 UTC (in 3 min)": a stored time as the pages show it, and how far ahead it is."""
    return f"{summary.clock_time(at, now, 'UTC')} ({starts_in(at, now)})"


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
