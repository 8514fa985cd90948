"""What a supervisor may start now: per queue, its due work, its limits and how much of them is used.

One read of index probes (:func:`look`), no write lock: when nothing can start, this is all a
claim costs. The claim itself (:mod:`claims`) counts again under its locks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, case, exists, func, literal, null, or_, select

from service.storage.db import db_now, status_is
from service.storage.models import DUE_TASK_STATUSES, LimitKey, Outcome, Queue, Task, TaskAttempt

DUE = tuple(s.value for s in DUE_TASK_STATUSES)
DEFAULT_QUEUE = "default"
DEFAULT_AGE_S = 300.0  # a task waiting this long goes ahead of higher priorities in its queue


@dataclass(frozen=True)
class QueueState:
    """One queue as a look saw it: its due work, its limits and how much of them is used."""

    name: str
    paused: bool
    concurrency: int | None
    rate_count: int | None
    rate_period_s: float | None
    age_s: float
    at_once: bool  # holds tasks due at once
    by_time: bool  # holds tasks whose due time has passed
    oldest_at: datetime | None  # since when its longest-waiting task due at once waits
    running: int = 0  # open attempts (counted only for a limited queue)
    recent: int = 0  # starts within its rate period (counted only for a rate-limited queue)
    reopen_at: datetime | None = None  # at its rate limit: when the oldest start leaves the window
    window_from: datetime | None = None  # the oldest start within its rate period (None: none)

    @property
    def limited(self) -> bool:
        return self.concurrency is not None or self.rate_count is not None

    @property
    def room(self) -> int | None:
        """How many may start now (None: no limit), by the counts this state holds."""
        rooms = []
        if self.concurrency is not None:
            rooms.append(self.concurrency - self.running)
        if self.rate_count is not None:
            rooms.append(self.rate_count - self.recent)
        return max(0, min(rooms)) if rooms else None

    @property
    def due(self) -> bool:
        return self.at_once or self.by_time


@dataclass(frozen=True)
class Look:
    """What a supervisor may start: the queues it serves that hold due work, from one read."""

    queues: list[QueueState]
    now: datetime
    served: frozenset[str] | None = None
    key_limits: bool = True  # some concurrency key has a limit (False: no task's key can hold it back)

    @property
    def startable(self) -> list[QueueState]:
        return [q for q in self.queues if q.due and not q.paused and q.room != 0]

    @property
    def blocked(self) -> bool:
        """Due work waits only behind a pause or a limit (none of it can start)."""
        return not self.startable and any(q.due for q in self.queues)

    def reopen_in_s(self) -> float | None:
        """Seconds until a rate window of a queue with due work frees a start; None: none waits so."""
        times = [q.reopen_at for q in self.queues if q.due and not q.paused and q.reopen_at is not None]
        return max(0.0, (min(times) - self.now).total_seconds()) if times else None

    def __bool__(self) -> bool:
        return bool(self.startable)


@dataclass
class Claimed:
    """The rows a claim leased, and whether limits held back work it could otherwise have taken."""

    rows: list[Any] = field(default_factory=list)
    held_back: bool = False
    reopen_at: datetime | None = None  # a rate window that held work back frees a start then
    now: datetime | None = None


def look(conn: Connection, served: Iterable[str] | None = None) -> Look:
    """The queues ``served`` (None: all) with due work, their limits and how much of them is used:
    one statement of index probes, no write lock. (A paused run's tasks count as due work here; the
    claim's own statement passes them by.)"""
    names = None if served is None else frozenset(served)
    rows = sorted(conn.execute(_LOOK if names is None else _LOOK_IN, {"names": sorted(names or ())}).all(),
                  key=lambda r: r.name)
    now = conn.execute(select(db_now())).scalar_one() if not rows else rows[0].now
    states = [_state(r) for r in rows]
    return Look(states, now, names, bool(rows[0].any_key_limits) if rows else False)


def _state(r: Any) -> QueueState:
    q = QueueState(r.name, r.paused_at is not None, r.concurrency, r.rate_count, r.rate_period_s,
                   r.age_s if r.age_s is not None else DEFAULT_AGE_S, bool(r.at_once), bool(r.by_time), r.oldest_at)
    return counts_of(q, r) if q.limited else q  # an unlimited queue's counts are not read (0)


def counts_of(q: QueueState, r: Any, prefix: str = "") -> QueueState:
    """``q`` with the open attempts and the rate window that row ``r`` counted (its columns
    ``running``, ``recent`` and ``window_from``, after ``prefix``)."""
    running, recent, since = (getattr(r, prefix + c) for c in ("running", "recent", "window_from"))
    full = q.rate_count is not None and q.rate_period_s is not None and recent >= q.rate_count
    reopen = since + timedelta(seconds=q.rate_period_s or 0) if full and since else None
    return replace(q, running=int(running), recent=int(recent), reopen_at=reopen, window_from=since)


def window(conn: Connection, which: Any, now: datetime, period_s: float) -> tuple[int, datetime | None]:
    """(starts in the window of ``period_s`` ending at ``now``, the oldest of them)."""
    since = now - timedelta(seconds=period_s)
    n, oldest = conn.execute(select(func.count(), func.min(TaskAttempt.started_at))
                             .where(which, TaskAttempt.started_at > since)).one()
    return int(n), oldest


def counts(name: Any, period: Any, column: Any) -> tuple[Any, ...]:
    """Open attempts of ``column`` = ``name``, and the count and oldest of its starts within ``period``
    seconds of the database's now (none when ``period`` is NULL)."""
    recent = (column == name, TaskAttempt.started_at > db_now(-period))
    return (select(func.count()).where(status_is(TaskAttempt.outcome, Outcome.RUNNING.value), column == name)
            .scalar_subquery().label("running"),
            select(func.count()).where(*recent).scalar_subquery().label("recent"),
            select(func.min(TaskAttempt.started_at)).where(*recent).scalar_subquery().label("window_from"))


QUEUE_LIMITS = (Queue.name, Queue.concurrency, Queue.rate_count, Queue.rate_period_s, Queue.paused_at)
KEY_LIMITS = (LimitKey.name, LimitKey.concurrency, LimitKey.rate_count, LimitKey.rate_period_s)
_DUE_HERE = (status_is(Task.status, *DUE), Task.queue == Queue.name)
_LIMITED = or_(Queue.concurrency.is_not(None), Queue.rate_count.is_not(None))
_LOOK = select(
    Queue.name, Queue.paused_at, Queue.concurrency, Queue.rate_count, Queue.rate_period_s, Queue.age_s,
    # Counted for a limited queue only (CASE evaluates its subquery only when its condition holds).
    *(case((_LIMITED, c.element), else_=literal(0) if c.name != "window_from" else null()).label(c.name)
      for c in counts(Queue.name, Queue.rate_period_s, TaskAttempt.queue)),
    exists(select(Task.id).where(*_DUE_HERE, Task.next_attempt_at.is_(None))).label("at_once"),
    exists(select(Task.id).where(*_DUE_HERE, Task.next_attempt_at <= db_now())).label("by_time"),
    select(func.min(Task.queued_at)).where(*_DUE_HERE, Task.next_attempt_at.is_(None)).scalar_subquery()
    .label("oldest_at"),
    db_now().label("now"),
    exists(select(LimitKey.name).where(or_(LimitKey.concurrency.is_not(None), LimitKey.rate_count.is_not(None))))
    .label("any_key_limits"),
)  # in name order, sorted here: a sort in SQL would be the only one of a claim's plan
_LOOK_IN = _LOOK.where(Queue.name.in_(bindparam("names", expanding=True)))
KEY_COUNTS = select(
    *KEY_LIMITS, *counts(LimitKey.name, LimitKey.rate_period_s, TaskAttempt.limit_key), db_now().label("now"),
).where(LimitKey.name.in_(bindparam("names", expanding=True)))
