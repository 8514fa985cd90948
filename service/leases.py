"""The lease protocol: every SQL statement a supervisor runs, as verbs, one transaction each.

A task is leased by a supervisor (``lease_owner`` = its ``workers.id``) for one attempt
(``attempts``). Every write to a leased row is a compare-and-set on (id, lease_owner,
attempts, status = 'running'); a write that matches no row comes from a lease that was lost
(reaped, reclaimed, cancelled) and changes nothing, so no task completes twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, insert, select, update

from service import wakeup
from service.db import read_tx, write_tx
from service.models import (
    CHARGED_OUTCOMES,
    DUE_TASK_STATUSES,
    TERMINAL_TASK_STATUSES,
    Outcome,
    Run,
    RunStatus,
    Task,
    TaskAttempt,
    TaskStatus,
    Worker,
)
from service.storage_errors import translated

log = logging.getLogger("tenure.leases")

HOOK_MAX_ATTEMPTS = 3
# A task lost this many times without being charged (its supervisor died each time, or the
# process it shared crashed) fails: it may be what kills them, and must not loop forever.
MAX_LOST = 20


@dataclass(frozen=True)
class Lease:
    """One claimed attempt of a task: everything needed to run it and to fence its writes."""

    task_id: int
    attempt: int  # tasks.attempts after the claim: this attempt's number, 1-based
    charged: int  # earlier attempts charged against max_attempts (failed, timed out, crashed)
    lost: int  # earlier attempts lost through no fault of the task
    max_attempts: int
    run_id: int | None
    position: int
    kind: str
    args: dict[str, Any]
    checkpoint: Any
    timeout_s: float | None
    isolated: bool = False  # must run alone in a process of its own
    memory_limit_mb: int | None = None  # None: the supervisor's limit

    @property
    def key(self) -> tuple[int, int]:
        """(task id, attempt): what identifies this execution everywhere."""
        return (self.task_id, self.attempt)


@dataclass(frozen=True)
class LiveWorker:
    id: int
    host: str
    pid: int
    started_at: datetime


def _fence(task_id: int, worker_id: int, attempt: int) -> Any:
    return (
        (Task.id == task_id)
        & (Task.lease_owner == worker_id)
        & (Task.attempts == attempt)
        & (Task.status == TaskStatus.RUNNING.value)
    )


class Leases:
    """Claim, heartbeat, finish, release and reap: the supervisor's side of the database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- workers -------------------------------------------------------------------------

    @translated
    def register_worker(self, host: str, pid: int, now: datetime) -> int:
        """Insert this supervisor's ``workers`` row; returns its id (the lease owner)."""
        with write_tx(self.engine) as conn:
            return int(
                conn.execute(
                    insert(Worker)
                    .values(host=host, pid=pid, started_at=now, heartbeat_at=now)
                    .returning(Worker.id)
                ).scalar_one()
            )

    @translated
    def live_workers_on(self, host: str, except_id: int) -> list[LiveWorker]:
        """Workers on ``host`` not marked stopped, other than ``except_id``; [] when none."""
        with read_tx(self.engine) as conn:
            rows = conn.execute(
                select(Worker.id, Worker.host, Worker.pid, Worker.started_at).where(
                    Worker.host == host, Worker.stopped_at.is_(None), Worker.id != except_id
                )
            ).all()
        return [LiveWorker(*row) for row in rows]

    @translated
    def lease_holders(self) -> dict[int, datetime]:
        """{worker id: heartbeat_at} of every worker holding a running task; {} when none."""
        with read_tx(self.engine) as conn:
            rows = conn.execute(
                select(Worker.id, Worker.heartbeat_at)
                .where(Worker.id.in_(
                    select(Task.lease_owner).where(Task.status == TaskStatus.RUNNING.value).distinct()
                ))
            ).all()
        return {worker_id: beat for worker_id, beat in rows}

    @translated
    def held(self, worker_id: int) -> set[tuple[int, int]]:
        """The (task_id, attempt) pairs this worker still leases, from one index lookup.

        Read only. An attempt missing from it was cancelled, reaped or reclaimed: its
        execution must stop. Empty when it holds nothing.
        """
        with read_tx(self.engine) as conn:
            rows = conn.execute(
                select(Task.id, Task.attempts).where(
                    Task.lease_owner == worker_id, Task.status == TaskStatus.RUNNING.value
                )
            ).all()
        return {(r.id, r.attempts) for r in rows}

    @translated
    def stop_worker(self, worker_id: int, now: datetime) -> None:
        """Mark the worker stopped. A no-op for an unknown id."""
        with write_tx(self.engine) as conn:
            conn.execute(update(Worker).where(Worker.id == worker_id).values(stopped_at=now))

    # -- claim and heartbeat ------------------------------------------------------------

    @translated
    def claim(self, worker_id: int, limit: int, now: datetime, ttl_s: float) -> list[Lease]:
        """Lease up to ``limit`` due tasks, oldest due first, in one statement.

        Atomic: the tasks turn ``running`` under this worker's lease and each gets an open
        ``task_attempts`` row, all in one write transaction. On PostgreSQL the candidate rows
        are locked ``FOR UPDATE SKIP LOCKED``, so concurrent claimers never wait on or take
        the same row. Returns [] when nothing is due.
        """
        if limit <= 0:
            return []
        due = (
            select(Task.id)
            .where(Task.status.in_([s.value for s in DUE_TASK_STATUSES]), Task.next_attempt_at <= now)
            .order_by(Task.next_attempt_at, Task.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        expires = now + timedelta(seconds=ttl_s)
        with write_tx(self.engine) as conn:
            rows = conn.execute(
                update(Task)
                .where(Task.id.in_(due.scalar_subquery()))
                .values(
                    status=TaskStatus.RUNNING.value,
                    lease_owner=worker_id,
                    lease_expires_at=expires,
                    attempts=Task.attempts + 1,
                    started_at=func.coalesce(Task.started_at, now),
                    next_attempt_at=None,
                )
                .returning(
                    Task.id, Task.attempts, Task.charged, Task.lost, Task.max_attempts, Task.run_id,
                    Task.position, Task.kind, Task.args, Task.checkpoint, Task.timeout_s,
                    Task.isolated, Task.memory_limit_mb,
                )
            ).all()
            if not rows:
                return []
            conn.execute(
                insert(TaskAttempt),
                [
                    {"task_id": r.id, "attempt": r.attempts, "worker_id": worker_id,
                     "started_at": now, "outcome": Outcome.RUNNING.value, "charged": False}
                    for r in rows
                ],
            )
        leases = [
            Lease(
                task_id=r.id, attempt=r.attempts, charged=r.charged, lost=r.lost,
                max_attempts=r.max_attempts, run_id=r.run_id, position=r.position, kind=r.kind,
                args=r.args or {}, checkpoint=r.checkpoint, timeout_s=r.timeout_s,
                isolated=bool(r.isolated), memory_limit_mb=r.memory_limit_mb,
            )
            for r in rows
        ]
        leases.sort(key=lambda lease: (lease.run_id or 0, lease.position))
        return leases

    @translated
    def heartbeat(
        self,
        worker_id: int,
        now: datetime,
        ttl_s: float,
        updates: Sequence[tuple[int, int, float, Any]] = (),
    ) -> set[tuple[int, int]]:
        """Extend every lease this worker holds, in one statement; store progress and checkpoints.

        ``updates`` holds (task_id, attempt, progress, checkpoint) for attempts whose progress
        or checkpoint changed since the last beat; each is fenced. Atomic. Returns the
        (task_id, attempt) pairs the worker still holds: an attempt missing from it has lost
        its lease (reaped, reclaimed or cancelled) and must stop writing.
        """
        with write_tx(self.engine) as conn:
            conn.execute(update(Worker).where(Worker.id == worker_id).values(heartbeat_at=now))
            if updates:
                conn.execute(
                    update(Task)
                    .where(
                        (Task.id == bindparam("b_id"))
                        & (Task.lease_owner == worker_id)
                        & (Task.attempts == bindparam("b_attempt"))
                        & (Task.status == TaskStatus.RUNNING.value)
                    )
                    .values(
                        progress=bindparam("b_progress"),
                        checkpoint=bindparam("b_checkpoint", type_=Task.checkpoint.type),
                    )
                    .execution_options(synchronize_session=False),
                    [
                        {"b_id": t, "b_attempt": a, "b_progress": p, "b_checkpoint": c}
                        for t, a, p, c in updates
                    ],
                )
            held = conn.execute(
                update(Task)
                .where(Task.lease_owner == worker_id, Task.status == TaskStatus.RUNNING.value)
                .values(lease_expires_at=now + timedelta(seconds=ttl_s))
                .returning(Task.id, Task.attempts)
            ).all()
        return {(r.id, r.attempts) for r in held}

    # -- finishing an attempt -----------------------------------------------------------

    @translated
    def finish(
        self,
        lease: Lease,
        worker_id: int,
        now: datetime,
        *,
        outcome: Outcome,
        result: Any = None,
        error: str | None = None,
        retry_at: datetime | None = None,
        progress: float | None = None,
        checkpoint: Any = None,
    ) -> bool:
        """Record how an attempt ended, fenced by (task, lease owner, attempt).

        ``outcome`` SUCCEEDED stores ``result``; FAILED, TIMED_OUT or CRASHED store ``error``,
        charge the attempt (``tasks.charged`` + 1) and either schedule a retry at ``retry_at``
        (status ``retrying``) or, when it is None, fail the task. The task, its attempt row and,
        when this was the run's last open task, the run's completion (and its hook task) change
        in one transaction. Returns False, writing nothing, when the lease was lost.
        """
        succeeded = outcome is Outcome.SUCCEEDED
        charged = outcome in CHARGED_OUTCOMES
        if succeeded:
            status = TaskStatus.SUCCEEDED
        else:
            status = TaskStatus.RETRYING if retry_at is not None else TaskStatus.FAILED
        values: dict[str, Any] = {
            "status": status.value,
            "error": error,
            "lease_owner": None,
            "lease_expires_at": None,
            "next_attempt_at": retry_at,
        }
        if charged:
            values["charged"] = Task.charged + 1
        if succeeded:
            values.update(result=result, progress=1.0, finished_at=now)
        elif status is TaskStatus.FAILED:
            values.update(finished_at=now)
        if progress is not None and not succeeded:
            values["progress"] = progress
        if checkpoint is not None:
            values["checkpoint"] = checkpoint
        with write_tx(self.engine) as conn:
            changed = conn.execute(
                update(Task).where(_fence(lease.task_id, worker_id, lease.attempt)).values(**values)
            ).rowcount
            if changed != 1:
                log.warning(
                    "finish.fenced task=%s attempt=%s worker=%s outcome=%s: lease lost, write dropped",
                    lease.task_id, lease.attempt, worker_id, outcome.value,
                )
                return False
            _close_attempt(conn, lease.task_id, lease.attempt, outcome, error, now, charged=charged)
            if status in TERMINAL_TASK_STATUSES and lease.run_id is not None:
                settle_run(conn, lease.run_id, now)
        return True

    @translated
    def release(
        self, worker_id: int, leases: Iterable[tuple[Lease, float | None, Any]], now: datetime
    ) -> int:
        """Hand leases back at a graceful stop: the tasks are due again at once.

        ``leases`` holds (lease, progress, checkpoint) with the latest progress and checkpoint
        the attempt recorded (None: unchanged), so the next attempt resumes from there. Each
        attempt closes as ``released``, not charged. Atomic; returns how many were released
        (a lease already lost is skipped).
        """
        count = 0
        with write_tx(self.engine) as conn:
            for lease, progress, checkpoint in leases:
                values: dict[str, Any] = {"status": TaskStatus.QUEUED.value, "lease_owner": None,
                                          "lease_expires_at": None, "next_attempt_at": now}
                if progress is not None:
                    values["progress"] = progress
                if checkpoint is not None:
                    values["checkpoint"] = checkpoint
                changed = conn.execute(
                    update(Task).where(_fence(lease.task_id, worker_id, lease.attempt)).values(**values)
                ).rowcount
                if changed:
                    _close_attempt(conn, lease.task_id, lease.attempt, Outcome.RELEASED,
                                   "released: its supervisor stopped gracefully", now)
                    count += 1
            if count:
                wakeup.notify(conn)
        return count

    @translated
    def lose(
        self, lease: Lease, worker_id: int, now: datetime, reason: str, *, isolate: bool,
        progress: float | None = None, checkpoint: Any = None,
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
        with write_tx(self.engine) as conn:
            row = conn.execute(
                select(Task.id, Task.attempts, Task.lost, Task.lease_owner, Task.run_id)
                .where(_fence(lease.task_id, worker_id, lease.attempt))
                .with_for_update()
            ).one_or_none()
            if row is None:
                return False
            extra: dict[str, Any] = {"isolated": True} if isolate else {}
            if progress is not None:
                extra["progress"] = progress
            if checkpoint is not None:
                extra["checkpoint"] = checkpoint
            return bool(_lose(conn, [row], reason, now, extra))

    # -- reaping ------------------------------------------------------------------------

    @translated
    def reap_expired(self, now: datetime, limit: int = 500) -> list[tuple[int, int]]:
        """Turn expired leases back into due work; returns the (task_id, attempt) pairs reaped.

        Each attempt closes as ``lost`` and is not charged: its task is due again at once (or
        fails after :data:`MAX_LOST` such losses). Atomic per call. [] when no lease has expired.
        """
        expired = (
            select(Task.id, Task.attempts, Task.lost, Task.lease_owner, Task.run_id)
            .where(Task.status == TaskStatus.RUNNING.value, Task.lease_expires_at < now)
            .order_by(Task.lease_expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        reason = "lease expired: its supervisor stopped heartbeating (crashed, hung or cut off)"
        with write_tx(self.engine) as conn:
            rows = conn.execute(expired).all()
            return _lose(conn, rows, reason, now)

    @translated
    def reclaim_keys(
        self, worker_id: int, keys: Sequence[tuple[int, int]], now: datetime, reason: str
    ) -> list[tuple[int, int]]:
        """Hand back, as lost and uncharged, these (task, attempt) leases of ``worker_id``.

        Fenced per key and atomic; returns the pairs handed back ([] when none still matched).
        """
        with write_tx(self.engine) as conn:
            rows = [
                row for task_id, attempt in keys
                if (row := conn.execute(
                    select(Task.id, Task.attempts, Task.lost, Task.lease_owner, Task.run_id)
                    .where(_fence(task_id, worker_id, attempt))
                    .with_for_update()
                ).one_or_none()) is not None
            ]
            return _lose(conn, rows, reason, now)

    @translated
    def reclaim_worker(self, dead_worker_id: int, now: datetime, reason: str) -> list[tuple[int, int]]:
        """Take back at once every lease of a supervisor known to be dead, and mark it stopped.

        Same effect per task as :meth:`reap_expired`, without waiting for the TTL. Atomic.
        Returns the (task_id, attempt) pairs reclaimed; [] when it held none.
        """
        with write_tx(self.engine) as conn:
            rows = conn.execute(
                select(Task.id, Task.attempts, Task.lost, Task.lease_owner, Task.run_id)
                .where(Task.lease_owner == dead_worker_id, Task.status == TaskStatus.RUNNING.value)
                .with_for_update()
            ).all()
            lost = _lose(conn, rows, reason, now)
            conn.execute(
                update(Worker)
                .where(Worker.id == dead_worker_id, Worker.stopped_at.is_(None))
                .values(stopped_at=now)
            )
        return lost


def _close_attempt(
    conn: Connection, task_id: int, attempt: int, outcome: Outcome, error: str | None, now: datetime,
    *, charged: bool = False,
) -> None:
    conn.execute(
        update(TaskAttempt)
        .where(
            TaskAttempt.task_id == task_id,
            TaskAttempt.attempt == attempt,
            TaskAttempt.outcome == Outcome.RUNNING.value,
        )
        .values(outcome=outcome.value, error=error, finished_at=now, charged=charged)
    )


def _lose(
    conn: Connection, rows: Sequence[Any], reason: str, now: datetime, extra: dict[str, Any] | None = None
) -> list[tuple[int, int]]:
    """Close each row's attempt as lost (not charged); queue its task again at once.

    A task lost :data:`MAX_LOST` times fails instead, so a task that kills every supervisor
    that runs it cannot loop forever.
    """
    if not rows:
        return []
    lost = []
    for r in rows:
        times = r.lost + 1
        give_up = times >= MAX_LOST
        values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None, "lost": times,
                                  **(extra or {})}
        if give_up:
            values.update(
                status=TaskStatus.FAILED.value, finished_at=now, next_attempt_at=None,
                error=f"lost {times} times without finishing (last: {reason}); tenure stopped "
                      "retrying it in case it is what kills the processes running it",
            )
        else:
            values.update(status=TaskStatus.QUEUED.value, next_attempt_at=now)
        changed = conn.execute(
            update(Task).where(_fence(r.id, r.lease_owner, r.attempts)).values(**values)
        ).rowcount
        if not changed:
            continue
        _close_attempt(conn, r.id, r.attempts, Outcome.LOST, reason, now)
        log.info("lease.lost task=%s attempt=%s worker=%s lost=%s %s", r.id, r.attempts, r.lease_owner,
                 times, "failed" if give_up else "queued again")
        if give_up and r.run_id is not None:
            settle_run(conn, r.run_id, now)
        lost.append((r.id, r.attempts))
    if lost:
        wakeup.notify(conn)
    return lost


def settle_run(conn: Connection, run_id: int, now: datetime) -> bool:
    """Mark the run completed if none of its tasks is open; create its hook task then.

    Runs inside the caller's transaction. The run row is locked first (on PostgreSQL), so two
    transactions finishing a run's last two tasks cannot both miss the completion. The
    completion is a compare-and-set on status = 'running', so the hook task is created exactly
    once. Returns True when this call completed the run.
    """
    run = conn.execute(
        select(Run.id, Run.on_complete, Run.params).where(Run.id == run_id).with_for_update()
    ).one_or_none()
    if run is None:
        return False
    open_tasks = (
        select(Task.id)
        .where(Task.run_id == run_id, Task.status.not_in([s.value for s in TERMINAL_TASK_STATUSES]))
        .exists()
    )
    changed = conn.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.RUNNING.value, ~open_tasks)
        .values(status=RunStatus.COMPLETED.value, finished_at=now)
    ).rowcount
    if not changed:
        return False
    log.info("run.completed run=%s", run_id)
    if run.on_complete:
        hook_id = conn.execute(
            insert(Task)
            .values(
                run_id=None, position=0, kind=run.on_complete, args={"run_id": run_id},
                status=TaskStatus.QUEUED.value, max_attempts=HOOK_MAX_ATTEMPTS,
                created_at=now, next_attempt_at=now,
            )
            .returning(Task.id)
        ).scalar_one()
        conn.execute(update(Run).where(Run.id == run_id).values(hook_task_id=hook_id))
        log.info("run.hook_queued run=%s task=%s kind=%s", run_id, hook_id, run.on_complete)
    return True
