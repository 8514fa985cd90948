"""Locking in the order every writer keeps, and completing a run when nothing of it is open.

The lock order (see :mod:`service.storage`): the *run* row, then its *tasks* in id order, then
their *attempts*, then *supervisors* rows. :func:`lock_runs` and :func:`lock_tasks` take the
first two steps; :func:`settle_run` completes a run inside a transaction that holds its lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, insert, select, update

from service.storage import notify
from service.storage.db import db_now, status_is
from service.storage.models import DUE_TASK_STATUSES, Run, RunStatus, Task, TaskStatus

log = logging.getLogger("tenure.storage")

HOOK_MAX_ATTEMPTS = 3
OPEN_TASK_STATUSES = tuple(s.value for s in (*DUE_TASK_STATUSES, TaskStatus.RUNNING))


def lock_runs(conn: Connection, run_ids: Iterable[int | None]) -> None:
    """Lock these run rows in id order (the first step of the lock order). A no-op on SQLite."""
    ids = sorted({r for r in run_ids if r is not None})
    if ids:
        conn.execute(select(Run.id).where(Run.id.in_(ids)).order_by(Run.id).with_for_update()).all()


def lock_tasks(conn: Connection, ids_query: Any) -> list[int]:
    """Lock the tasks a ``SELECT tasks.id ...`` finds, in id order; returns their ids."""
    return [int(i) for i in conn.execute(ids_query.order_by(Task.id).with_for_update()).scalars()]


def settle_run(conn: Connection, run_id: int) -> bool:
    """Mark the run completed if none of its tasks is open; create its hook task then.

    Runs inside the caller's transaction, which has locked the run row first (the lock order),
    so two transactions finishing a run's last two tasks cannot both miss the completion. The
    completion is guarded on ``status = 'running'``, so each completion creates one hook task;
    the hook then runs at least once, with the lease guarantees of any task (a crash re-runs
    it). Returns True when this call completed the run.
    """
    run = conn.execute(select(Run.id, Run.on_complete).where(Run.id == run_id)).one_or_none()
    if run is None:
        return False
    open_tasks = (
        select(Task.id)
        .where(Task.run_id == run_id, status_is(Task.status, *OPEN_TASK_STATUSES))  # seeks ix_tasks_run_status
        .exists()
    )
    changed = conn.execute(
        update(Run)
        .where(Run.id == run_id, status_is(Run.status, "running"), ~open_tasks)
        .values(status=RunStatus.COMPLETED.value, finished_at=db_now())
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
                created_at=db_now(), queued_at=db_now(),
            )
            .returning(Task.id)
        ).scalar_one()
        conn.execute(update(Run).where(Run.id == run_id).values(hook_task_id=hook_id))
        notify.notify(conn)
        log.info("run.hook_queued run=%s task=%s kind=%s", run_id, hook_id, run.on_complete)
    return True
