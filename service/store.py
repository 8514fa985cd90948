"""Runs and tasks as people and applications see them: submit, read, cancel, retry.

Every statement here is portable between SQLite and PostgreSQL. Each verb is one
transaction; reads see one consistent snapshot. The supervisor's verbs live in
:mod:`service.leases`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, case, func, insert, select, update

from service import wakeup
from service.db import read_tx, write_tx
from service.errors import Conflict, NotFound
from service.leases import settle_run
from service.models import (
    DUE_TASK_STATUSES,
    TERMINAL_TASK_STATUSES,
    Outcome,
    Run,
    RunStatus,
    Task,
    TaskAttempt,
    TaskStatus,
)
from service.storage_errors import translated

COUNT_KEYS = tuple(s.value for s in TaskStatus)


@dataclass(frozen=True)
class RunView:
    id: int
    name: str | None
    status: str
    kind: str
    total: int
    params: dict[str, Any]
    on_complete: str | None
    hook_task_id: int | None
    created_at: datetime
    finished_at: datetime | None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def done(self) -> int:
        """Tasks in a terminal status."""
        return sum(self.counts.get(s.value, 0) for s in TERMINAL_TASK_STATUSES)

    @property
    def live(self) -> bool:
        return self.status == RunStatus.RUNNING.value


@dataclass(frozen=True)
class TaskView:
    id: int
    run_id: int | None
    position: int
    kind: str
    args: dict[str, Any]
    status: str
    attempts: int
    max_attempts: int
    progress: float
    result: Any
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None
    lease_owner: int | None
    charged: int = 0  # attempts charged against max_attempts
    lost: int = 0  # attempts lost through no fault of the task (not charged)
    isolated: bool = False  # runs alone in a process of its own

    @property
    def terminal(self) -> bool:
        return self.status in {s.value for s in TERMINAL_TASK_STATUSES}


@dataclass(frozen=True)
class AttemptView:
    attempt: int
    worker_id: int | None
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    error: str | None
    charged: bool = False


_RUN_COLUMNS = (
    Run.id, Run.name, Run.status, Run.kind, Run.total, Run.params, Run.on_complete,
    Run.hook_task_id, Run.created_at, Run.finished_at,
)
_TASK_COLUMNS = (
    Task.id, Task.run_id, Task.position, Task.kind, Task.args, Task.status, Task.attempts,
    Task.max_attempts, Task.progress, Task.result, Task.error, Task.created_at, Task.started_at,
    Task.finished_at, Task.next_attempt_at, Task.lease_owner, Task.charged, Task.lost, Task.isolated,
)


class Store:
    """Submissions and reads. Callers never build queries; they call these verbs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- submitting -----------------------------------------------------------------------

    @translated
    def create_run(
        self,
        *,
        kind: str,
        count: int,
        params: dict[str, Any],
        args_for: Callable[[int], dict[str, Any]],
        now: datetime,
        name: str | None = None,
        max_attempts: int = 3,
        timeout_s: float | None = None,
        memory_limit_mb: int | None = None,
        on_complete: str | None = None,
    ) -> int:
        """Insert a run and its ``count`` queued tasks (``args_for(position)`` each).

        Atomic: the run and all its tasks appear together or not at all. Returns the run id.
        """
        with write_tx(self.engine) as conn:
            run_id = int(
                conn.execute(
                    insert(Run)
                    .values(
                        name=name, status=RunStatus.RUNNING.value, kind=kind, total=count,
                        params=params, on_complete=on_complete, created_at=now,
                    )
                    .returning(Run.id)
                ).scalar_one()
            )
            conn.execute(
                insert(Task),
                [
                    {
                        "run_id": run_id, "position": i, "kind": kind, "args": args_for(i),
                        "status": TaskStatus.QUEUED.value, "max_attempts": max_attempts,
                        "timeout_s": timeout_s, "memory_limit_mb": memory_limit_mb, "created_at": now,
                        "next_attempt_at": now, "attempts": 0, "progress": 0.0,
                    }
                    for i in range(count)
                ],
            )
            wakeup.notify(conn)
        return run_id

    @translated
    def create_task(
        self,
        *,
        kind: str,
        args: dict[str, Any],
        now: datetime,
        max_attempts: int = 3,
        timeout_s: float | None = None,
        memory_limit_mb: int | None = None,
    ) -> int:
        """Insert one queued task that belongs to no run. Atomic; returns the task id."""
        with write_tx(self.engine) as conn:
            task_id = int(
                conn.execute(
                    insert(Task)
                    .values(
                        run_id=None, position=0, kind=kind, args=args,
                        status=TaskStatus.QUEUED.value, max_attempts=max_attempts,
                        timeout_s=timeout_s, memory_limit_mb=memory_limit_mb, created_at=now,
                        next_attempt_at=now,
                    )
                    .returning(Task.id)
                ).scalar_one()
            )
            wakeup.notify(conn)
        return task_id

    # -- reading --------------------------------------------------------------------------

    @translated
    def get_run(self, run_id: int) -> RunView:
        """The run with its status counts (one grouped query).

        Raises:
            NotFound: no run has this id.
        """
        with read_tx(self.engine) as conn:
            return _run_view(conn, run_id)

    @translated
    def run_snapshot(self, run_id: int) -> tuple[RunView, list[TaskView]]:
        """The run, its counts and its tasks in position order, from one snapshot.

        A fixed number of queries whatever the run's size. Raises NotFound for an unknown id.
        """
        with read_tx(self.engine) as conn:
            run = _run_view(conn, run_id)
            rows = conn.execute(
                select(*_TASK_COLUMNS).where(Task.run_id == run_id).order_by(Task.position)
            ).all()
        return run, [TaskView(*row) for row in rows]

    @translated
    def run_fingerprint(self, run_id: int) -> str:
        """A short digest of everything the run's status view shows; it changes when any of it does.

        Two queries whatever the run's size (the run row and one grouped aggregate over its
        tasks), so an unchanged run can be answered without reading its tasks.
        Raises NotFound for an unknown id.
        """
        with read_tx(self.engine) as conn:
            run = conn.execute(
                select(Run.status, Run.finished_at, Run.hook_task_id).where(Run.id == run_id)
            ).one_or_none()
            if run is None:
                raise NotFound(f"there is no run {run_id}")
            groups = conn.execute(
                select(
                    Task.status, func.count(), func.sum(Task.attempts),
                    func.sum(func.round(Task.progress * 100)), func.max(Task.finished_at),
                    func.max(Task.next_attempt_at), func.count(Task.error),
                )
                .where(Task.run_id == run_id)
                .group_by(Task.status)
                .order_by(Task.status)
            ).all()
        text = repr((tuple(run), [tuple(g) for g in groups]))
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    @translated
    def list_runs(self, *, limit: int = 20, offset: int = 0, live: bool | None = None) -> list[RunView]:
        """Runs, latest first, each with its counts: two queries for the whole page.

        ``live`` True keeps running runs only, False finished ones only. [] past the end.
        """
        query = select(*_RUN_COLUMNS).order_by(Run.id.desc()).limit(limit).offset(offset)
        if live is True:
            query = query.where(Run.status == RunStatus.RUNNING.value)
        elif live is False:
            query = query.where(Run.status != RunStatus.RUNNING.value)
        with read_tx(self.engine) as conn:
            rows = conn.execute(query).all()
            counts = _counts(conn, [r.id for r in rows])
        return [RunView(**row._mapping, counts=counts.get(row.id, _zero_counts())) for row in rows]

    @translated
    def count_runs(self) -> int:
        with read_tx(self.engine) as conn:
            return int(conn.execute(select(func.count()).select_from(Run)).scalar_one())

    @translated
    def get_task(self, task_id: int) -> TaskView:
        """One task. Raises NotFound for an unknown id."""
        with read_tx(self.engine) as conn:
            row = conn.execute(select(*_TASK_COLUMNS).where(Task.id == task_id)).one_or_none()
        if row is None:
            raise NotFound(f"there is no task {task_id}")
        return TaskView(*row)

    @translated
    def attempts(self, task_id: int) -> list[AttemptView]:
        """A task's attempts in order; [] for a task never claimed (or an unknown id)."""
        with read_tx(self.engine) as conn:
            rows = conn.execute(
                select(
                    TaskAttempt.attempt, TaskAttempt.worker_id, TaskAttempt.started_at,
                    TaskAttempt.finished_at, TaskAttempt.outcome, TaskAttempt.error, TaskAttempt.charged,
                )
                .where(TaskAttempt.task_id == task_id)
                .order_by(TaskAttempt.attempt)
            ).all()
        return [AttemptView(*row) for row in rows]

    @translated
    def run_attempt_outcomes(self, run_id: int) -> dict[str, int]:
        """How many of the run's attempts ended each way, from one grouped query.

        Keys are outcomes, plus ``retried``: charged attempts (failed, timed out, crashed)
        that another attempt followed, i.e. retries of a failing task. {} before any claim.
        """
        followed = TaskAttempt.attempt < Task.attempts
        with read_tx(self.engine) as conn:
            rows = conn.execute(
                select(TaskAttempt.outcome, TaskAttempt.charged, followed, func.count())
                .join(Task, Task.id == TaskAttempt.task_id)
                .where(Task.run_id == run_id)
                .group_by(TaskAttempt.outcome, TaskAttempt.charged, followed)
            ).all()
        counts: dict[str, int] = {}
        for outcome, charged, was_followed, n in rows:
            counts[outcome] = counts.get(outcome, 0) + int(n)
            if charged and was_followed:
                counts["retried"] = counts.get("retried", 0) + int(n)
        return counts

    # -- changing runs --------------------------------------------------------------------

    @translated
    def cancel_run(self, run_id: int, now: datetime) -> int:
        """Cancel a running run: its open tasks become ``cancelled``, open attempts close.

        A supervisor running one of them learns at its next heartbeat that the lease is gone,
        tells the task to stop, and its later writes are fenced off. Atomic. Returns how many
        tasks were cancelled.

        Raises:
            NotFound: no run has this id.
            Conflict: the run is not running.
        """
        open_statuses = [s.value for s in (*DUE_TASK_STATUSES, TaskStatus.RUNNING)]
        with write_tx(self.engine) as conn:
            status = conn.execute(select(Run.status).where(Run.id == run_id)).scalar_one_or_none()
            if status is None:
                raise NotFound(f"there is no run {run_id}")
            if status != RunStatus.RUNNING.value:
                raise Conflict(f"run {run_id} is {status}; only a running run can be cancelled")
            conn.execute(
                update(TaskAttempt)
                .where(
                    TaskAttempt.outcome == Outcome.RUNNING.value,
                    TaskAttempt.task_id.in_(
                        select(Task.id).where(Task.run_id == run_id, Task.status == TaskStatus.RUNNING.value)
                    ),
                )
                .values(outcome=Outcome.CANCELLED.value, finished_at=now, error="cancelled")
            )
            cancelled = conn.execute(
                update(Task)
                .where(Task.run_id == run_id, Task.status.in_(open_statuses))
                .values(
                    status=TaskStatus.CANCELLED.value, finished_at=now, lease_owner=None,
                    lease_expires_at=None, next_attempt_at=None,
                    error=case((Task.error.is_(None), "cancelled"), else_=Task.error),
                )
            ).rowcount
            conn.execute(
                update(Run)
                .where(Run.id == run_id)
                .values(status=RunStatus.CANCELLED.value, finished_at=now)
            )
        return int(cancelled)

    @translated
    def retry_run(self, run_id: int, now: datetime, extra_attempts: int = 3) -> int:
        """Queue the failed and cancelled tasks of a finished run again, with a fresh budget.

        Each such task gets ``extra_attempts`` more charged attempts (and its count of uncharged
        losses starts again), its error and finish time clear,
        and the run is ``running`` again (its completion hook will fire again when it
        completes). Atomic. Returns how many tasks were queued.

        Raises:
            NotFound: no run has this id.
            Conflict: the run is still running, or none of its tasks failed.
        """
        again = [TaskStatus.FAILED.value, TaskStatus.CANCELLED.value]
        with write_tx(self.engine) as conn:
            status = conn.execute(select(Run.status).where(Run.id == run_id)).scalar_one_or_none()
            if status is None:
                raise NotFound(f"there is no run {run_id}")
            if status == RunStatus.RUNNING.value:
                raise Conflict(f"run {run_id} is still running; retry its failed tasks once it ends")
            queued = conn.execute(
                update(Task)
                .where(Task.run_id == run_id, Task.status.in_(again))
                .values(
                    status=TaskStatus.QUEUED.value, max_attempts=Task.charged + extra_attempts, lost=0,
                    error=None, finished_at=None, next_attempt_at=now, progress=0.0,
                )
            ).rowcount
            if not queued:
                raise Conflict(f"run {run_id} has no failed or cancelled task to retry")
            wakeup.notify(conn)
            conn.execute(
                update(Run)
                .where(Run.id == run_id)
                .values(status=RunStatus.RUNNING.value, finished_at=None)
            )
        return int(queued)

    @translated
    def settle(self, run_id: int, now: datetime) -> bool:
        """Complete the run if all its tasks are terminal (see :func:`leases.settle_run`)."""
        with write_tx(self.engine) as conn:
            return settle_run(conn, run_id, now)


def _zero_counts() -> dict[str, int]:
    return dict.fromkeys(COUNT_KEYS, 0)


def _counts(conn: Connection, run_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    if not run_ids:
        return {}
    rows = conn.execute(
        select(Task.run_id, Task.status, func.count())
        .where(Task.run_id.in_(run_ids))
        .group_by(Task.run_id, Task.status)
    ).all()
    counts: dict[int, dict[str, int]] = {}
    for run_id, status, n in rows:
        if run_id is not None:
            counts.setdefault(run_id, _zero_counts())[status] = int(n)
    return counts


def _run_view(conn: Connection, run_id: int) -> RunView:
    row = conn.execute(select(*_RUN_COLUMNS).where(Run.id == run_id)).one_or_none()
    if row is None:
        raise NotFound(f"there is no run {run_id}")
    return RunView(**row._mapping, counts=_counts(conn, [run_id]).get(run_id, _zero_counts()))

