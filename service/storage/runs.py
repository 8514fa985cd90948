"""Run-level writes: cancel, retry and complete runs; cancel one task.

Each verb is one transaction and takes its locks in the order :mod:`service.storage` states
(the run row, then its tasks by id, then their attempts), and each run-level update is
guarded: it changes the run only if the run is still in the state the verb read under lock.
A run's tasks are selected and changed by predicate (its id and their status), never by a
list of their ids: a run of 100,000 tasks would bind more parameters than one statement takes
(65,535 on PostgreSQL, 32,766 on a default build of SQLite).
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, case, select, update

from service.errors import Conflict, NotFound
from service.storage import notify
from service.storage.completion import OPEN_TASK_STATUSES, lock_runs, lock_tasks, settle_run
from service.storage.db import db_now, status_is, write_tx
from service.storage.endings import cancel_attempts
from service.storage.errors import translated
from service.storage.models import Run, RunStatus, Task, TaskStatus


class Runs:
    """The run-level verbs a person or an application calls (submitting is in :mod:`submit`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @translated
    def cancel_run(self, run_id: int) -> int:
        """Cancel a running run: its open tasks become ``cancelled``, their open attempts close.

        Locks the run, then its open tasks by id, then their attempts. A supervisor running
        one of them sees its lease gone within ``lease_check_s`` and stops that attempt's
        process; any write it tries is fenced off. Atomic. Returns how many tasks were cancelled.

        Raises:
            NotFound: no run has this id.
            Conflict: the run is not running (it completed, was cancelled or is being pruned,
                perhaps just now).
        """
        with write_tx(self.engine) as conn:
            _lock_running_run(conn, run_id, "only a running run can be cancelled")
            # By predicate, never by a list of ids: a run of 100,000 tasks would bind more
            # parameters than either backend takes in one statement.
            open_tasks = select(Task.id).where(Task.run_id == run_id, status_is(Task.status, *OPEN_TASK_STATUSES))
            lock_tasks(conn, open_tasks)
            cancel_attempts(conn, open_tasks)  # while the tasks are still running: it picks those
            cancelled = int(conn.execute(
                update(Task)
                .where(Task.run_id == run_id, status_is(Task.status, *OPEN_TASK_STATUSES))
                .values(
                    status=TaskStatus.CANCELLED.value, finished_at=db_now(), supervisor_id=None,
                    next_attempt_at=None,
                    error=case((Task.error.is_(None), "cancelled"), else_=Task.error),
                )
            ).rowcount)
            changed = conn.execute(
                update(Run)
                .where(Run.id == run_id, status_is(Run.status, "running"))
                .values(status=RunStatus.CANCELLED.value, finished_at=db_now())
            ).rowcount
            assert changed == 1  # the row is locked and was running
        return cancelled

    @translated
    def retry_run(self, run_id: int, extra_attempts: int = 3) -> int:
        """Queue the failed and cancelled tasks of a finished run again, with a fresh budget.

        Each such task gets ``extra_attempts`` more charged attempts (and its count of uncharged
        losses starts again), its error and finish time clear, and the run is ``running`` again.
        When it completes again a new completion hook task is created (``runs.hook_task_id``
        then names the new one). Locks the run, then those tasks by id. Atomic. Returns how
        many tasks were queued.

        Raises:
            NotFound: no run has this id.
            Conflict: the run is still running, or is being deleted by retention (a retry would
                bring back a run that lost some of its tasks already), or none of its tasks
                failed or was cancelled.
        """
        again = (TaskStatus.FAILED.value, TaskStatus.CANCELLED.value)
        with write_tx(self.engine) as conn:
            status = _lock_run(conn, run_id)
            if status == RunStatus.RUNNING.value:
                raise Conflict(f"run {run_id} is still running; retry its failed tasks once it ends")
            if status == RunStatus.DELETING.value:
                raise Conflict(_being_deleted(run_id, "it can no longer be retried: submit its tasks as a new run"))
            if not lock_tasks(conn, select(Task.id).where(Task.run_id == run_id, status_is(Task.status, *again))):
                raise Conflict(f"run {run_id} has no failed or cancelled task to retry")
            queued = int(conn.execute(
                update(Task)
                .where(Task.run_id == run_id, status_is(Task.status, *again))  # by predicate, as cancel_run
                .values(
                    status=TaskStatus.QUEUED.value, max_attempts=Task.charged + extra_attempts, lost=0,
                    error=None, finished_at=None, next_attempt_at=None, queued_at=db_now(), progress=0.0,
                )
            ).rowcount)
            conn.execute(
                update(Run)
                .where(Run.id == run_id, Run.status == status)
                .values(status=RunStatus.RUNNING.value, finished_at=None)
            )
            notify.notify(conn)
        return queued


    @translated
    def cancel_task(self, task_id: int) -> bool:
        """Cancel one task that has not ended: it becomes ``cancelled``, its open attempt closes.

        Locks its run (if it has one), then the task, then its attempt; a run whose last open
        task this was completes. A supervisor running it stops its process within
        ``lease_check_s``. Atomic. Returns True.

        Raises:
            NotFound: no task has this id.
            Conflict: the task has already ended (succeeded, failed or cancelled).
        """
        with write_tx(self.engine) as conn:
            row = conn.execute(select(Task.run_id).where(Task.id == task_id)).one_or_none()
            if row is None:
                raise NotFound(f"there is no task {task_id}")
            lock_runs(conn, [row.run_id])
            found = conn.execute(select(Task.status).where(Task.id == task_id).with_for_update()).one_or_none()
            if found is None:  # deleted (pruned with its run) between the first read and the lock
                raise NotFound(f"there is no task {task_id}")
            if found.status not in OPEN_TASK_STATUSES:
                raise Conflict(f"task {task_id} is {found.status}; only a task that has not ended can be cancelled")
            cancel_attempts(conn, select(Task.id).where(Task.id == task_id))
            conn.execute(
                update(Task)
                .where(Task.id == task_id, status_is(Task.status, *OPEN_TASK_STATUSES))
                .values(status=TaskStatus.CANCELLED.value, finished_at=db_now(), supervisor_id=None,
                        next_attempt_at=None, error="cancelled")
            )
            if row.run_id is not None:
                settle_run(conn, row.run_id)
        return True


def _lock_run(conn: Connection, run_id: int) -> str:
    """Lock the run row (first, by the lock order); its status. Raises NotFound."""
    status = conn.execute(select(Run.status).where(Run.id == run_id).with_for_update()).scalar_one_or_none()
    if status is None:
        raise NotFound(f"there is no run {run_id}")
    return str(status)


def _lock_running_run(conn: Connection, run_id: int, only: str) -> None:
    status = _lock_run(conn, run_id)
    if status == RunStatus.DELETING.value:
        raise Conflict(_being_deleted(run_id, only))
    if status != RunStatus.RUNNING.value:
        raise Conflict(f"run {run_id} is {status}; {only}")


def _being_deleted(run_id: int, what_now: str) -> str:
    """Why a run being pruned refuses a change: half its tasks may be gone already."""
    return f"run {run_id} is being deleted by retention (pruned); {what_now}"
