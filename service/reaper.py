"""Deciding which supervisors are dead by watching their heartbeats, not by comparing clocks.

A lease's ``lease_expires_at`` is written from its holder's wall clock, and hosts' clocks
disagree and jump (NTP steps, a VM resumed, a person setting the date). So the reaper never
compares it with its own wall clock. Instead it watches each lease holder's
``workers.heartbeat_at``: while the value keeps changing, the holder is alive, whatever the
value says; once it has not changed for ``ttl_s`` seconds of the *reaper's monotonic clock*, the
holder is dead and its leases are reaped. A wall-clock jump on either side changes nothing:
it neither expires live leases nor keeps dead ones alive.

A supervisor never judges itself: its own leases live exactly as long as its heartbeat
thread does (if that dies, the supervisor stops and releases them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass
class _Seen:
    value: datetime
    since: float  # monotonic time when this value was first seen


class HeartbeatWatch:
    """Remembers when each lease holder's heartbeat last changed, on a monotonic clock."""

    def __init__(self, ttl_s: float, me: int) -> None:
        self.ttl_s = ttl_s
        self.me = me
        self._seen: dict[int, _Seen] = {}

    def dead(self, holders: dict[int, datetime], now_mono: float) -> list[int]:
        """Given {worker id: heartbeat_at} of every lease holder, the ids silent for ``ttl_s``.

        A holder seen for the first time gets a full ``ttl_s`` from now: a reaper that just
        started knows nothing yet, so it waits rather than guess.
        """
        dead = []
        for worker, beat in holders.items():
            if worker == self.me:
                continue
            seen = self._seen.get(worker)
            if seen is None or seen.value != beat:
                self._seen[worker] = _Seen(beat, now_mono)
            elif now_mono - seen.since >= self.ttl_s:
                dead.append(worker)
        for gone in set(self._seen) - set(holders):
            del self._seen[gone]
        return dead
