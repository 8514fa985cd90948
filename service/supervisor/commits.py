"""The supervisor's group commit: attempts that ended wait a moment to be written together.

Short tasks end by the hundred a second. Rather than one transaction each, the loop collects
the ends that arrive within :data:`GROUP_COMMIT_S` of the first (or :data:`MAX_BATCH` of them)
and writes them in one fenced transaction (:meth:`service.storage.leases.Leases.finish_batch`).
Until that transaction commits, an ended attempt keeps its slot and its lease: nothing is
logged, freed or shown as done, so a crash before the commit loses no acknowledged success (the
tasks are recovered and run again, as any interrupted attempt is).
"""

from __future__ import annotations

import logging
from typing import Any

from service.errors import TenureError
from service.storage.finishes import Finish
from service.storage.leases import Leases
from service.supervisor.attempt import Execution

log = logging.getLogger("tenure.supervisor")

GROUP_COMMIT_S = 0.002  # how long the first end of a batch waits for others to join it
MAX_BATCH = 500  # ends written in one transaction at most


class GroupCommit:
    """Ends waiting to be written, oldest first."""

    def __init__(self) -> None:
        self.waiting: list[Execution] = []
        self.since = float("inf")  # when the oldest waiting end arrived (monotonic)

    def __len__(self) -> int:
        return len(self.waiting)

    def add(self, ex: Execution, now: float, **end: Any) -> None:
        """Queue ``ex``'s end (the keyword arguments of :class:`Finish` beyond its lease)."""
        ex.phase, ex.pending = "finishing", end
        ex.next_check_mono = float("inf")  # written by the batch, not by the retry timer
        if not self.waiting:
            self.since = now
        self.waiting.append(ex)

    def due(self, now: float, others_running: bool) -> bool:
        """Whether to write now: the batch is old or full enough, or no other attempt could join it."""
        if not self.waiting:
            return False
        return not others_running or len(self.waiting) >= MAX_BATCH or now >= self.since + GROUP_COMMIT_S

    @property
    def deadline(self) -> float:
        return self.since + GROUP_COMMIT_S if self.waiting else float("inf")

    def write(self, leases: Leases, supervisor_id: int, retry_at: float) -> list[tuple[Execution, Finish, bool]]:
        """Write every waiting end in one transaction: (execution, end, applied) of each.

        ``applied`` is False for an end whose lease was lost (fenced). On a storage error the
        ends wait for ``retry_at`` (the supervisor queues them again then) and the error is raised.
        """
        batch, ends = self._take()
        try:
            applied = leases.finish_batch(supervisor_id, ends)
        except TenureError as exc:
            log.info("finish.deferred attempts=%s error=%s (retrying)", len(batch), exc)
            for ex in batch:
                ex.next_check_mono = retry_at
            raise
        return [(ex, end, end.key in applied) for ex, end in zip(batch, ends, strict=True)]

    def _take(self) -> tuple[list[Execution], list[Finish]]:
        batch, self.waiting, self.since = self.waiting, [], float("inf")
        ends = []
        for ex in batch:
            end = dict(ex.pending or {})
            end.pop("verb", None)
            lease = ex.lease
            ends.append(Finish(task_id=lease.task_id, attempt=lease.attempt, run_id=lease.run_id,
                               record=end.pop("record", None) or {}, **end))
        return batch, ends
