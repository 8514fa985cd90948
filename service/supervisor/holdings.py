"""What a supervisor runs, against what the database says it holds: both ways, at every heartbeat.

A heartbeat reads back the leases its supervisor holds (:meth:`Leases.heartbeat`). Compared with
the attempts the supervisor runs:

* one it runs but no longer holds was cancelled, or reclaimed by another supervisor: its code
  must stop now;
* one it holds but does not run is an *orphan*: a claim whose commit went through but whose
  answer never arrived (a connection cut after COMMIT). Its heartbeat would keep it alive
  forever, so it is handed back at once (lost, uncounted).

The heartbeat thread reads; the loop thread compares, since it alone claims and lets attempts
go. An attempt let go between the read and the comparison is neither (:class:`Holdings`
remembers what was let go, and when).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from service.storage.leases import Key
from service.supervisor.attempt import Execution

FORGOTTEN_KEPT = 100_000  # attempts let go, remembered so that a heartbeat read before can be judged


class Holdings:
    def __init__(self) -> None:
        self.let_go_count = 0  # attempts let go so far: a heartbeat notes it before its read
        self._let_go: deque[tuple[int, Key]] = deque(maxlen=FORGOTTEN_KEPT)

    def let_go(self, key: Key) -> None:
        """The supervisor stopped running ``key`` (its end written, or its lease lost)."""
        self.let_go_count += 1
        self._let_go.append((self.let_go_count, key))

    def compare(self, held: set[Key], beaten: set[Key], let_go_before: int,
                running: Mapping[Key, Execution]) -> tuple[list[Execution], list[Key]]:
        """(attempts to stop: run but no longer held, orphans to hand back: held but not run).

        ``held`` is what a heartbeat read; ``beaten`` what the supervisor ran when that heartbeat
        began, and ``let_go_before`` :attr:`let_go_count` then; ``running`` what it runs now.
        """
        stop = [running[key] for key in sorted(beaten - held) if key in running]
        recent = {key for n, key in reversed(self._let_go) if n > let_go_before} if held else set()
        orphans = sorted(held - set(running) - recent)
        return stop, orphans
