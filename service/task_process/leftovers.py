"""What a task's run() left running in its process after it returned: threads, child processes, alarms.

A task process is reused for the next run(). Whatever the last occupant left behind (a thread
that calls ``os._exit`` a moment later, a child that signals its parent, an alarm) could kill
the next, innocent one, which would then be charged for a crash that was not its own. So the
process compares, around each run(), what runs in it; anything new that outlives the call
makes the supervisor *retire* the process: it takes no one new and exits once empty, its
process group (and so any child) killed with it. What cannot be seen this way (a C library
left in a corrupt state, a C thread) is covered by the blame rule: a crash in a reused process
is nobody's for sure (see :mod:`service.supervisor.processes`).

Only the task-process side imports this; it reads ``/proc`` (Linux), and says nothing where
that is missing.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass

OWN_THREAD_PREFIXES = ("host-", "check-")  # the runner's own threads: reader, flusher, output pump, loop, checks


@dataclass(frozen=True)
class Baseline:
    threads: frozenset[int]  # Python threads alive before run()


def baseline() -> Baseline:
    """What runs in this process now, before a run() (about a microsecond)."""
    return Baseline(frozenset(t.ident for t in threading.enumerate() if t.ident is not None))


def since(before: Baseline) -> str | None:
    """What was started since ``before`` and still runs, in a few words; None when nothing was.

    About 20 µs: a thread list, one read of ``/proc`` for the main thread's children (run() runs
    on the main thread), an alarm's timer. Threads of C libraries (a BLAS pool) are not counted:
    they are common, and harmless to the next task; what they could do is left to blame.
    """
    left = []
    mine = [t for t in threading.enumerate()
            if t.ident not in before.threads and not t.name.startswith(OWN_THREAD_PREFIXES)]
    if mine:
        left.append(f"{len(mine)} thread{'s' if len(mine) > 1 else ''} ({', '.join(t.name for t in mine[:3])})")
    children = _children()
    if children:
        left.append(f"{children} child process{'es' if children > 1 else ''}")
    if signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        left.append("an alarm")
    return ", ".join(left) or None


def _children() -> int:
    """Live children of the main thread, from /proc; 0 where that is missing."""
    try:
        with open(f"/proc/self/task/{os.getpid()}/children", "rb") as f:
            return len(f.read().split())
    except OSError:
        return 0
