"""Time, injected. Every "is it time yet?" question takes a clock so tests can move it by hand.

Lease expiry, backoff and run timestamps use :meth:`Clock.now`: naive UTC datetimes written
into the database, so one clock judges every lease in it. Durations measured inside one process
(timeouts, poll schedules) use :meth:`Clock.monotonic`, which a wall-clock jump cannot move.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall time, naive UTC (the form stored in the database)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that only moves forward, for durations within one process."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC).replace(tzinfo=None)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to; both readings advance together."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, 12, 0, 0)
        self._mono = 1000.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._mono += seconds

    def jump_wall(self, seconds: float) -> None:
        """Move the wall clock only (as an NTP step or a manual change would)."""
        with self._lock:
            self._now += timedelta(seconds=seconds)
