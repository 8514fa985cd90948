"""Handing tasks back after their attempt was lost: the verbs for the dead and the displaced.

An attempt is *lost* when it was interrupted through no fault of its task: its supervisor died
or went silent (reclaimed by another), or its process was stopped or crashed for another
task's sake. Lost attempts are never charged against ``max_attempts``; :data:`MAX_LOST` of them
fail the task anyway, in case it is what kills the processes running it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, exists, or_, select, update

from service.storage import notify
from service.storage.db import db_now, read_tx, status_is, write_tx
from service.storage.errors import translated
from service.storage.models import DUE_TASK_STATUSES, Outcome, SupervisorRow, Task, TaskStatus
from service.storage.runs import close_attempt, lock_runs, lock_tasks, settle_run

log = logging.getLogger("tenure.leases")

MAX_LOST = 20  # lost attempts after which a task fails instead of looping
DUE = tuple(s.value for s in DUE_TASK_STATUSES)
Key = tuple[int, int]


def fence(task_id: int, supervisor_id: int, attempt: int) -> Any:
    """The compare-and-set every write to a leased row carries."""
    return (
        (Task.id == task_id)
        & (Task.supervisor_id == supervisor_id)
        & (Task.attempts == attempt)
        & status_is(Task.status, "running")
    )


class Losses:
    engine: Engine

    @translated
    def lose(
        self, lease: Any, supervisor_id: int, reason: str, *, isolate: bool,
        progress: float | None = None, checkpoint: Any = None, record: dict[str, Any] | None = None,
    ) -> bool:
        """Close an attempt interrupted through no fault of its own.

        For an attempt whose process died for another task's sake: stopped because that task
        timed out or was cancelled, or crashed while shared with other tasks so that nobody
        can tell which of them did it. The attempt closes as ``lost`` (not charged) and the
        task is due again at once (or fails after :data:`MAX_LOST` such losses), with the
        progress and checkpoint given. With ``isolate`` it runs alone in a process of its own
        from now on (``tasks.isolated``), where a crash is its own. Fenced and atomic; False,
        writing nothing, when the lease was already lost.
        """
        extra: dict[str, Any] = {"isolated": True} if isolate else {}
        if progress is not None:
            extra["progress"] = progress
        if checkpoint is not None:
            extra["checkpoint"] = checkpoint
        with write_tx(self.engine) as conn:
            return bool(_lose(conn, select(Task.id).where(fence(lease.task_id, supervisor_id, lease.attempt)),
                              reason, extra, record))

    # -- reclaiming the leases of the dead ------------------------------------------------

    @translated
    def reclaim_supervisor(self, dead_id: int, reason: str) -> list[Key]:
        """Take back every lease of a supervisor found dead, and mark it stopped.

        Each attempt closes as ``lost``, not charged: its task is due again at once (or fails
        after :data:`MAX_LOST` such losses). Atomic. Returns the (task_id, attempt) pairs
        reclaimed; [] when it held none.
        """
        with write_tx(self.engine) as conn:
            lost = _lose(conn, select(Task.id).where(Task.supervisor_id == dead_id,
                                                     status_is(Task.status, "running")), reason)
            conn.execute(
                update(SupervisorRow)
                .where(SupervisorRow.id == dead_id, SupervisorRow.stopped_at.is_(None))
                .values(stopped_at=db_now())
            )
        return lost

    @translated
    def reclaim_keys(self, supervisor_id: int, keys: Sequence[Key], reason: str) -> list[Key]:
        """Hand back, as lost and uncharged, these (task, attempt) leases of ``supervisor_id``.

        Fenced per key and atomic; returns the pairs handed back ([] when none still matched).
        """
        if not keys:
            return []
        fences = [fence(task_id, supervisor_id, attempt) for task_id, attempt in keys]
        with write_tx(self.engine) as conn:
            return _lose(conn, select(Task.id).where(or_(*fences)), reason)

    @translated
    def requeue_stepped(self, horizon_s: float) -> int:
        """Make due now any waiting task due more than ``horizon_s`` from now; returns how many.

        No due time is ever set that far ahead, so such a task was scheduled by a clock that
        has since stepped back (or by a process whose clock runs ahead): without this, a
        backward step of two hours would hold its retries for two hours.
        """
        ahead = (status_is(Task.status, *DUE), Task.next_attempt_at > db_now(horizon_s))
        with read_tx(self.engine) as conn:  # a read first: the write lock only when there is work
            if not conn.execute(select(exists(select(Task.id).where(*ahead)))).scalar():
                return 0
        with write_tx(self.engine) as conn:
            changed = conn.execute(update(Task).where(*ahead).values(next_attempt_at=db_now())).rowcount
            if changed:
                notify.notify(conn)
        return int(changed)



def _lose(
    conn: Connection, ids_query: Any, reason: str, extra: dict[str, Any] | None = None,
    record: dict[str, Any] | None = None,
) -> list[Key]:
    """Close the attempts of the running tasks ``ids_query`` selects as lost (not charged).

    Each task is queued again at once; a task lost :data:`MAX_LOST` times fails instead, so a
    task that kills every supervisor that runs it cannot loop forever. Follows the lock order:
    the runs of tasks that will fail first, then the tasks by id, then their attempts.
    """
    candidates = conn.execute(
        select(Task.id, Task.run_id, Task.lost).where(Task.id.in_(ids_query.scalar_subquery()))
    ).all()
    if not candidates:
        return []
    lock_runs(conn, [c.run_id for c in candidates if c.lost + 1 >= MAX_LOST])
    ids = lock_tasks(conn, select(Task.id).where(Task.id.in_([c.id for c in candidates]),
                                                 status_is(Task.status, "running")))
    rows = conn.execute(
        select(Task.id, Task.attempts, Task.lost, Task.supervisor_id, Task.run_id).where(Task.id.in_(ids))
        .order_by(Task.id)
    ).all()
    lost: list[Key] = []
    for r in rows:
        times = r.lost + 1
        give_up = times >= MAX_LOST
        values: dict[str, Any] = {"supervisor_id": None, "lost": times, **(extra or {})}
        if give_up:
            values.update(
                status=TaskStatus.FAILED.value, finished_at=db_now(), next_attempt_at=None,
                error=f"lost {times} times without finishing (last: {reason}); tenure stopped "
                      "retrying it in case it is what kills the processes running it",
            )
        else:
            values.update(status=TaskStatus.QUEUED.value, next_attempt_at=db_now(), error=reason)
        changed = conn.execute(
            update(Task).where(fence(r.id, r.supervisor_id, r.attempts)).values(**values)
        ).rowcount
        if not changed:
            continue
        close_attempt(conn, r.id, r.attempts, Outcome.LOST, reason, record=record)
        log.info("lease.lost task=%s attempt=%s supervisor=%s lost=%s %s", r.id, r.attempts, r.supervisor_id,
                 times, "failed" if give_up else "queued again")
        if give_up and r.run_id is not None:
            settle_run(conn, r.run_id)
        lost.append((r.id, r.attempts))
    if lost:
        notify.notify(conn)
    return lost
