"""Which tasks are due, and the order claims take them in: one definition for every reader.

A task is due in one of two ways:

1. **by a time**: a retry after its backoff (status ``retrying``), or a task delayed on purpose,
   whose ``next_attempt_at`` has passed by the database's clock (:class:`~db.db_now`). These come
   first, earliest first, walking ``ix_tasks_due``;
2. **at once**: ``next_attempt_at IS NULL``, whatever any process's clock says (on SQLite each
   writer's clock is its own: a submitter running two minutes ahead must not hold new work
   back). These come next, per queue highest priority first, then in submission order (task
   id), walking ``ix_tasks_ready``.

Each queue has its own order (:mod:`claims` adds ageing, and the limits). The claim
(:mod:`claims`), the waiting count of a run's page (:mod:`status`) and the backlog figure
(:mod:`gauges`) all read this order from here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, literal, select, union_all

from service.storage.db import db_now, status_is
from service.storage.models import DUE_TASK_STATUSES, Task

DUE = tuple(s.value for s in DUE_TASK_STATUSES)


def by_time(*columns: Any) -> Select[Any]:
    """``columns`` of the tasks due by a time that has passed, earliest first."""
    return (select(*columns).where(status_is(Task.status, *DUE), Task.next_attempt_at <= db_now())
            .order_by(Task.next_attempt_at, Task.id))


def at_once(*columns: Any) -> Select[Any]:
    """``columns`` of the tasks due at once (no due time), highest priority first, then in
    submission order (add a queue to walk ``ix_tasks_ready``)."""
    return (select(*columns).where(status_is(Task.status, *DUE), Task.next_attempt_at.is_(None))
            .order_by(Task.priority.desc(), Task.id))


def claim_order(limit: int, queue: str, *columns: Any) -> Select[Any]:
    """``columns`` of the first ``limit`` due tasks of ``queue`` in the claim's order (without
    ageing), from one statement: each part read from its own index, at most ``limit`` entries each."""
    parts = [part.where(Task.queue == queue).add_columns(
        literal(rank).label("part"), Task.next_attempt_at.label("at"), (-Task.priority).label("rank"),
        Task.id.label("tid")).limit(limit).subquery()
        for rank, part in enumerate((by_time(*columns), at_once(*columns)))]
    both = union_all(*(select(*part.c) for part in parts)).subquery()
    return select(*(c for c in both.c if c.key not in ("part", "at", "rank", "tid"))).order_by(
        both.c.part, both.c.at, both.c.rank, both.c.tid).limit(limit)
