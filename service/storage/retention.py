"""Retention: deleting what ended long ago, in batches short enough never to stall anyone.

What goes: runs that ended (completed or cancelled) before the cutoff, with their tasks,
attempts, logs, idempotency keys, completion hook and schedule fire row; single tasks that ended
before it; schedule fire rows that created nothing (skipped, missed) written before it; and
supervisors stopped before it that no remaining row refers to. Schedules themselves never go. A run in progress is never
touched: each batch re-checks, under the run's lock, that it has still ended. Nor is a run whose
completion hook has not ended (the run waits for it), and a hook that has not ended is never
deleted. A run takes several batches, so the first marks it ``deleting`` under its lock: retry
and cancel refuse such a run (they would revive one whose tasks are half gone), and the next
prune finishes a run a stopped one left half deleted, whatever its window. Each batch is one
transaction, sized to take about :data:`TARGET_BATCH_S` (it starts at ``batch`` tasks and
grows or shrinks by what the last one took), so the write lock is held for milliseconds
whatever the disk; between batches the lock is left free as long as the batch held it,
so writers waiting meanwhile (claims, heartbeats, finishes, submits) get their turn.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, Row, delete, exists, literal_column, select, update

from service.storage.completion import OPEN_TASK_STATUSES, lock_tasks
from service.storage.db import db_now, status_is, write_tx
from service.storage.errors import translated
from service.storage.models import (
    TERMINAL_TASK_STATUSES,
    FireOutcome,
    IdempotencyKey,
    Run,
    RunStatus,
    ScheduleFire,
    SupervisorRow,
    Task,
    TaskAttempt,
)

PAUSE_S = 0.002  # at least, between batches: other writers take the lock meanwhile
TARGET_BATCH_S = 0.02  # what one batch (one write transaction, its commit included) should take
MIN_BATCH, MAX_BATCH = 5, 1000  # tasks a batch deletes, whatever the last one took
TERMINAL = tuple(s.value for s in TERMINAL_TASK_STATUSES)
ENDED_RUN = (RunStatus.COMPLETED.value, RunStatus.CANCELLED.value)
NOTHING_MADE = (FireOutcome.SKIPPED.value, FireOutcome.MISSED.value)


@dataclass
class PruneReport:
    runs: int = 0
    tasks: int = 0
    attempts: int = 0
    supervisors: int = 0
    fires: int = 0  # schedule fire rows that created nothing (their other rows go with their runs and tasks)
    batches: int = 0
    longest_batch_s: float = 0.0  # the longest write transaction, i.e. write-lock hold
    seconds: float = 0.0
    batch_times: list[float] = field(default_factory=list, repr=False)


class Retention:
    engine: Engine

    @translated
    def prune(
        self, older_than_s: float, *, batch: int = 50, stop: threading.Event | None = None,
        progress: Callable[[PruneReport], None] | None = None,
    ) -> PruneReport:
        """Delete what ended more than ``older_than_s`` ago (by the database's clock); see the module.

        Runs batch after batch until nothing is left (or ``stop`` is set); ``progress`` is told
        after each batch. Returns what was deleted and the longest batch.
        """
        report = PruneReport()
        started = time.monotonic()
        size = max(MIN_BATCH, min(MAX_BATCH, batch))
        steps = (self._prune_run_batch, self._prune_single_batch, self._prune_fires_batch,
                 self._prune_supervisors_batch)
        for step in steps:
            while not (stop is not None and stop.is_set()):
                began = time.monotonic()
                with write_tx(self.engine) as conn:
                    did = step(conn, older_than_s, size, report)
                took = time.monotonic() - began
                if not did:
                    break
                size = _next_size(size, took)
                report.batches += 1
                report.batch_times.append(took)
                report.longest_batch_s = max(report.longest_batch_s, took)
                if progress is not None:
                    progress(report)
                # The lock is left free as long as it was held: SQLite has no queue of waiting
                # writers (each sleeps and tries again, up to 100 ms apart), so with a short
                # pause a writer might miss every chance for seconds.
                threading.Event().wait(max(PAUSE_S, took))
        report.seconds = time.monotonic() - started
        return report

    def _prune_run_batch(self, conn: Connection, older_than_s: float, batch: int, report: PruneReport) -> bool:
        run = _next_run(conn, older_than_s)
        if run is None:
            return False
        if run.status != RunStatus.DELETING.value:
            # Marked under its lock before its first task goes, so no retry or cancel can bring
            # back a run whose tasks are half gone (they refuse a run being deleted).
            conn.execute(update(Run).where(Run.id == run.id, status_is(Run.status, *ENDED_RUN))
                         .values(status=RunStatus.DELETING.value))
        ids = list(conn.execute(select(Task.id).where(Task.run_id == run.id).order_by(Task.position).limit(batch))
                   .scalars())
        if ids:
            _delete_tasks(conn, ids, report)
            return True
        if run.hook_task_id is not None:
            conn.execute(update(Run).where(Run.id == run.id).values(hook_task_id=None))
            ended = conn.execute(select(Task.id).where(Task.id == run.hook_task_id,
                                                       status_is(Task.status, *TERMINAL))).scalars().all()
            _delete_tasks(conn, list(ended), report)  # a hook that has not ended is never deleted
        conn.execute(delete(IdempotencyKey).where(IdempotencyKey.run_id == run.id))
        conn.execute(delete(ScheduleFire).where(ScheduleFire.run_id == run.id))  # its fire goes with it
        conn.execute(delete(Run).where(Run.id == run.id))
        report.runs += 1
        return True

    def _prune_single_batch(self, conn: Connection, older_than_s: float, batch: int, report: PruneReport) -> bool:
        hooks = select(Run.hook_task_id).where(Run.hook_task_id.is_not(None))
        ids = list(conn.execute(
            select(Task.id).where(Task.run_id.is_(None), status_is(Task.status, *TERMINAL),
                                  Task.finished_at < db_now(-older_than_s), Task.id.not_in(hooks))
            .order_by(Task.id).limit(batch)
        ).scalars())
        if not ids:
            return False
        _delete_tasks(conn, ids, report)
        return True

    def _prune_fires_batch(self, conn: Connection, older_than_s: float, batch: int, report: PruneReport) -> bool:
        """Fire rows that created nothing (skipped, missed) go when as old as the runs that go; a
        fire that created work goes with its run or task, and a queued one waits. Schedules stay."""
        ids = list(conn.execute(
            select(ScheduleFire.id).where(ScheduleFire.run_id.is_(None), ScheduleFire.task_id.is_(None),
                                          ScheduleFire.outcome.in_(NOTHING_MADE),
                                          ScheduleFire.fired_at < db_now(-older_than_s))
            .limit(batch)
        ).scalars())
        if not ids:
            return False
        conn.execute(delete(ScheduleFire).where(ScheduleFire.id.in_(ids)))
        report.fires += len(ids)
        return True

    def _prune_supervisors_batch(self, conn: Connection, older_than_s: float, batch: int,
                                 report: PruneReport) -> bool:
        referenced = (exists().where(Task.supervisor_id == SupervisorRow.id)
                      | exists().where(TaskAttempt.supervisor_id == SupervisorRow.id))
        ids = list(conn.execute(
            select(SupervisorRow.id).where(SupervisorRow.stopped_at < db_now(-older_than_s), ~referenced)
            .limit(batch)
        ).scalars())
        if not ids:
            return False
        conn.execute(delete(SupervisorRow).where(SupervisorRow.id.in_(ids)))
        report.supervisors += len(ids)
        return True


def _next_run(conn: Connection, older_than_s: float) -> Row[int, str, int | None] | None:
    """Lock the run to prune next (the lock order's first step): one being deleted, whatever its
    age (a prune stopped half-way is finished), else the one that ended first before the cutoff
    and whose completion hook, if any, has ended (a hook still to run keeps its run). None if none."""
    columns = (Run.id, Run.status, Run.hook_task_id)
    deleting = conn.execute(select(*columns).where(status_is(Run.status, RunStatus.DELETING.value))
                            .order_by(Run.id).limit(1).with_for_update()).one_or_none()
    if deleting is not None:
        return deleting
    hook_open = exists().where(Task.id == Run.hook_task_id, status_is(Task.status, *OPEN_TASK_STATUSES))
    return conn.execute(
        select(*columns)
        # The literal matches ix_runs_finished's own condition, so SQLite can use that partial index.
        .where(Run.status != literal_column("'running'"), Run.finished_at < db_now(-older_than_s), ~hook_open)
        .order_by(Run.finished_at).limit(1).with_for_update()
    ).one_or_none()


def _next_size(size: int, took: float) -> int:
    """The next batch's size: toward :data:`TARGET_BATCH_S`, at most twice or half this one's."""
    wanted = int(size * TARGET_BATCH_S / max(took, 1e-6))
    return max(MIN_BATCH, min(MAX_BATCH, 2 * size, max(size // 2, wanted)))


def _delete_tasks(conn: Connection, ids: list[int], report: PruneReport) -> None:
    """Tasks first, then their attempts (the lock order), then the rows that point at them."""
    lock_tasks(conn, select(Task.id).where(Task.id.in_(ids)))
    report.attempts += int(conn.execute(delete(TaskAttempt).where(TaskAttempt.task_id.in_(ids))).rowcount)
    conn.execute(delete(IdempotencyKey).where(IdempotencyKey.task_id.in_(ids)))
    conn.execute(delete(ScheduleFire).where(ScheduleFire.task_id.in_(ids)))
    report.tasks += int(conn.execute(delete(Task).where(Task.id.in_(ids))).rowcount)


__all__: list[Any] = ["PruneReport", "Retention"]
