"""Reads: runs, tasks and attempts as people and applications see them.

Each verb is one read transaction, so all its statements see one snapshot (REPEATABLE READ on
PostgreSQL, a WAL snapshot on SQLite), and costs a fixed number of statements whatever the
run's size, each using its index as sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from service.errors import NotFound
from service.storage import status
from service.storage.db import db_now, read_tx
from service.storage.errors import translated
from service.storage.models import Run, RunStatus, Task, TaskAttempt
from service.storage.status import ATTEMPT_COLUMNS, RUN_COLUMNS, TASK_COLUMNS
from service.storage.views import (
    AttemptView,
    RunStatusView,
    RunView,
    TaskDetail,
    TaskView,
    TilePage,
    zero_counts,
)


class Reads:
    """Read verbs. Callers never build queries."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @translated
    def get_run(self, run_id: int) -> RunView:
        """The run with its status counts (two statements). Raises NotFound."""
        with read_tx(self.engine) as conn:
            return _run(conn, run_id)

    @translated
    def run_status(self, run_id: int, etag: str | None = None, *, page: TilePage | None = None) -> RunStatusView:
        """Everything a run's page shows, from one snapshot, and its ETag (see :func:`status.run_status`).

        Raises:
            NotFound: no run has this id.
            InvalidInput: ``page`` asks for an unknown status.
        """
        with read_tx(self.engine) as conn:
            return status.run_status(conn, run_id, etag, page)

    @translated
    def run_snapshot(self, run_id: int) -> tuple[RunView, list[TaskView]]:
        """The run, its counts and its tasks in position order, from one snapshot. Raises NotFound."""
        status = self.run_status(run_id)
        assert status.tasks is not None
        return status.run, status.tasks

    @translated
    def run_tasks(self, run_id: int, *, limit: int, offset: int = 0) -> tuple[RunView, list[TaskView]]:
        """The run with its counts, and up to ``limit`` of its tasks from ``offset`` in position
        order, from one snapshot (three statements). Raises NotFound."""
        with read_tx(self.engine) as conn:
            run = _run(conn, run_id)
            rows = conn.execute(select(*TASK_COLUMNS).where(Task.run_id == run_id).order_by(Task.position)
                                .limit(limit).offset(offset)).all()
        return run, [TaskView(*r) for r in rows]

    @translated
    def list_runs(self, *, limit: int = 20, offset: int = 0, live: bool | None = None) -> list[RunView]:
        """Runs, latest first, each with its counts: two statements for the whole page.

        ``live`` True keeps running runs only, False finished ones only. [] past the end.
        """
        query = select(*RUN_COLUMNS).order_by(Run.id.desc()).limit(limit).offset(offset)
        if live is True:
            query = query.where(Run.status == RunStatus.RUNNING.value)
        elif live is False:
            query = query.where(Run.status != RunStatus.RUNNING.value)
        with read_tx(self.engine) as conn:
            rows = conn.execute(query).all()
            counts = _counts(conn, [r.id for r in rows])
        return [RunView(**row._mapping, counts=counts.get(row.id, zero_counts())) for row in rows]

    @translated
    def count_runs(self) -> int:
        with read_tx(self.engine) as conn:
            return int(conn.execute(select(func.count()).select_from(Run)).scalar_one())

    @translated
    def get_task(self, task_id: int) -> TaskView:
        """One task. Raises NotFound for an unknown id."""
        with read_tx(self.engine) as conn:
            row = conn.execute(select(*TASK_COLUMNS).where(Task.id == task_id)).one_or_none()
        if row is None:
            raise NotFound(f"there is no task {task_id}")
        return TaskView(*row)

    @translated
    def task_at(self, run_id: int, position: int) -> TaskView:
        """The task at ``position`` (from 0) of a run: one seek on ix_tasks_run_position. Raises NotFound."""
        with read_tx(self.engine) as conn:
            query = select(*TASK_COLUMNS).where(Task.run_id == run_id, Task.position == position)
            row = conn.execute(query).one_or_none()
        if row is None:
            raise NotFound(f"there is no task {position + 1} in run {run_id}")
        return TaskView(*row)

    @translated
    def attempts(self, task_id: int) -> list[AttemptView]:
        """A task's attempts in order, with their logs; [] for a task never claimed (or an unknown id)."""
        with read_tx(self.engine) as conn:
            return _attempts(conn, task_id)

    @translated
    def task_detail(self, task_id: int) -> TaskDetail:
        """A task and its attempts (with logs and tracebacks) from one snapshot. Raises NotFound."""
        with read_tx(self.engine) as conn:
            row = conn.execute(select(*TASK_COLUMNS, db_now().label("db_now")).where(Task.id == task_id)).one_or_none()
            if row is None:
                raise NotFound(f"there is no task {task_id}")
            *values, now = row
            return TaskDetail(task=TaskView(*values), attempts=_attempts(conn, task_id), now=now)

    @translated
    def single_tasks(self, *, limit: int = 20, offset: int = 0) -> tuple[list[TaskView], int]:
        """Tasks submitted on their own (and completion hooks), newest first, and how many there are."""
        with read_tx(self.engine) as conn:
            rows = conn.execute(select(*TASK_COLUMNS).where(Task.run_id.is_(None)).order_by(Task.id.desc())
                                .limit(limit).offset(offset)).all()
            total = conn.execute(select(func.count()).select_from(Task).where(Task.run_id.is_(None))).scalar_one()
        return [TaskView(*r) for r in rows], int(total)

    @translated
    def run_attempt_outcomes(self, run_id: int) -> dict[str, int]:
        """How many of the run's attempts ended each way; see :meth:`run_status`."""
        with read_tx(self.engine) as conn:
            return status.outcomes(conn, run_id)

    @translated
    def database_now(self) -> datetime:
        """The database's clock (UTC): what every stored timestamp was written with."""
        with read_tx(self.engine) as conn:
            value: datetime = conn.execute(select(db_now())).scalar_one()
            return value


def _run(conn: Connection, run_id: int) -> RunView:
    row = conn.execute(select(*RUN_COLUMNS).where(Run.id == run_id)).one_or_none()
    if row is None:
        raise NotFound(f"there is no run {run_id}")
    return RunView(**row._mapping, counts=_counts(conn, [run_id]).get(run_id, zero_counts()))


def _attempts(conn: Connection, task_id: int) -> list[AttemptView]:
    rows = conn.execute(select(*ATTEMPT_COLUMNS).where(TaskAttempt.task_id == task_id)
                        .order_by(TaskAttempt.attempt)).all()
    return [AttemptView(**row._mapping) for row in rows]


def _counts(conn: Connection, run_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    if not run_ids:
        return {}
    rows = conn.execute(
        select(Task.run_id, Task.status, func.count())
        .where(Task.run_id.in_(run_ids))
        .group_by(Task.run_id, Task.status)
    ).all()
    counts: dict[int, dict[str, Any]] = {}
    for run_id, task_status, n in rows:
        if run_id is not None:
            counts.setdefault(run_id, zero_counts())[task_status] = int(n)
    return counts
