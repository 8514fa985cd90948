"""What a run's page shows, from one snapshot, and its ETag: the status read every poll makes.

Its cost is fixed whatever the run's size: three statements compute the ETag (an unchanged
run answers 304 after them), and a page of at most a few more statements reads what changed;
a big run is read compactly (:func:`compact_status`), none of its statements reading every
task whole. :class:`~service.storage.reads.Reads` calls :func:`run_status` in a read transaction.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, null, select, union_all

from service.errors import InvalidInput, NotFound
from service.storage import flow
from service.storage.db import db_now, status_is, text_tail
from service.storage.due import claim_order
from service.storage.models import Run, SupervisorRow, Task, TaskAttempt, TaskStatus
from service.storage.views import (
    CELL,
    LIVE_WITHIN_S,
    MAX_AHEAD,
    CompactStatus,
    RunStatusView,
    RunView,
    TaskView,
    TilePage,
    zero_counts,
)

TILE_OUTPUT_CHARS = 600  # of the latest attempt's output, shown in a run page's tile

RUN_COLUMNS = (
    Run.id, Run.name, Run.status, Run.kind, Run.total, Run.params, Run.on_complete,
    Run.hook_task_id, Run.created_at, Run.finished_at, Run.scheduled_for, Run.queue, Run.paused_at,
)
TASK_COLUMNS = (
    Task.id, Task.run_id, Task.position, Task.kind, Task.args, Task.status, Task.attempts,
    Task.max_attempts, Task.progress, Task.result, Task.error, Task.created_at, Task.started_at,
    Task.finished_at, Task.next_attempt_at, Task.supervisor_id, Task.charged, Task.lost, Task.isolated,
    Task.label, Task.timeout_s, Task.memory_limit_mb, Task.scheduled_for, Task.queue, Task.priority,
    Task.limit_key, Task.unique_key,
)
ATTEMPT_COLUMNS = (
    TaskAttempt.attempt, TaskAttempt.supervisor_id, TaskAttempt.started_at, TaskAttempt.finished_at,
    TaskAttempt.outcome, TaskAttempt.error, TaskAttempt.charged, TaskAttempt.traceback, TaskAttempt.logs,
    TaskAttempt.logs_cut,
)



def until(run: RunView, now: datetime) -> int | None:
    """How far away a run's start is, as coarse as a page says it ("in 40 s", "in 3 min", "in 2 h"):
    part of the ETag, so that the words change while nothing in the database does."""
    if run.scheduled_for is None or run.scheduled_for <= now:
        return None
    left = (run.scheduled_for - now).total_seconds()
    return int(left // 5) if left < 120 else 10_000 + int(left // 60)


def run_status(conn: Connection, run_id: int, etag: str | None, page: TilePage | None) -> RunStatusView:
    """Everything a run's page shows, from one snapshot, and its ETag.

    Three statements compute the ETag: the run row with the database's clock, one grouped
    aggregate of its tasks by status (which gives the counts too), and its hook task's
    status. When ``etag`` matches, that is all (``changed`` is False). Otherwise two more
    read the tasks in position order and the attempt outcomes (``retried``: charged
    attempts another attempt followed). Raises NotFound for an unknown id.

    With ``page``, a run of more than ``page.over`` tasks is read compactly instead (see
    :func:`compact_status`): a fixed number of statements, none of which reads every task
    whole. Raises InvalidInput for a page of an unknown status.
    """
    row = conn.execute(select(*RUN_COLUMNS, db_now().label("db_now")).where(Run.id == run_id)).one_or_none()
    if row is None:
        raise NotFound(f"there is no run {run_id}")
    values = dict(row._mapping)
    now = values.pop("db_now")
    if page is not None and row.total > page.over:
        return compact_status(conn, values, now, etag, page)
    groups = conn.execute(
        select(
            Task.status, func.count(), func.sum(Task.attempts), func.sum(func.round(Task.progress * 100)),
            func.max(Task.finished_at), func.max(Task.next_attempt_at), func.count(Task.error),
            func.sum(Task.charged), func.sum(Task.lost), func.sum(Task.output_chars),
        )
        .where(Task.run_id == run_id)
        .group_by(Task.status)
        .order_by(Task.status)
    ).all()
    hook_status = None
    if row.hook_task_id is not None:
        hook_status = conn.execute(select(Task.status).where(Task.id == row.hook_task_id)).scalar()
    counts = zero_counts()
    for group in groups:
        counts[group[0]] = int(group[1])
    run = RunView(**values, counts=counts)
    ahead, workers, held = _ahead(conn, run, now)
    fingerprint = repr((run.status, run.finished_at, run.paused_at, run.hook_task_id, hook_status,
                        [tuple(g) for g in groups], ahead, held, bool(workers), until(run, now)))
    tag = hashlib.sha256(fingerprint.encode()).hexdigest()[:20]
    view = RunStatusView(etag=tag, run=run, now=now, hook_status=hook_status, ahead=ahead, workers=workers, held=held)
    if etag == tag:
        return view
    latest = (TaskAttempt.task_id == Task.id) & (TaskAttempt.attempt == Task.attempts)
    tasks = conn.execute(
        select(*TASK_COLUMNS, text_tail(TaskAttempt.logs, TILE_OUTPUT_CHARS))
        .outerjoin(TaskAttempt, latest).where(Task.run_id == run_id).order_by(Task.position)
    ).all()
    hook = None
    if row.hook_task_id is not None:
        found = conn.execute(select(*TASK_COLUMNS).where(Task.id == row.hook_task_id)).one_or_none()
        hook = TaskView(*found) if found is not None else None
    return RunStatusView(etag=tag, run=run, now=now, hook_status=hook_status, ahead=ahead, workers=workers, held=held,
                         tasks=[TaskView(*t) for t in tasks], outcomes=outcomes(conn, run_id), hook=hook)


def _ahead(conn: Connection, run: RunView, now: datetime) -> tuple[int | None, int | None, str | None]:
    """(due tasks to be claimed before this run's first, live supervisors, the pause or limit
    that holds it back), when it waits for a slot.

    (None, None, None) unless the run is live, runs nothing and has a task waiting. Then one
    statement walks its queue's claim order (:mod:`service.storage.due`) for at most MAX_AHEAD +
    1 due tasks, with the count of live supervisors (not stopped, a heartbeat within
    LIVE_WITHIN_S) beside them: the poll of any run, however long the queue or the run, reads a
    bounded window. None ahead when the window holds none of this run's tasks and ends before
    MAX_AHEAD: its tasks wait out a retry's backoff, not for a slot. What holds it back (a
    paused run or queue, a queue or key at its limit) is read in the same statement
    (:func:`flow.hold_columns`).
    """
    due = (TaskStatus.QUEUED, TaskStatus.RETRYING)
    if not run.live or run.counts.get(TaskStatus.RUNNING.value, 0):
        return None, None, None
    if not sum(run.counts.get(s.value, 0) for s in due):
        return None, None, None
    alive = (
        select(func.count()).select_from(SupervisorRow)
        .where(SupervisorRow.stopped_at.is_(None), SupervisorRow.heartbeat_at >= db_now(-LIVE_WITHIN_S))
        .scalar_subquery()
    )
    window = conn.execute(claim_order(MAX_AHEAD + 1, run.queue, Task.run_id, alive.label("alive"),
                                      *flow.hold_columns(run.id, run.queue)))
    seen, workers, first = 0, None, None
    for row in window:
        first = first or row
        workers = int(row.alive)
        if row.run_id == run.id:
            window.close()
            return seen, workers, flow.hold(first, run.queue, run.paused_at is not None)
        seen += 1
    return (MAX_AHEAD if seen > MAX_AHEAD else None), workers, flow.hold(first, run.queue, run.paused_at is not None)


def compact_status(conn: Connection, values: dict[str, Any], now: datetime, etag: str | None,
                    page: TilePage) -> RunStatusView:
    """A big run's status: its ETag from indexes alone, then one page of tiles and every task's letter.

    The ETag's statement is one ``UNION ALL`` of two grouped reads: the count of each status
    (a covering scan of ix_tasks_run_status, no table row read) and, for the running and
    retrying tasks only (a seek on that index), the figures that move while a task stays in its
    status (progress, output, attempts, the sum of their ids for who is in it). A queued or
    finished task changes only by changing status, or with the run's own row (a retry of a
    finished run), so the counts and the run row stand for them. Then, when the ETag changed:
    every task's (position, status), the running tasks, one page of tiles (``page.status``,
    in position order, ``page.limit`` from ``page.offset``; [] past the end) with their latest
    output, the hook task; once the run is over, also the attempt outcomes, the failed
    tasks' errors grouped, and the slowest successes.
    """
    if page.status is not None and page.status not in CELL:
        raise InvalidInput(f"there is no task status {page.status!r}; expected one of {', '.join(CELL)}")
    run_id = values["id"]
    per_status = select(Task.status, func.count(), *([null()] * 9)).where(Task.run_id == run_id).group_by(Task.status)
    moving = select(
        Task.status, func.count(), func.sum(Task.id), func.sum(Task.attempts),
        func.sum(func.round(Task.progress * 100)), func.max(Task.next_attempt_at), func.count(Task.error),
        func.sum(Task.charged), func.sum(Task.lost), func.sum(Task.output_chars), func.max(Task.started_at),
    ).where(Task.run_id == run_id, status_is(Task.status, TaskStatus.RUNNING, TaskStatus.RETRYING))
    rows: Sequence[Any] = conn.execute(union_all(per_status, moving.group_by(Task.status))).all()
    groups: list[tuple[Any, ...]] = sorted((tuple(g) for g in rows), key=repr)
    hook_status = None
    if values["hook_task_id"] is not None:
        hook_status = conn.execute(select(Task.status).where(Task.id == values["hook_task_id"])).scalar()
    counts = zero_counts()
    for group in groups:
        if group[2] is None:  # the per-status count, not the running tasks' figures
            counts[group[0]] = int(group[1])
    run = RunView(**values, counts=counts)
    ahead, workers, held = _ahead(conn, run, now)
    fingerprint = repr(("compact", run.status, run.finished_at, run.paused_at, run.hook_task_id, hook_status, groups,
                        ahead, held, bool(workers), until(run, now)))
    tag = hashlib.sha256(fingerprint.encode()).hexdigest()[:20]
    if etag == tag:
        return RunStatusView(etag=tag, run=run, now=now, hook_status=hook_status, ahead=ahead, workers=workers,
                             held=held)
    cells = bytearray(CELL[TaskStatus.QUEUED].encode() * run.total)
    letters = {status: ord(letter) for status, letter in CELL.items()}
    for position, status in conn.execute(select(Task.position, Task.status).where(Task.run_id == run_id)).all():
        if position >= len(cells):
            cells.extend(b"q" * (position + 1 - len(cells)))
        cells[position] = letters.get(status, ord("?"))
    running = conn.execute(select(Task.progress, Task.started_at)
                           .where(Task.run_id == run_id, status_is(Task.status, TaskStatus.RUNNING))).all()
    latest = (TaskAttempt.task_id == Task.id) & (TaskAttempt.attempt == Task.attempts)
    tiles = select(*TASK_COLUMNS, text_tail(TaskAttempt.logs, TILE_OUTPUT_CHARS)).outerjoin(TaskAttempt, latest)
    tiles = tiles.where(Task.run_id == run_id)
    if page.status is not None:
        tiles = tiles.where(Task.status == page.status)
    shown = conn.execute(tiles.order_by(Task.position).limit(page.limit).offset(page.offset)).all()
    hook = None
    if values["hook_task_id"] is not None:
        found = conn.execute(select(*TASK_COLUMNS).where(Task.id == values["hook_task_id"])).one_or_none()
        hook = TaskView(*found) if found is not None else None
    ended: dict[str, int] = {}
    errors: list[tuple[str | None, int]] = []
    slowest: list[tuple[int, float]] = []
    if not run.live:
        ended = outcomes(conn, run_id)
        errors = [(e, int(n)) for e, n in conn.execute(
            select(Task.error, func.count()).where(Task.run_id == run_id, status_is(Task.status, TaskStatus.FAILED))
            .group_by(Task.error))]
        slowest = _slowest(conn.execute(
            select(Task.position, Task.started_at, Task.finished_at)
            .where(Task.run_id == run_id, status_is(Task.status, TaskStatus.SUCCEEDED))).all())
    compact = CompactStatus(cells=cells.decode(), running=[(p, started) for p, started in running], errors=errors,
                            slowest=slowest)
    return RunStatusView(etag=tag, run=run, now=now, hook_status=hook_status, ahead=ahead, workers=workers, held=held,
                         tasks=[TaskView(*t) for t in shown], outcomes=ended, hook=hook, compact=compact)


def _slowest(rows: Sequence[Row[int, datetime | None, datetime | None]]) -> list[tuple[int, float]]:
    timed = ((position + 1, (finished - started).total_seconds()) for position, started, finished in rows
             if started is not None and finished is not None)
    return heapq.nlargest(3, timed, key=lambda pair: pair[1])


def outcomes(conn: Connection, run_id: int) -> dict[str, int]:
    # Driven by the run's task ids (a covering index scan), then each task's attempts by index:
    # a join that needed tasks' other columns let SQLite's averaged statistics pick a scan.
    later_attempts = TaskAttempt.__table__.alias()
    later = later_attempts.c
    followed = later.id.is_not(None)
    rows = conn.execute(
        select(TaskAttempt.outcome, TaskAttempt.charged, followed, func.count())
        .outerjoin(later_attempts, (later.task_id == TaskAttempt.task_id) & (later.attempt == TaskAttempt.attempt + 1))
        .where(TaskAttempt.task_id.in_(select(Task.id).where(Task.run_id == run_id)))
        .group_by(TaskAttempt.outcome, TaskAttempt.charged, followed)
    ).all()
    counts: dict[str, int] = {}
    for outcome, charged, was_followed, n in rows:
        counts[outcome] = counts.get(outcome, 0) + int(n)
        if charged and was_followed:
            counts["retried"] = counts.get("retried", 0) + int(n)
    return counts


