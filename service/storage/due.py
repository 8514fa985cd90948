"""Which tasks are due, and the order claims take them in: one definition for every reader.

A task is due in one of two ways:

1. **by a time**: a retry after its backoff (status ``retrying``), or a task delayed on purpose,
   whose ``next_attempt_at`` has passed by the database's clock (:class:`~db.db_now`). These come
   first, earliest first, walking ``ix_tasks_due``;
2. **at once**: ``next_attempt_at IS NULL``, whatever any process's clock says (on SQLite each
   writer's clock is its own: a submitter running two minutes ahead must not hold new work
   back). These come next, in submission order (task id), walking ``ix_tasks_ready``.

The claim (:mod:`leases`), the waiting count of a run's page (:mod:`reads`) and the backlog
figure (:mod:`gauges`) all read this order from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, exists, literal, select, union_all

from service.storage.db import db_now, status_is
from service.storage.models import DUE_TASK_STATUSES, Task

DUE = tuple(s.value for s in DUE_TASK_STATUSES)


def by_time(*columns: Any) -> Select[Any]:
    """``columns`` of the tasks due by a time that has passed, earliest first."""
    return (select(*columns).where(status_is(Task.status, *DUE), Task.next_attempt_at <= db_now())
            .order_by(Task.next_attempt_at, Task.id))


def at_once(*columns: Any) -> Select[Any]:
    """``columns`` of the tasks due at once (no due time), in submission order."""
    return (select(*columns).where(status_is(Task.status, *DUE), Task.next_attempt_at.is_(None))
            .order_by(Task.id))


def claim_order(limit: int, *columns: Any) -> Select[Any]:
    """``columns`` of the first ``limit`` due tasks in the claim's order, from one statement: each
    part read from its own index, at most ``limit`` entries each."""
    parts = [part.add_columns(literal(rank).label("part"), Task.next_attempt_at.label("at"), Task.id.label("tid"))
             .limit(limit).subquery() for rank, part in enumerate((by_time(*columns), at_once(*columns)))]
    both = union_all(*(select(*part.c) for part in parts)).subquery()
    return select(*(c for c in both.c if c.key not in ("part", "at", "tid"))).order_by(
        both.c.part, both.c.at, both.c.tid).limit(limit)


@dataclass(frozen=True)
class Due:
    """Which parts of the claim order hold a due task (true when either does)."""

    by_time: bool
    at_once: bool

    def __bool__(self) -> bool:
        return self.by_time or self.at_once


def anything() -> Select[bool, bool]:
    """Whether each part holds a due task: two index probes, no write lock."""
    return select(exists(by_time(Task.id)), exists(at_once(Task.id)))
