"""Ending attempts in group commits: many finishes, one transaction, each write still fenced.

A supervisor that runs many short tasks ends many attempts a second. Writing each end in its
own transaction spends most of the time building statements and taking the write lock, and
makes every other writer (a person submitting a task) queue behind a stream of small
transactions. :func:`finish_many` writes a batch of ends at once:

1. the runs of the tasks that end are locked, in id order (the lock order);
2. the tasks still leased by this supervisor for these attempts are read (and locked
   ``FOR UPDATE`` on PostgreSQL, in id order): a task missing from it lost its lease, and its
   finish is dropped, exactly as a single fenced write would have been;
3. one executemany updates those tasks, with the same fence in its WHERE clause; one more
   closes their attempt rows;
4. each run touched is settled once (completed, with its hook task, if nothing of it is open).

Either all of it commits or none of it: a crash half-way leaves every task running under the
dead supervisor's lease, to be recovered like any other; nothing is acknowledged (logged, shown
as done, freed as a slot) before the commit. The statements are built once, at import: a batch
pays for SQLAlchemy's statement building once, not per task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Boolean, Connection, Float, Integer, Text, bindparam, case, func, select, update

from service.storage.db import db_now, status_is
from service.storage.models import CHARGED_OUTCOMES, Outcome, Task, TaskAttempt, TaskStatus
from service.storage.runs import lock_runs, settle_run

Key = tuple[int, int]


@dataclass
class Finish:
    """How one attempt ended: what :func:`finish_many` writes for it.

    ``outcome`` SUCCEEDED stores ``result``; FAILED, TIMED_OUT or CRASHED store ``error``,
    charge the attempt and either schedule a retry ``retry_in_s`` seconds from now by the
    database's clock (status ``retrying``) or fail the task. ``progress`` and ``checkpoint``
    (None: unchanged) are the latest the attempt reported; ``record`` what its attempt row
    keeps (``logs``, ``logs_cut``, ``traceback``).
    """

    task_id: int
    attempt: int
    run_id: int | None
    outcome: Outcome
    result: Any = None
    error: str | None = None
    retry_in_s: float | None = None
    progress: float | None = None
    checkpoint: Any = None
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> Key:
        return (self.task_id, self.attempt)

    @property
    def status(self) -> TaskStatus:
        if self.outcome is Outcome.SUCCEEDED:
            return TaskStatus.SUCCEEDED
        return TaskStatus.RETRYING if self.retry_in_s is not None else TaskStatus.FAILED

    @property
    def terminal(self) -> bool:
        return self.status is not TaskStatus.RETRYING


def _flag(name: str) -> Any:
    return bindparam(name, type_=Boolean)


_TASK_END = (
    update(Task)
    .where(
        (Task.id == bindparam("f_id"))
        & (Task.supervisor_id == bindparam("f_supervisor"))
        & (Task.attempts == bindparam("f_attempt"))
        & status_is(Task.status, "running")
    )
    .values(
        status=bindparam("f_status"),
        error=bindparam("f_error"),
        supervisor_id=None,
        next_attempt_at=case((_flag("f_retry"), db_now(bindparam("f_retry_in_s", type_=Float))), else_=None),
        charged=Task.charged + bindparam("f_charge", type_=Integer),
        result=case((_flag("f_succeeded"), bindparam("f_result", type_=Task.result.type)), else_=Task.result),
        progress=case((_flag("f_moved"), bindparam("f_progress", type_=Float)), else_=Task.progress),
        checkpoint=case((_flag("f_saved"), bindparam("f_checkpoint", type_=Task.checkpoint.type)),
                        else_=Task.checkpoint),
        finished_at=case((_flag("f_terminal"), db_now()), else_=Task.finished_at),
    )
    .execution_options(synchronize_session=False)
)

_ATTEMPT_END = (
    update(TaskAttempt)
    .where(
        (TaskAttempt.task_id == bindparam("f_id"))
        & (TaskAttempt.attempt == bindparam("f_attempt"))
        & status_is(TaskAttempt.outcome, "running")
    )
    .values(
        outcome=bindparam("f_outcome"), error=bindparam("f_error"), finished_at=db_now(),
        charged=bindparam("f_charged", type_=Boolean),
        # What the record leaves out stays as the heartbeats wrote it.
        logs=func.coalesce(bindparam("f_logs", type_=Text), TaskAttempt.logs),
        logs_cut=func.coalesce(bindparam("f_logs_cut", type_=Integer), TaskAttempt.logs_cut),
        traceback=func.coalesce(bindparam("f_traceback", type_=Text), TaskAttempt.traceback),
    )
    .execution_options(synchronize_session=False)
)


def finish_many(conn: Connection, supervisor_id: int, finishes: Sequence[Finish]) -> set[Key]:
    """Write these attempts' ends in the caller's write transaction; returns the keys applied.

    A finish whose lease was lost (the task is no longer running under this supervisor at this
    attempt: cancelled, reclaimed) is left out and writes nothing.
    """
    if not finishes:
        return set()
    lock_runs(conn, [f.run_id for f in finishes if f.terminal])
    wanted = {f.key for f in finishes}
    ids = sorted({f.task_id for f in finishes})
    held: set[Key] = set()
    for chunk in range(0, len(ids), 500):  # SQLite caps the bound parameters of one statement
        rows = conn.execute(
            select(Task.id, Task.attempts)
            .where(Task.id.in_(ids[chunk:chunk + 500]), Task.supervisor_id == supervisor_id,
                   status_is(Task.status, "running"))
            .order_by(Task.id)
            .with_for_update()
        ).all()
        held.update((int(r.id), int(r.attempts)) for r in rows)
    applied = [f for f in sorted(finishes, key=lambda f: f.task_id) if f.key in held and f.key in wanted]
    if not applied:
        return set()
    conn.execute(_TASK_END, [_task_params(f, supervisor_id) for f in applied])
    conn.execute(_ATTEMPT_END, [_attempt_params(f) for f in applied])
    for run_id in sorted({f.run_id for f in applied if f.terminal and f.run_id is not None}):
        settle_run(conn, run_id)
    return {f.key for f in applied}


def _task_params(f: Finish, supervisor_id: int) -> dict[str, Any]:
    succeeded = f.outcome is Outcome.SUCCEEDED
    progress = 1.0 if succeeded else f.progress
    return {
        "f_id": f.task_id, "f_supervisor": supervisor_id, "f_attempt": f.attempt,
        "f_status": f.status.value, "f_error": f.error,
        "f_retry": f.retry_in_s is not None, "f_retry_in_s": f.retry_in_s or 0.0,
        "f_charge": 1 if f.outcome in CHARGED_OUTCOMES else 0,
        "f_succeeded": succeeded, "f_result": f.result if succeeded else None,
        "f_moved": progress is not None, "f_progress": progress or 0.0,
        "f_saved": f.checkpoint is not None, "f_checkpoint": f.checkpoint,
        "f_terminal": f.terminal,
    }


def _attempt_params(f: Finish) -> dict[str, Any]:
    return {
        "f_id": f.task_id, "f_attempt": f.attempt, "f_outcome": f.outcome.value, "f_error": f.error,
        "f_charged": f.outcome in CHARGED_OUTCOMES, "f_logs": f.record.get("logs"),
        "f_logs_cut": f.record.get("logs_cut"), "f_traceback": f.record.get("traceback"),
    }
