"""How attempts end: every statement that closes an attempt, whatever ended it.

One verb writes the ends a supervisor records (:func:`end_attempts`): succeeded, failed, timed
out, crashed, lost, released, in any mix and any number, in the caller's write transaction. A
reclaim of a dead supervisor's leases goes through it too (as lost ends, fenced by the dead
holder's id); a person's cancel closes attempts with :func:`cancel_attempts`, the only other
statement that moves an attempt out of ``running``.

:func:`end_attempts`, step by step, keeping the lock order of :mod:`service.storage`:

1. the runs of the tasks that end for good are locked, in id order;
2. the tasks still leased by the holder *for these attempts* are locked (``FOR UPDATE`` on
   PostgreSQL), in id order and in chunks (no statement binds more than :data:`CHUNK` ids): an
   end whose task is not among them lost its lease (cancelled, reclaimed) and writes nothing;
3. one executemany moves those tasks on (fenced again in its WHERE clause), one closes their
   attempt rows;
4. each run touched by an end for good is settled once (completed, with its hook, if nothing
   of it is open); work made due again is announced.

What each outcome does to its task:

============  ==================================================  =======  ====================
outcome       the task becomes                                    charged  counts to MAX_LOST
============  ==================================================  =======  ====================
succeeded     succeeded, with the result                          no       no
failed        retrying (after ``retry_in_s``) or failed           yes      no
crashed       retrying or failed                                  yes      no
timed_out     retrying or failed                                  yes      no
lost          queued, due at once (failed at MAX_LOST counted)    no       when ``counted``
released      queued, due at once                                 no       no
============  ==================================================  =======  ====================

A lost end is *counted* when the task might be what interrupted it (its supervisor died, a
process it shared crashed, no process started for it): :data:`MAX_LOST` of those fail the task,
so a task that kills whatever runs it cannot loop forever. A loss its supervisor caused on
purpose (a neighbour's timeout or cancel stopped the process) is never counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Boolean, Connection, Float, Integer, Text, bindparam, case, func, select, update

from service.storage import notify
from service.storage.completion import lock_runs, settle_run
from service.storage.db import db_now, status_is
from service.storage.models import CHARGED_OUTCOMES, Outcome, Task, TaskAttempt, TaskStatus

MAX_LOST = 20  # counted losses after which a task fails instead of looping
CHUNK = 500  # ids bound in one statement at most (SQLite's default limit is 32,766; PostgreSQL's 65,535)

Key = tuple[int, int]


@dataclass(frozen=True)
class End:
    """How one attempt ended: everything its task and attempt rows keep of it.

    ``error`` is one line for people (None for a success). A charged outcome retries after
    ``retry_in_s`` seconds by the database's clock, or fails the task when it is None.
    ``progress`` and ``checkpoint`` (None: unchanged) are the latest the attempt reported.
    ``logs``, ``logs_cut`` and ``traceback`` are what its attempt row keeps (None: as the
    heartbeats left them). A lost end ``isolate``\\ s the task (it runs alone in a process of its
    own from then on), and is ``counted`` toward :data:`MAX_LOST` unless its supervisor caused
    it on purpose; ``lost_before`` is the task's counted losses before this one (its lease says).
    """

    task_id: int
    attempt: int
    run_id: int | None
    outcome: Outcome
    error: str | None = None
    result: Any = None
    retry_in_s: float | None = None
    progress: float | None = None
    checkpoint: Any = None
    logs: str | None = None
    logs_cut: int | None = None
    traceback: str | None = None
    isolate: bool = False
    counted: bool = False
    lost_before: int = 0
    limited: bool = False  # it ran under a queue's or key's limit: its end frees a slot others may wait for

    @property
    def key(self) -> Key:
        return (self.task_id, self.attempt)

    @property
    def charged(self) -> bool:
        return self.outcome in CHARGED_OUTCOMES

    @property
    def gives_up(self) -> bool:
        """A lost end that fails its task: the last of :data:`MAX_LOST` counted losses."""
        return self.outcome is Outcome.LOST and self.counted and self.lost_before + 1 >= MAX_LOST

    @property
    def status(self) -> TaskStatus:
        """What its task becomes."""
        if self.outcome is Outcome.SUCCEEDED:
            return TaskStatus.SUCCEEDED
        if self.charged:
            return TaskStatus.RETRYING if self.retry_in_s is not None else TaskStatus.FAILED
        return TaskStatus.FAILED if self.gives_up else TaskStatus.QUEUED

    @property
    def terminal(self) -> bool:
        return self.status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED)

    def task_error(self) -> str | None:
        """What the task row's ``error`` says after this end."""
        if self.gives_up:
            return (f"lost {self.lost_before + 1} times without finishing (last: {self.error}); tenure stopped "
                    "retrying it in case it is what kills the processes running it")
        return self.error


def _flag(name: str) -> Any:
    return bindparam(name, type_=Boolean)


_TASK_END = (
    update(Task)
    .where(
        (Task.id == bindparam("e_id"))
        & (Task.supervisor_id == bindparam("e_holder"))
        & (Task.attempts == bindparam("e_attempt"))
        & status_is(Task.status, "running")
    )
    .values(
        status=bindparam("e_status"),
        error=case((_flag("e_keep_error"), Task.error), else_=bindparam("e_error", type_=Text)),
        supervisor_id=None,
        # Due at once is NULL: no process's clock decides when (see storage.due); a retry waits its backoff.
        next_attempt_at=case((_flag("e_retry"), db_now(bindparam("e_retry_in_s", type_=Float))), else_=None),
        queued_at=case((_flag("e_queued"), db_now()), else_=Task.queued_at),
        charged=Task.charged + bindparam("e_charge", type_=Integer),
        lost=Task.lost + bindparam("e_lost", type_=Integer),
        isolated=case((_flag("e_isolate"), True), else_=Task.isolated),
        result=case((_flag("e_succeeded"), bindparam("e_result", type_=Task.result.type)), else_=Task.result),
        progress=case((_flag("e_moved"), bindparam("e_progress", type_=Float)), else_=Task.progress),
        checkpoint=case((_flag("e_saved"), bindparam("e_checkpoint", type_=Task.checkpoint.type)),
                        else_=Task.checkpoint),
        finished_at=case((_flag("e_terminal"), db_now()), else_=Task.finished_at),
    )
    .execution_options(synchronize_session=False)
)

_ATTEMPT_END = (
    update(TaskAttempt)
    .where(
        (TaskAttempt.task_id == bindparam("e_id"))
        & (TaskAttempt.attempt == bindparam("e_attempt"))
        & status_is(TaskAttempt.outcome, "running")
    )
    .values(
        outcome=bindparam("e_outcome"), error=bindparam("e_error", type_=Text), finished_at=db_now(),
        charged=bindparam("e_charged", type_=Boolean),
        # What the end leaves out stays as the heartbeats wrote it.
        logs=func.coalesce(bindparam("e_logs", type_=Text), TaskAttempt.logs),
        logs_cut=func.coalesce(bindparam("e_logs_cut", type_=BigInteger), TaskAttempt.logs_cut),
        traceback=func.coalesce(bindparam("e_traceback", type_=Text), TaskAttempt.traceback),
    )
    .execution_options(synchronize_session=False)
)


def end_attempts(conn: Connection, holder: int, ends: Sequence[End]) -> set[Key]:
    """Write these ends in the caller's write transaction; returns the keys applied.

    ``holder`` is the supervisor whose leases they are (the fence). An end whose task is no
    longer running under ``holder`` at its attempt (cancelled, reclaimed, ended already) is
    left out and writes nothing. Two ends for one attempt: the first is written.
    """
    if not ends:
        return set()
    firsts: dict[Key, End] = {}
    for end in ends:
        firsts.setdefault(end.key, end)
    lock_runs(conn, [e.run_id for e in firsts.values() if e.terminal])
    held = held_by(conn, holder, sorted({task_id for task_id, _ in firsts}))
    applied = [firsts[key] for key in sorted(firsts) if key in held]
    if not applied:
        return set()
    conn.execute(_TASK_END, [_task_params(e, holder) for e in applied])
    conn.execute(_ATTEMPT_END, [_attempt_params(e) for e in applied])
    for run_id in sorted({e.run_id for e in applied if e.terminal and e.run_id is not None}):
        settle_run(conn, run_id)
    if any(e.status is TaskStatus.QUEUED or e.limited for e in applied):
        notify.notify(conn)
    return {e.key for e in applied}


def held_by(conn: Connection, holder: int, task_ids: Sequence[int]) -> set[Key]:
    """Lock the tasks among ``task_ids`` that ``holder`` leases, in id order; their (id, attempt)."""
    held: set[Key] = set()
    for start in range(0, len(task_ids), CHUNK):
        rows = conn.execute(
            select(Task.id, Task.attempts)
            .where(Task.id.in_(task_ids[start:start + CHUNK]), Task.supervisor_id == holder,
                   status_is(Task.status, "running"))
            .order_by(Task.id)
            .with_for_update()
        ).all()
        held.update((int(r.id), int(r.attempts)) for r in rows)
    return held


def leased_by(conn: Connection, holder: int) -> list[tuple[int, int, int | None, int]]:
    """(task id, attempt, run id, counted losses) of every task ``holder`` leases, in id order; [] if none."""
    rows = conn.execute(
        select(Task.id, Task.attempts, Task.run_id, Task.lost)
        .where(Task.supervisor_id == holder, status_is(Task.status, "running"))
        .order_by(Task.id)
    ).all()
    return [(int(r.id), int(r.attempts), r.run_id, int(r.lost)) for r in rows]


def cancel_attempts(conn: Connection, tasks: Any) -> int:
    """Close as ``cancelled`` (not charged) the open attempts of the running tasks ``tasks`` selects.

    ``tasks`` is a ``SELECT tasks.id ...``; the caller has locked those tasks (after their run).
    Call it before the tasks leave ``running``. Returns how many attempts it closed.
    """
    return int(conn.execute(
        update(TaskAttempt)
        .where(status_is(TaskAttempt.outcome, "running"),
               TaskAttempt.task_id.in_(tasks.where(status_is(Task.status, "running")).scalar_subquery()))
        .values(outcome=Outcome.CANCELLED.value, error="cancelled", finished_at=db_now(), charged=False)
        .execution_options(synchronize_session=False)
    ).rowcount)


def _task_params(e: End, holder: int) -> dict[str, Any]:
    succeeded = e.outcome is Outcome.SUCCEEDED
    progress = 1.0 if succeeded else e.progress
    return {
        "e_id": e.task_id, "e_holder": holder, "e_attempt": e.attempt, "e_status": e.status.value,
        "e_keep_error": e.outcome is Outcome.RELEASED, "e_error": e.task_error(),
        "e_retry": e.status is TaskStatus.RETRYING, "e_retry_in_s": e.retry_in_s or 0.0,
        "e_queued": e.status is TaskStatus.QUEUED,
        "e_charge": int(e.charged), "e_lost": int(e.outcome is Outcome.LOST and e.counted),
        "e_isolate": e.isolate, "e_succeeded": succeeded, "e_result": e.result if succeeded else None,
        "e_moved": progress is not None, "e_progress": progress or 0.0,
        "e_saved": e.checkpoint is not None, "e_checkpoint": e.checkpoint,
        "e_terminal": e.terminal,
    }


def _attempt_params(e: End) -> dict[str, Any]:
    return {
        "e_id": e.task_id, "e_attempt": e.attempt, "e_outcome": e.outcome.value, "e_error": e.error,
        "e_charged": e.charged, "e_logs": e.logs, "e_logs_cut": e.logs_cut, "e_traceback": e.traceback,
    }
