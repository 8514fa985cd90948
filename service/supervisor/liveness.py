"""Deciding that a supervisor is dead, without comparing two processes' clocks.

Two ways, and no other:

* **Silence**, for any supervisor anywhere: :class:`HeartbeatWatch` watches each lease
  holder's ``supervisors.heartbeat_at``. While the value keeps changing the holder is alive,
  whatever the value says (one that steps back has changed too); once it has not changed for
  the *holder's own* promised TTL (``supervisors.lease_ttl_s``; the watcher's for a row that
  keeps none) in seconds of the *watcher's monotonic clock*, the holder is dead and its leases
  are reclaimed. So a supervisor that beats every 2 s with a 6 s TTL is never judged by a
  neighbour's 1 s TTL. A wall-clock jump on either side changes nothing: it neither expires
  live leases nor keeps dead ones alive. A supervisor never judges itself: its own leases
  live exactly as long as its heartbeat thread does (if that dies, the supervisor stops and
  releases them); if others judged it dead all the same (a stall, a partition), it learns so
  at its next heartbeat and registers again.
* **A vanished process**, for a supervisor on this host: :func:`process_alive` checks its
  pid and the process's start time *in clock ticks since boot* plus the boot's id (neither
  moves when the wall clock steps), so a reused pid is not mistaken for the original.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

_BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def process_identity(pid: int) -> tuple[str | None, int | None]:
    """(boot id, start time in clock ticks since boot) of ``pid``; (None, None) where /proc is missing."""
    boot_id = None
    try:
        with open(_BOOT_ID_PATH, encoding="ascii") as f:
            boot_id = f.read().strip()
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
        # Field 22 (starttime, in clock ticks since boot) counts after the ")" closing the name.
        return boot_id, int(stat.rsplit(")", 1)[-1].split()[19])
    except (OSError, IndexError, ValueError):
        return boot_id, None


def _exited(pid: int) -> bool:
    """Whether ``pid`` has exited but is not yet reaped (state Z or X in /proc): a supervisor killed
    under an init that reaps slowly (PID 1 of a container, say) stays such a zombie for seconds."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def process_alive(pid: int, boot_id: str | None, start_ticks: int | None) -> bool:
    """True unless the process that registered with (pid, boot id, start ticks) is surely gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    if _exited(pid):
        return False  # a zombie: dead, though its parent has not collected its exit status yet
    now_boot, ticks = process_identity(pid)
    if boot_id is not None and now_boot is not None and boot_id != now_boot:
        return False  # the machine rebooted since: no process of that boot survives
    if start_ticks is None or ticks is None:
        return True  # nothing to compare: assume alive, the silence rule still applies
    return ticks == start_ticks


@dataclass
class _Seen:
    value: datetime
    since: float  # monotonic time when this value was first seen


class Seen(NamedTuple):
    """A lease holder as read: its heartbeat value and the TTL it promised (None: the watcher's)."""

    heartbeat_at: datetime
    lease_ttl_s: float | None


class HeartbeatWatch:
    """Remembers when each lease holder's heartbeat last changed, on a monotonic clock."""

    def __init__(self, ttl_s: float, me: int, blind_s: float | None = None) -> None:
        self.ttl_s = ttl_s
        self.me = me
        # A gap this long between two looks (the database was down, this process stalled) means
        # the watcher saw nothing meanwhile: it starts its timers again rather than blame others.
        # It must be well above the interval between looks, or the watch would never judge.
        self.blind_s = blind_s if blind_s is not None else ttl_s / 2
        self._seen: dict[int, _Seen] = {}
        self._last_look: float | None = None

    def dead(self, holders: Mapping[int, Seen | tuple[datetime, float | None]], now_mono: float) -> list[int]:
        """Given {supervisor id: (heartbeat_at, its TTL)} of every lease holder, the ids whose
        heartbeat has not changed for their own TTL (``ttl_s`` where a holder promised none).

        A holder seen for the first time gets a full TTL from now: a watcher that just started
        knows nothing yet, so it waits rather than guess. So does every holder after a gap in
        the watcher's own looks (a database outage silences everyone at once).
        """
        if self._last_look is not None and now_mono - self._last_look >= self.blind_s:
            self._seen.clear()
        self._last_look = now_mono
        dead = []
        for supervisor, (beat, promised) in holders.items():
            if supervisor == self.me:
                continue
            seen = self._seen.get(supervisor)
            if seen is None or seen.value != beat:
                self._seen[supervisor] = _Seen(beat, now_mono)
            elif now_mono - seen.since >= (promised if promised is not None else self.ttl_s):
                dead.append(supervisor)
        for gone in set(self._seen) - set(holders):
            del self._seen[gone]
        return dead

    def forget(self, supervisor: int) -> None:
        """Drop what was seen of ``supervisor`` (just reclaimed): if it lives on, its next leases get a
        full TTL from when they are seen, not from a silence that began before they existed."""
        self._seen.pop(supervisor, None)
