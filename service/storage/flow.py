"""Flow control's rows: queues (limits, pause), concurrency keys, paused runs, and what they show.

Every verb is one transaction. A queue's row is locked (``FOR UPDATE``) to change it, as claims
lock it to count against it; a change that can let work start (a resume, a higher limit)
announces it (:func:`notify.notify`), so idle supervisors claim at once.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, case, exists, func, select, true, update

from service.errors import Conflict, InvalidInput, NotFound
from service.storage import looks, notify
from service.storage.db import db_now, read_tx, status_is, write_tx
from service.storage.errors import translated
from service.storage.models import DUE_TASK_STATUSES, LimitKey, Outcome, Queue, Run, RunStatus, Task, TaskAttempt

DUE = tuple(s.value for s in DUE_TASK_STATUSES)
UNSET: Any = object()  # a limit not given: left as it is


@dataclass(frozen=True)
class QueueView:
    """One queue as the panel shows it."""

    name: str
    paused: bool
    paused_at: datetime | None
    concurrency: int | None
    rate_count: int | None
    rate_period_s: float | None
    age_s: float
    declared: bool
    waiting: int  # queued or retrying (due now or later)
    due: int  # of them, due now
    running: int  # open attempts
    oldest_wait_s: float | None  # how long its longest-waiting task due at once has waited

    @property
    def rate(self) -> str | None:
        return None if self.rate_count is None else f"{self.rate_count}/{_period(self.rate_period_s)}"


@dataclass(frozen=True)
class KeyView:
    name: str
    concurrency: int | None
    rate_count: int | None
    rate_period_s: float | None
    running: int

    @property
    def rate(self) -> str | None:
        return None if self.rate_count is None else f"{self.rate_count}/{_period(self.rate_period_s)}"


def _period(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            n = int(seconds / size)
            return unit if n == 1 else f"{n}{unit}"
    return f"{seconds:g}s"


class Flow:
    engine: Engine

    # -- queues ---------------------------------------------------------------------------

    @translated
    def set_queue(self, name: str, *, concurrency: int | None = UNSET, rate: tuple[int, float] | None = UNSET,
                  age_s: float | None = UNSET) -> QueueView:
        """Declare queue ``name`` (made if new) and set the limits given (None: no such limit; a
        limit not given stays). Once any queue is declared, submits to unknown queues are refused."""
        values: dict[str, Any] = {"declared": True, "updated_at": db_now()}
        if concurrency is not UNSET:
            values["concurrency"] = concurrency
        if rate is not UNSET:
            values["rate_count"], values["rate_period_s"] = rate if rate is not None else (None, None)
        if age_s is not UNSET:
            values["age_s"] = age_s
        with write_tx(self.engine) as conn:
            ensure_queue(conn, name, declare=True)
            conn.execute(update(Queue).where(Queue.name == name).values(**values))
            notify.notify(conn)  # a higher limit lets waiting work start
        return self.queue(name)

    @translated
    def pause_queue(self, name: str, paused: bool = True) -> QueueView:
        """Pause (or resume) a queue: no attempt of it starts on any supervisor while paused; what
        runs finishes. Kept in its row: a restart keeps it. Raises NotFound for an unknown queue."""
        with write_tx(self.engine) as conn:
            row = conn.execute(select(Queue.name, Queue.paused_at).where(Queue.name == name).with_for_update()).first()
            if row is None:
                raise NotFound(f"there is no queue {name!r}; queues: {', '.join(self._names(conn)) or 'none'}")
            if paused and row.paused_at is None:
                conn.execute(update(Queue).where(Queue.name == name).values(paused_at=db_now(), updated_at=db_now()))
            elif not paused and row.paused_at is not None:
                conn.execute(update(Queue).where(Queue.name == name).values(paused_at=None, updated_at=db_now()))
                notify.notify(conn)
        return self.queue(name)

    def resume_queue(self, name: str) -> QueueView:
        return self.pause_queue(name, paused=False)

    @translated
    def queues(self) -> list[QueueView]:
        """Every queue, by name, with its depth, running attempts and oldest wait (one snapshot)."""
        with read_tx(self.engine) as conn:
            return panel(conn, None)

    @translated
    def queue(self, name: str) -> QueueView:
        with read_tx(self.engine) as conn:
            found = panel(conn, name)
            if not found:
                raise NotFound(f"there is no queue {name!r}; queues: {', '.join(self._names(conn)) or 'none'}")
        return found[0]

    @staticmethod
    def _names(conn: Connection) -> list[str]:
        return list(conn.execute(select(Queue.name).order_by(Queue.name)).scalars())

    # -- keys -----------------------------------------------------------------------------

    @translated
    def set_key(self, name: str, *, concurrency: int | None = UNSET,
                rate: tuple[int, float] | None = UNSET) -> KeyView:
        """Set the limits of concurrency key ``name`` (None: no such limit; not given: as it is)."""
        with write_tx(self.engine) as conn:
            ensure_key(conn, name, None)
            values: dict[str, Any] = {"updated_at": db_now()}
            if concurrency is not UNSET:
                values["concurrency"] = concurrency
            if rate is not UNSET:
                values["rate_count"], values["rate_period_s"] = rate if rate is not None else (None, None)
            conn.execute(update(LimitKey).where(LimitKey.name == name).values(**values))
            notify.notify(conn)
        return self.key(name)

    @translated
    def key(self, name: str) -> KeyView:
        with read_tx(self.engine) as conn:
            row = conn.execute(select(*looks.KEY_LIMITS).where(LimitKey.name == name)).one_or_none()
            running = conn.execute(select(func.count()).where(
                status_is(TaskAttempt.outcome, Outcome.RUNNING.value), TaskAttempt.limit_key == name)).scalar_one()
        if row is None:
            raise NotFound(f"there is no concurrency key {name!r} with limits")
        return KeyView(row.name, row.concurrency, row.rate_count, row.rate_period_s, int(running))

    # -- runs -----------------------------------------------------------------------------

    @translated
    def pause_run(self, run_id: int, paused: bool = True) -> bool:
        """Pause (or resume) a live run: none of its tasks starts while paused; what runs finishes.
        Returns whether it changed. Raises NotFound, or Conflict for a run that has ended."""
        with write_tx(self.engine) as conn:
            row = conn.execute(select(Run.status, Run.paused_at).where(Run.id == run_id).with_for_update()).first()
            if row is None:
                raise NotFound(f"there is no run {run_id}")
            if row.status != RunStatus.RUNNING.value:
                raise Conflict(f"run {run_id} has ended ({row.status}); only a live run can be paused or resumed")
            if paused == (row.paused_at is not None):
                return False
            conn.execute(update(Run).where(Run.id == run_id).values(paused_at=db_now() if paused else None))
            if not paused:
                notify.notify(conn)
            return True


def ensure_queue(conn: Connection, name: str, *, declare: bool = False) -> None:
    """Make sure queue ``name`` has its row, in the caller's transaction.

    Raises:
        InvalidInput: it has none and some queue is declared (from then on, only existing queues take work).
    """
    if conn.execute(select(Queue.name).where(Queue.name == name)).first() is not None:
        return
    if not declare and conn.execute(select(exists().where(Queue.declared == true()))).scalar():
        names = list(conn.execute(select(Queue.name).order_by(Queue.name)).scalars())
        raise InvalidInput(f"queue {name!r} is not declared; the queues are: {', '.join(names)} (declare a new "
                           "one with `tenure queue set NAME`)")
    conn.execute(_upsert(conn, Queue, {"name": name, "created_at": db_now(), "updated_at": db_now()}, ["name"]))


def ensure_key(conn: Connection, name: str, concurrency: int | None) -> None:
    """Make sure key ``name`` has its row; with ``concurrency``, set its limit of running attempts."""
    values = {"name": name, "concurrency": concurrency, "updated_at": db_now()}
    conn.execute(_upsert(conn, LimitKey, values, ["name"], update={"concurrency"} if concurrency is not None else None))


def _upsert(conn: Connection, table: Any, values: dict[str, Any], keys: list[str],
            update: set[str] | None = None) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING (or DO UPDATE of ``update``): the same SQL on both backends."""
    # The dialect's own module, imported on first use: PostgreSQL's costs a SQLite worker's start 40 ms.
    make = importlib.import_module(f"sqlalchemy.dialects.{conn.dialect.name}").insert
    stmt = make(table).values(**values)
    if update:
        return stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in update})
    return stmt.on_conflict_do_nothing(index_elements=keys)


def panel(conn: Connection, name: str | None) -> list[QueueView]:
    here = Task.queue == Queue.name
    waiting = select(func.count()).where(status_is(Task.status, *DUE), here).scalar_subquery()
    due_at_once = select(func.count()).where(status_is(Task.status, *DUE), here, Task.next_attempt_at.is_(None))
    oldest = select(func.min(Task.queued_at)).where(status_is(Task.status, *DUE), here,
                                                     Task.next_attempt_at.is_(None)).scalar_subquery()
    timed_due = select(func.count()).where(status_is(Task.status, *DUE), here, Task.next_attempt_at <= db_now())
    query = select(Queue.name, Queue.paused_at, Queue.concurrency, Queue.rate_count, Queue.rate_period_s, Queue.age_s,
                   Queue.declared, waiting, due_at_once.scalar_subquery(), timed_due.scalar_subquery(), oldest,
                   db_now())
    if name is not None:
        query = query.where(Queue.name == name)
    rows = conn.execute(query.order_by(Queue.name)).all()
    running = dict(conn.execute(select(TaskAttempt.queue, func.count())
                                .where(status_is(TaskAttempt.outcome, Outcome.RUNNING.value))
                                .group_by(TaskAttempt.queue)).all())
    return [QueueView(
        name=name, paused=paused_at is not None, paused_at=paused_at, concurrency=concurrency,
        rate_count=rate_count, rate_period_s=period, age_s=age_s if age_s is not None else looks.DEFAULT_AGE_S,
        declared=bool(declared), waiting=int(n_wait or 0), due=int(n_due or 0) + int(n_timed or 0),
        running=int(running.get(name, 0)),
        oldest_wait_s=None if head is None else max(0.0, (now - head).total_seconds()),
    ) for name, paused_at, concurrency, rate_count, period, age_s, declared, n_wait, n_due, n_timed, head, now in rows]


def hold_columns(run_id: int, queue: str) -> list[Any]:
    """Columns (uncorrelated scalar subqueries, evaluated once) that say which pause or limit holds
    back run ``run_id`` of ``queue``: its queue's pause and limits with their counts, and the key of
    its first due task with the key's limits and counts. Added to the statement that walks the
    queue's order for a waiting run (:func:`status._ahead`): the poll costs no statement more."""
    of_queue = {c.key: select(c).where(Queue.name == queue).scalar_subquery() for c in looks.QUEUE_LIMITS[1:]}
    key = (select(Task.limit_key).where(Task.run_id == run_id, status_is(Task.status, *DUE))
           .order_by(Task.priority.desc(), Task.id).limit(1).correlate(None).scalar_subquery())
    of_key = {c.key: select(c).where(LimitKey.name == key).scalar_subquery() for c in looks.KEY_LIMITS[1:]}
    running_q, recent_q, _ = looks.counts(queue, of_queue["rate_period_s"], TaskAttempt.queue)
    running_k, recent_k, _ = looks.counts(key, of_key["rate_period_s"], TaskAttempt.limit_key)
    return [*(v.label(f"hq_{k}") for k, v in of_queue.items()), key.label("hk_name"),
            *(v.label(f"hk_{k}") for k, v in of_key.items()),
            case((of_queue["concurrency"].is_not(None), running_q.element), else_=0).label("hq_running"),
            case((of_queue["rate_count"].is_not(None), recent_q.element), else_=0).label("hq_recent"),
            case((of_key["concurrency"].is_not(None), running_k.element), else_=0).label("hk_running"),
            case((of_key["rate_count"].is_not(None), recent_k.element), else_=0).label("hk_recent")]


def hold(row: Any, queue: str, paused: bool) -> str | None:
    """Which pause or limit holds back a live run that runs nothing and has work due, in words
    ("queue imports is at its limit of 4", "customer-42 has 2 running, its limit"), from a row
    with :func:`hold_columns` (None: none was read); None when none does (it waits its turn)."""
    if paused:
        return "this run is paused (resume it to go on)"
    if row is None:
        return None
    if row.hq_paused_at is not None:
        return f"queue {queue} is paused"
    if row.hq_concurrency is not None and row.hq_running >= row.hq_concurrency:
        return f"queue {queue} is at its limit of {row.hq_concurrency} running"
    if row.hq_rate_count is not None and row.hq_recent >= row.hq_rate_count:
        return f"queue {queue} is at its rate of {row.hq_rate_count} starts per {_period(row.hq_rate_period_s)}"
    key = row.hk_name
    if row.hk_concurrency is not None and row.hk_running >= row.hk_concurrency:
        return f"{key} has {row.hk_running} running, its limit"
    if row.hk_rate_count is not None and row.hk_recent >= row.hk_rate_count:
        return f"{key} is at its rate of {row.hk_rate_count} starts per {_period(row.hk_rate_period_s)}"
    return None
