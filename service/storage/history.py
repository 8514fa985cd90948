"""A run's history for pictures: its attempts over time, its outages, its tasks' durations.

:meth:`History.run_history` is one read transaction of four to six statements whatever the
run's size, each bounded in what it returns, so a page can draw it every few seconds:

1. the run row and the database's clock;
2. a run of up to ``per_task_up_to`` tasks: every attempt, in position order (at most
   :data:`MAX_ATTEMPT_ROWS`); a bigger run: sums per (lane of positions, outcome, time column
   its attempts started in, column they ended in), at most ``lanes × outcomes × columns²``
   rows and in practice a few per lane, from which every column's busy time is exact;
3. the outages, when an attempt was lost: attempts lost because their supervisor died (closed
   after its last heartbeat), grouped by that supervisor, with when the first of them ran again;
   for a big run, one more statement finds each supervisor's last attempt started or ended
   (a sign of life later than its heartbeat, which beats seconds apart);
4. the slowest finished tasks (first start to end);
5. how many succeeded and failed tasks took how long, in bins of :func:`bin_width_ms`.

Times are the database's (every timestamp it stores); elapsed times are computed in SQL as
whole milliseconds (:class:`db.elapsed_ms`), the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, case, func, select
from sqlalchemy.types import DateTime, Integer

from service.errors import NotFound
from service.storage.db import db_now, elapsed_ms, read_tx, status_is
from service.storage.errors import translated
from service.storage.models import Outcome, Run, RunStatus, SupervisorRow, Task, TaskAttempt, TaskStatus

# Ends a supervisor writes itself (a lost attempt is closed by whoever reclaims it; a cancel by a person).
OWN_ENDS = (Outcome.SUCCEEDED, Outcome.FAILED, Outcome.TIMED_OUT, Outcome.CRASHED, Outcome.RELEASED)
PER_TASK_UP_TO = 100  # runs of up to this many tasks are read attempt by attempt
MAX_LANES = 50  # a bigger run is read in at most this many lanes, each a range of positions
COLUMNS = 60  # ... and this many time columns from its start to its end (or now)
MAX_ATTEMPT_ROWS = 5_000  # attempts of a small run read at most (100 tasks, 50 attempts each)
MAX_CELL_ROWS = 20_000  # sums of a big run read at most
MAX_BINS = 24  # bins of the durations' histogram, at most
SLOWEST = 3
# Bin widths, in ms: 1-2-5 steps, then ones a clock reads well (15 s, 30 s, minutes, hours).
STEPS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 15_000, 30_000, 60_000, 120_000,
            300_000, 600_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 21_600_000, 43_200_000, 86_400_000)


@dataclass(frozen=True)
class AttemptSpan:
    """One attempt of a small run's task."""

    task_id: int
    position: int  # of its task, from 0
    label: str | None  # its task's
    attempt: int  # from 1
    started_at: datetime
    finished_at: datetime | None  # None while it runs
    outcome: str
    charged: bool
    supervisor_id: int | None
    error: str | None


@dataclass(frozen=True)
class LaneCell:
    """Attempts of a big run's lane alike in outcome and in the time columns they started and ended in."""

    lane: int  # positions lane * lane_size to (lane + 1) * lane_size - 1
    outcome: str
    first: int  # the time column they started in (of column_ms each from the run's start)
    last: int  # the column they ended in; a running attempt ends at the snapshot's now
    count: int
    start_ms: int  # the sum of their starts, in ms after the run's start
    end_ms: int  # the sum of their ends


@dataclass(frozen=True)
class Outage:
    """A supervisor that died with attempts of this run: from its last sign of life until they were taken back."""

    supervisor_id: int
    last_beat: datetime  # its last sign of life: its heartbeat, or an attempt it started or ended since
    lost: int  # attempts of this run it was running
    reclaimed_at: datetime  # when the last of them was taken back (at a restart, or by a reaper)


@dataclass(frozen=True)
class SlowTask:
    task_id: int
    position: int
    label: str | None
    status: str
    seconds: float  # first start to end


@dataclass(frozen=True)
class RunHistory:
    """What :meth:`History.run_history` read, from one snapshot."""

    run_id: int
    name: str | None
    status: str
    total: int
    created_at: datetime
    finished_at: datetime | None
    now: datetime  # the database's clock at the snapshot
    attempts: list[AttemptSpan] | None  # a small run's; None for a big one
    cells: list[LaneCell] | None  # a big run's; None for a small one
    lane_size: int  # positions per lane: 1 for a small run
    column_ms: int  # a big run's time column; 0 for a small run
    truncated: bool  # more rows matched than were read
    outages: list[Outage]
    durations: list[tuple[str, int, int]]  # (succeeded or failed, bin, tasks): took bin * bin_ms to +bin_ms
    bin_ms: int
    slowest: list[SlowTask]

    @property
    def live(self) -> bool:
        return self.status == RunStatus.RUNNING.value


def bin_width_ms(longest_ms: int, bins: int = MAX_BINS) -> int:
    """The narrowest of :data:`STEPS_MS` that puts 0 to ``longest_ms`` in at most ``bins`` bins."""
    for step in STEPS_MS:
        if longest_ms // step < bins:
            return step
    return int(-(-(longest_ms + 1) // bins))


class History:
    """The read verb of a run's pictures. Callers never build queries."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @translated
    def run_history(self, run_id: int, *, per_task_up_to: int = PER_TASK_UP_TO, lanes: int = MAX_LANES,
                    columns: int = COLUMNS) -> RunHistory:
        """A run's attempts (or their sums per lane and time column), outages and durations.

        One snapshot, four to six statements (see the module). Raises NotFound for an unknown run.
        """
        with read_tx(self.engine) as conn:
            row = conn.execute(select(Run.id, Run.name, Run.status, Run.total, Run.created_at, Run.finished_at,
                                      db_now().label("db_now")).where(Run.id == run_id)).one_or_none()
            if row is None:
                raise NotFound(f"there is no run {run_id}")
            attempts: list[AttemptSpan] | None = None
            cells: list[LaneCell] | None = None
            lane_size, column_ms = 1, 0
            if row.total <= per_task_up_to:
                attempts, truncated = _attempts(conn, run_id)
            else:
                lane_size = -(-row.total // lanes)
                end = row.finished_at if row.finished_at is not None and row.status != "running" else row.db_now
                span_ms = max(1000, int((end - row.created_at).total_seconds() * 1000))
                column_ms = -(-span_ms // columns)
                cells, truncated = _cells(conn, run_id, row.created_at, row.db_now, lane_size, column_ms)
            read = [a.outcome for a in attempts] if attempts is not None else [c.outcome for c in cells or []]
            lost = truncated or Outcome.LOST.value in read  # no lost attempt, no outage: skip its scan
            outages = _outages(conn, run_id, attempts) if lost else []
            slowest, durations, bin_ms = _durations(conn, run_id)
        return RunHistory(
            run_id=row.id, name=row.name, status=row.status, total=row.total, created_at=row.created_at,
            finished_at=row.finished_at, now=row.db_now, attempts=attempts, cells=cells, lane_size=lane_size,
            column_ms=column_ms, truncated=truncated, outages=outages, durations=durations, bin_ms=bin_ms,
            slowest=slowest,
        )


def _attempts(conn: Connection, run_id: int) -> tuple[list[AttemptSpan], bool]:
    rows = conn.execute(
        select(Task.id, Task.position, Task.label, TaskAttempt.attempt, TaskAttempt.started_at,
               TaskAttempt.finished_at, TaskAttempt.outcome, TaskAttempt.charged, TaskAttempt.supervisor_id,
               TaskAttempt.error)
        .select_from(TaskAttempt).join(Task, (Task.id == TaskAttempt.task_id) & (Task.run_id == run_id))
        .order_by(Task.position, TaskAttempt.attempt).limit(MAX_ATTEMPT_ROWS + 1)
    ).all()
    return [AttemptSpan(*tuple(r)) for r in rows[:MAX_ATTEMPT_ROWS]], len(rows) > MAX_ATTEMPT_ROWS


def _cells(conn: Connection, run_id: int, created_at: datetime, now: datetime, lane_size: int,
           column_ms: int) -> tuple[list[LaneCell], bool]:
    # Each attempt's lane, start and end (a running one's: now) in ms after the run's start, and
    # the columns of those; then the sums per (lane, outcome, columns). Computing the columns in
    # the inner query keeps the outer GROUP BY plain columns (PostgreSQL matches no bound values).
    origin = bindparam("origin", created_at, type_=DateTime())
    start = elapsed_ms(TaskAttempt.started_at, origin)
    stop = elapsed_ms(func.coalesce(TaskAttempt.finished_at, bindparam("now", now, type_=DateTime())), origin)
    each = select(
        (Task.position // bindparam("lane_size", lane_size, type_=Integer())).label("lane"),
        TaskAttempt.outcome.label("outcome"), start.label("s"), stop.label("e"),
        (start // bindparam("col_a", column_ms, type_=Integer())).label("first"),
        (stop // bindparam("col_b", column_ms, type_=Integer())).label("last"),
    ).select_from(TaskAttempt).join(Task, (Task.id == TaskAttempt.task_id) & (Task.run_id == run_id)).subquery()
    rows = conn.execute(
        select(each.c.lane, each.c.outcome, each.c.first, each.c.last, func.count(), func.sum(each.c.s),
               func.sum(each.c.e))
        .group_by(each.c.lane, each.c.outcome, each.c.first, each.c.last)
        .order_by(each.c.lane, each.c.first).limit(MAX_CELL_ROWS + 1)
    ).all()
    cells = [LaneCell(int(r[0]), str(r[1]), max(0, int(r[2])), max(0, int(r[3])), int(r[4]), int(r[5]), int(r[6]))
             for r in rows[:MAX_CELL_ROWS]]
    return cells, len(rows) > MAX_CELL_ROWS


def _outages(conn: Connection, run_id: int, attempts: list[AttemptSpan] | None) -> list[Outage]:
    # Lost after its supervisor's last heartbeat (strictly: SQLite keeps milliseconds, and a beat in the
    # millisecond of the loss shows it alive): that supervisor died (or went silent) and was
    # reclaimed. An attempt lost while its supervisor lived on (a shared process crashed) is not.
    rows = conn.execute(
        select(TaskAttempt.supervisor_id, SupervisorRow.heartbeat_at, func.count(), func.max(TaskAttempt.finished_at))
        .join(Task, (Task.id == TaskAttempt.task_id) & (Task.run_id == run_id))
        .join(SupervisorRow, SupervisorRow.id == TaskAttempt.supervisor_id)
        .where(status_is(TaskAttempt.outcome, Outcome.LOST), TaskAttempt.finished_at > SupervisorRow.heartbeat_at)
        .group_by(TaskAttempt.supervisor_id, SupervisorRow.heartbeat_at)
        .order_by(SupervisorRow.heartbeat_at)
    ).all()
    if not rows:
        return []
    # Its heartbeat is seconds apart: an attempt of this run it started, or ended itself, after its
    # last beat is a later sign of life. A small run's attempts are at hand; a big run's are summed.
    own = {o.value for o in OWN_ENDS}
    seen: dict[int, list[datetime]] = {}
    if attempts is not None:
        for a in attempts:
            if a.supervisor_id is not None:
                seen.setdefault(a.supervisor_id, []).append(a.started_at)
                if a.outcome in own and a.finished_at is not None:
                    seen[a.supervisor_id].append(a.finished_at)
    else:
        ended = func.max(case((status_is(TaskAttempt.outcome, *own), TaskAttempt.finished_at)))
        for supervisor, started, finished in conn.execute(
            select(TaskAttempt.supervisor_id, func.max(TaskAttempt.started_at), ended)
            .where(TaskAttempt.task_id.in_(select(Task.id).where(Task.run_id == run_id)))
            .group_by(TaskAttempt.supervisor_id)
        ):
            seen[supervisor] = [t for t in (started, finished) if t is not None]
    outages = []
    found: list[tuple[Any, ...]] = [tuple(r) for r in rows]
    for supervisor, beat, n, reclaimed in found:
        alive = max([beat, *seen.get(supervisor, [])])
        outages.append(Outage(supervisor, min(alive, reclaimed), int(n), reclaimed))
    return outages


def _durations(conn: Connection, run_id: int) -> tuple[list[SlowTask], list[tuple[str, int, int]], int]:
    took = elapsed_ms(Task.finished_at, Task.started_at)
    finished = (Task.run_id == run_id, status_is(Task.status, TaskStatus.SUCCEEDED, TaskStatus.FAILED),
                Task.started_at.is_not(None), Task.finished_at.is_not(None))
    slow = conn.execute(select(Task.id, Task.position, Task.label, Task.status, took).where(*finished)
                        .order_by(took.desc(), Task.position).limit(SLOWEST)).all()
    slowest = [SlowTask(r[0], r[1], r[2], r[3], max(0, int(r[4])) / 1000) for r in slow]
    if not slowest:
        return [], [], 1000
    bin_ms = bin_width_ms(int(slowest[0].seconds * 1000))
    each = select(Task.status.label("status"), (took // bindparam("bin_ms", bin_ms, type_=Integer())).label("bin")
                  ).where(*finished).subquery()
    rows = conn.execute(select(each.c.status, each.c.bin, func.count()).group_by(each.c.status, each.c.bin)
                        .order_by(each.c.bin, each.c.status)).all()
    return slowest, [(r[0], max(0, int(r[1])), int(r[2])) for r in rows], bin_ms
