"""Is the process behind a ``workers`` row still alive? (Same host only.)

A pid alone is not enough: after a restart (a container's, say) a new process may get the
dead supervisor's pid, even our own. On Linux the process's start time, from ``/proc``, tells
a reused pid from the original: a process that started after the worker row was written is
not the one that wrote it.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

START_SLACK_S = 2.0  # the row is written just after the process starts; allow for that


def process_alive(pid: int, worker_started_at: datetime) -> bool:
    """True unless the process that registered a worker at ``worker_started_at`` is surely gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    started = process_start_time(pid)
    if started is None:
        return True
    return started.timestamp() <= worker_started_at.replace(tzinfo=UTC).timestamp() + START_SLACK_S


def process_start_time(pid: int) -> datetime | None:
    """When ``pid`` started (aware UTC), from /proc; None where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
        with open("/proc/stat", encoding="ascii") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return None
    # Field 22 (starttime, in clock ticks since boot) counts after the ")" closing the name.
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        ticks = int(fields[19])
    except (IndexError, ValueError):
        return None
    return datetime.fromtimestamp(btime + ticks / os.sysconf("SC_CLK_TCK"), UTC)
