"""Submitting: runs and single tasks, each in one transaction, optionally under an idempotency key.

A submission with a key records (key, hash of the request) in the same transaction as what it
creates. The same key again with the same request returns what it created, marked not new;
with another request it is refused. Two clients racing with one key end with one run: the
second waits on the key's row, fails to insert it, and finds the first's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from service.errors import Conflict
from service.storage import notify
from service.storage.db import db_now, status_is, write_tx
from service.storage.errors import translated
from service.storage.flow import ensure_key, ensure_queue
from service.storage.models import IdempotencyKey, Run, RunStatus, Task, TaskStatus


@dataclass(frozen=True)
class Idempotency:
    key: str
    request_hash: str


@dataclass(frozen=True)
class Start:
    """When submitted work may start: at ``at`` (naive UTC), or ``delay_s`` after the database's now."""

    at: datetime | None = None
    delay_s: float | None = None

    def due(self, conn: Connection) -> datetime:
        """The instant, by the database's clock."""
        if self.at is not None:
            return self.at
        return conn.execute(select(db_now(self.delay_s or 0.0))).scalar_one()  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Created:
    id: int
    new: bool  # False: an earlier submission with the same key and request made it ...
    unique: bool = False  # ... or: an active task holds the same unique key (the id is that task's)


@dataclass(frozen=True)
class Placement:
    """Where submitted work waits: its queue, and the limits of the concurrency keys its tasks carry."""

    queue: str = "default"
    key_limits: tuple[tuple[str, int], ...] = ()  # (key, most running at once) to set at submit


class Submissions:
    engine: Engine

    @translated
    def create_run(
        self,
        *,
        kind: str,
        total: int,
        params: dict[str, Any],
        tasks: Iterable[dict[str, Any]],
        name: str | None = None,
        on_complete: str | None = None,
        idempotency: Idempotency | None = None,
        start: Start | None = None,
        placement: Placement | None = None,
    ) -> Created:
        """Insert a run and its ``total`` queued tasks, due at once (or at ``start``); ``tasks`` yields
        one row each.

        Each row holds ``kind``, ``args``, ``label``, ``max_attempts``, ``timeout_s`` and
        ``memory_limit_mb``; positions are given in order from 0. Atomic: the run and all its
        tasks appear together or not at all.

        Raises:
            Conflict: ``idempotency`` names a key already used for a different request.
        """
        where = placement or Placement()

        def make(conn: Connection) -> int:
            return placed(conn, where, lambda: insert_run(
                conn, kind=kind, total=total, params=params, tasks=tasks, name=name, on_complete=on_complete,
                due=start.due(conn) if start is not None else None, queue=where.queue))

        return self._submit(make, idempotency, "run_id")

    @translated
    def create_task(
        self,
        *,
        kind: str,
        args: dict[str, Any],
        label: str | None = None,
        max_attempts: int = 3,
        timeout_s: float | None = None,
        memory_limit_mb: int | None = None,
        idempotency: Idempotency | None = None,
        start: Start | None = None,
        placement: Placement | None = None,
        priority: int = 0,
        limit_key: str | None = None,
        unique_key: str | None = None,
    ) -> Created:
        """Insert one queued task that belongs to no run, due at once (or at ``start``). Atomic.

        With ``unique_key``, while another task holding that key is queued, retrying or running,
        nothing is written and the answer names that task (``Created.unique``).

        Raises:
            Conflict: ``idempotency`` names a key already used for a different request.
            InvalidInput: its queue is not declared while others are.
        """
        where = placement or Placement()
        row = {"kind": kind, "args": args, "label": label, "max_attempts": max_attempts, "timeout_s": timeout_s,
               "memory_limit_mb": memory_limit_mb, "queue": where.queue, "priority": priority, "limit_key": limit_key,
               "unique_key": unique_key}

        def make(conn: Connection) -> int:
            return placed(conn, where, lambda: insert_task(conn, row, start.due(conn) if start is not None else None))

        return self._submit(make, idempotency, "task_id", unique_key)

    def _submit(self, make: Any, idempotency: Idempotency | None, column: str,
                unique_key: str | None = None) -> Created:
        for _ in range(2):  # a second round only after losing a race for the same key
            try:
                with write_tx(self.engine) as conn:
                    if idempotency is not None:
                        earlier = _earlier(conn, idempotency, column)
                        if earlier is not None:
                            return Created(earlier, new=False)
                    if unique_key is not None:
                        holder = conn.execute(_UNIQUE_HOLDER, {"unique_key": unique_key}).scalar()
                        if holder is not None:
                            return Created(int(holder), new=False, unique=True)
                    if idempotency is not None:
                        conn.execute(insert(IdempotencyKey).values(
                            key=idempotency.key, request_hash=idempotency.request_hash, created_at=db_now()))
                    made = int(make(conn))
                    if idempotency is not None:
                        conn.execute(update(IdempotencyKey).where(IdempotencyKey.key == idempotency.key)
                                     .values({column: made}))
                    notify.notify(conn)
                    return Created(made, new=True)
            except IntegrityError:
                if idempotency is None and unique_key is None:
                    raise
        if idempotency is None:
            raise Conflict(f"the unique key {unique_key!r} is being taken by another request right now; try again")
        key = idempotency.key.partition(":")[2]
        raise Conflict(f"the idempotency key {key!r} is being used by another request right now")


def placed(conn: Connection, where: Placement, insert_work: Callable[[], int]) -> int:
    """``insert_work()`` (a run or a task) where ``where`` says, in the lock order: its queue's row
    first, then the work, then its keys' limits. Returns what ``insert_work`` returned."""
    place(conn, where)
    made = insert_work()
    set_keys(conn, where)
    return made


def place(conn: Connection, where: Placement) -> None:
    """The queue's row exists (made if new), in ``conn``'s transaction. Raises InvalidInput when the
    queue is not declared while others are."""
    if where.queue != "default":
        ensure_queue(conn, where.queue)


def set_keys(conn: Connection, where: Placement) -> None:
    """The key limits the submission sets, after its tasks (keys come after tasks in the lock order)."""
    for key, limit in sorted(where.key_limits):
        ensure_key(conn, key, limit)


def insert_run(conn: Connection, *, kind: str, total: int, params: dict[str, Any], tasks: Iterable[dict[str, Any]],
               name: str | None, on_complete: str | None, due: datetime | None, queue: str = "default") -> int:
    """A run and its queued tasks, in ``conn``'s transaction: due at once, or at ``due`` (naive UTC).
    Every task waits in the run's ``queue``."""
    run_id = int(conn.execute(
        insert(Run).values(name=name, status=RunStatus.RUNNING.value, kind=kind, total=total, params=params,
                           on_complete=on_complete, created_at=db_now(), scheduled_for=due, queue=queue)
        .returning(Run.id)
    ).scalar_one())
    rows = [{"priority": 0, "limit_key": None, **row, "run_id": run_id, "position": i, "queue": queue,
             "status": TaskStatus.QUEUED.value, "attempts": 0, "progress": 0.0} for i, row in enumerate(tasks)]
    # Due at once: no time (no clock decides); else due by the time asked for, as a retry is.
    later = {"next_attempt_at": due, "scheduled_for": due} if due is not None else {}
    conn.execute(insert(Task).values(created_at=db_now(), queued_at=db_now(), **later), rows)
    return run_id


def insert_task(conn: Connection, row: dict[str, Any], due: datetime | None) -> int:
    """One queued task of no run, in ``conn``'s transaction: due at once, or at ``due`` (naive UTC)."""
    if due is None:
        return int(conn.execute(_INSERT_TASK, row).scalar_one())
    return int(conn.execute(_INSERT_TASK, {**row, "next_attempt_at": due, "scheduled_for": due}).scalar_one())


# Built once: the values of a statement built per call cost more to hash than to run.
_INSERT_TASK = (
    insert(Task)
    .values(run_id=None, position=0, status=TaskStatus.QUEUED.value, created_at=db_now(), queued_at=db_now())
    .returning(Task.id)
)


_UNIQUE_HOLDER = select(Task.id).where(Task.unique_key == bindparam("unique_key"),
                                      status_is(Task.status, "queued", "retrying", "running"))


def _earlier(conn: Connection, idempotency: Idempotency, column: str) -> int | None:
    row = conn.execute(select(IdempotencyKey.request_hash, getattr(IdempotencyKey, column))
                       .where(IdempotencyKey.key == idempotency.key)).one_or_none()
    if row is None:
        return None
    if row[0] != idempotency.request_hash or row[1] is None:
        shown = idempotency.key.partition(":")[2]  # as the caller wrote it, without its "run:"/"task:" scope
        raise Conflict(f"the idempotency key {shown!r} was already used with a different request (another "
                       "body); use a new key for a new submission")
    return int(row[1])
