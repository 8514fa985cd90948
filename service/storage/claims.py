"""Claims under flow control: which queues may start work now, and leasing it within every limit.

A task waits in a *queue* (``tasks.queue``, default ``default``). Per queue, due tasks are taken
in this order (:mod:`service.storage.due` states the first and last parts):

1. due by a time (a retry whose backoff passed, a delayed start), earliest first;
2. due at once and waiting longer than the queue's ``age_s`` (default :data:`DEFAULT_AGE_S`),
   longest waiting first: **ageing**, so that nothing starves behind a stream of higher
   priorities;
3. due at once, highest ``priority`` first, then in submission order.

Limits are rows, and the database enforces them:

* a queue's ``concurrency`` (running attempts at once) and ``rate_count`` per ``rate_period_s``
  (starts in any window of that length) hold across every supervisor: a claim locks the
  queue's row (``FOR UPDATE``, in name order) before it counts the queue's open attempts and
  its starts within the period, and stamps its own starts with one reading of the database's
  clock taken after its locks. On SQLite the write lock serializes claims whole;
* a concurrency key's limits (``limit_keys``) the same way: its row is locked (in name order,
  after the queues and the candidate tasks) before its open attempts and recent starts are
  counted, and candidates beyond what it allows are left queued;
* a paused queue starts nothing, and neither does a paused run.

Candidate tasks are locked ``FOR UPDATE SKIP LOCKED``: a claim never waits for a task row,
which is why it may lock key rows after them without breaking the one lock order of
:mod:`service.storage` (nothing that holds a key row waits for a task row).

When nothing can start, a claim is one read of index probes (:func:`looks.look`), never a write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Integer, bindparam, exists, func, insert, or_, select, update

from service.storage.db import db_now, status_is
from service.storage.looks import KEY_LIMITS, QUEUE_LIMITS, Claimed, Look, QueueState, counted, window
from service.storage.models import DUE_TASK_STATUSES, LimitKey, Outcome, Queue, SupervisorRow, Task, TaskAttempt

DUE = tuple(s.value for s in DUE_TASK_STATUSES)
KEY_ROUNDS = 4  # candidate rounds when keys at their limit hold some back


def claim(conn: Connection, supervisor_id: int, limit: int, found: Look, rotate: int = 0) -> Claimed:
    """Lease up to ``limit`` due tasks of the startable queues in ``found``, within every limit, in
    the caller's write transaction. Opens their attempts. The rows come back with the columns a
    :class:`~service.storage.leases.Lease` needs.

    The free slots go to the queues in name order, starting ``rotate`` places on (a supervisor
    turns it at each claim, so that one busy queue does not take every slot every time).
    """
    out = Claimed()
    queues = found.startable
    if queues:
        turn = rotate % len(queues)
        queues = queues[turn:] + queues[:turn]
    limited = sorted(q.name for q in queues if q.limited)
    now: datetime | None = None
    if limited:  # the lock that makes a queue's limits global; then counts no other claim can change
        locked = {r.name: r for r in conn.execute(
            select(*QUEUE_LIMITS).where(Queue.name.in_(limited)).order_by(Queue.name).with_for_update())}
        now = conn.execute(select(db_now())).scalar_one()
        fresh = [replace(q, paused=locked[q.name].paused_at is not None, concurrency=locked[q.name].concurrency,
                         rate_count=locked[q.name].rate_count, rate_period_s=locked[q.name].rate_period_s)
                 if q.name in locked else q for q in queues]
        queues = [q for q in counted(conn, fresh, now) if not q.paused]
        for q in queues:
            if q.room == 0:
                out.held_back = True
                out.reopen_at = _earliest(out.reopen_at, q.reopen_at)
    picks: list[tuple[int, str | None]] = []
    keys = _Keys()
    left = limit
    for q in queues:
        room = q.room
        take = left if room is None else min(left, room)
        if take <= 0:
            continue
        got = _pick(conn, supervisor_id, q, take, found, keys, now)
        if keys.held_back:
            out.held_back = True
        if got and q.rate_count is not None and q.rate_period_s is not None and q.recent + len(got) >= q.rate_count:
            # This claim fills the window: it frees a start when its oldest start leaves it (a wake then).
            start = q.window_from if q.window_from is not None else now
            if start is not None:
                out.reopen_at = _earliest(out.reopen_at, start + timedelta(seconds=q.rate_period_s))
        picks.extend(got)
        left -= len(got)
        if left <= 0:
            break
    out.reopen_at = _earliest(out.reopen_at, keys.reopen_at)
    if not picks:
        return out
    if limited or keys.locked:  # stamped after every lock this claim took: exact rate windows
        now = conn.execute(select(db_now())).scalar_one()
        rows = list(conn.execute(_TAKE_AT, {"claim_supervisor": supervisor_id, "ids": [i for i, _ in picks],
                                            "at": now}))
    else:
        now = None
        rows = list(conn.execute(_TAKE, {"claim_supervisor": supervisor_id, "ids": [i for i, _ in picks]}))
    order = {task_id: i for i, (task_id, _) in enumerate(picks)}
    rows.sort(key=lambda r: order[r.id])  # RETURNING keeps no order: the claim's own
    out.now = now
    params = [{"task_id": r.id, "attempt": r.attempts, "supervisor_id": supervisor_id, "outcome": Outcome.RUNNING.value,
               "charged": False, "queue": r.queue, "limit_key": r.limit_key} for r in rows]
    if params:
        if now is None:
            conn.execute(_OPEN_ATTEMPT, params)
        else:
            conn.execute(insert(TaskAttempt), [{**p, "started_at": now} for p in params])
    out.rows = rows
    return out


class _Keys:
    """Concurrency keys met by one claim: what each still allows, and which are full."""

    def __init__(self) -> None:
        self.room: dict[str, int | None] = {}  # key -> starts it still allows (None: no limit)
        self.full: set[str] = set()
        self.locked = False
        self.held_back = False
        self.reopen_at: datetime | None = None

    @property
    def names(self) -> set[str]:
        return set(self.room)

    def meet(self, conn: Connection, names: set[str]) -> None:
        """Lock and count the keys in ``names`` not met yet, in name order. Once this claim holds a
        key's row, a key another claim holds is skipped (treated as full for now): a wait out of
        name order could deadlock."""
        new = sorted(names - set(self.room))
        if not new:
            return
        first = not self.locked
        query = select(*KEY_LIMITS).where(LimitKey.name.in_(new)).order_by(LimitKey.name)
        rows = {k.name: k for k in conn.execute(query.with_for_update(skip_locked=not first))}
        self.locked = self.locked or bool(rows)
        now = conn.execute(select(db_now())).scalar_one() if rows else None
        limited = [k for k in rows.values() if k.concurrency is not None]
        running = dict(conn.execute(
            select(TaskAttempt.limit_key, func.count())
            .where(status_is(TaskAttempt.outcome, Outcome.RUNNING.value),
                   TaskAttempt.limit_key.in_([k.name for k in limited]))
            .group_by(TaskAttempt.limit_key)).all()) if limited else {}
        for name in new:
            k = rows.get(name)
            if k is None:  # no limits (no row), or locked by another claim in a later round
                self.room[name] = None if first or name not in self._exists(conn, [name]) else 0
                continue
            rooms = []
            if k.concurrency is not None:
                rooms.append(k.concurrency - int(running.get(name, 0)))
            if k.rate_count is not None and k.rate_period_s is not None and now is not None:
                recent, oldest = window(conn, TaskAttempt.limit_key == name, now, k.rate_period_s)
                rooms.append(k.rate_count - recent)
                if recent >= k.rate_count and oldest is not None:
                    self.reopen_at = _earliest(self.reopen_at, oldest + timedelta(seconds=k.rate_period_s))
            self.room[name] = max(0, min(rooms)) if rooms else None

    @staticmethod
    def _exists(conn: Connection, names: list[str]) -> set[str]:
        return set(conn.execute(select(LimitKey.name).where(LimitKey.name.in_(names))).scalars())

    def admit(self, key: str | None) -> bool:
        if key is None:
            return True
        room = self.room.get(key)
        if room is None:
            return True
        if room <= 0:
            self.full.add(key)
            self.held_back = True
            return False
        self.room[key] = room - 1
        if room - 1 == 0:
            self.full.add(key)
        return True


def _pick(conn: Connection, supervisor_id: int, q: QueueState, take: int, found: Look, keys: _Keys,
          now: datetime | None) -> list[tuple[int, str | None]]:
    """Up to ``take`` task ids of queue ``q`` in its claim order, locked, within their keys' limits."""
    chosen: list[tuple[int, str | None]] = []
    seen: list[int] = []
    parts = []
    if q.by_time:
        parts.append("time")
    if q.at_once and q.oldest_at is not None and q.oldest_at <= found.now - timedelta(seconds=q.age_s):
        parts.append("aged")
    if q.at_once:
        parts.append("ready")
    for part in parts:
        for _ in range(KEY_ROUNDS):
            want = take - len(chosen)
            if want <= 0:
                return chosen
            query = _part(part, q, found, keys.full, seen, now).limit(want)
            rows = conn.execute(query, {"claim_supervisor": supervisor_id}).all()
            if not rows:
                break
            seen.extend(r.id for r in rows)
            keys.meet(conn, {r.limit_key for r in rows if r.limit_key is not None})
            for r in rows:
                if keys.admit(r.limit_key):
                    chosen.append((r.id, r.limit_key))
            if len(rows) < want or len(chosen) >= take:
                break
    return chosen


def _part(part: str, q: QueueState, found: Look, full: set[str], seen: Sequence[int], now: datetime | None) -> Any:
    me = bindparam("claim_supervisor", type_=Integer)
    alive = exists(select(SupervisorRow.id).where(SupervisorRow.id == me, SupervisorRow.stopped_at.is_(None)))
    query = select(Task.id, Task.limit_key).where(status_is(Task.status, *DUE), Task.queue == q.name, alive)
    if part == "time":
        query = query.where(Task.next_attempt_at <= (now if now is not None else db_now())).order_by(
            Task.next_attempt_at, Task.id)
    elif part == "aged":
        query = query.where(Task.next_attempt_at.is_(None),
                            Task.queued_at <= found.now - timedelta(seconds=q.age_s)).order_by(Task.queued_at, Task.id)
    else:
        query = query.where(Task.next_attempt_at.is_(None)).order_by(Task.priority.desc(), Task.id)
    if full:
        query = query.where(or_(Task.limit_key.is_(None), Task.limit_key.not_in(sorted(full))))
    if found.paused_runs:
        query = query.where(or_(Task.run_id.is_(None), Task.run_id.not_in(found.paused_runs)))
    if seen:
        query = query.where(Task.id.not_in(list(seen)))
    return query.with_for_update(skip_locked=True)


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


_RETURNING = (Task.id, Task.attempts, Task.charged, Task.lost, Task.max_attempts, Task.run_id, Task.position, Task.kind,
              Task.args, Task.checkpoint, Task.timeout_s, Task.isolated, Task.memory_limit_mb, Task.created_at,
              Task.started_at, Task.queue, Task.limit_key)


def _take(at: Any) -> Any:
    return (
        update(Task)
        .where(Task.id.in_(bindparam("ids", expanding=True)), status_is(Task.status, *DUE))
        .values(status="running", supervisor_id=bindparam("claim_supervisor", type_=Integer),
                attempts=Task.attempts + 1, output_chars=0, started_at=func.coalesce(Task.started_at, at),
                next_attempt_at=None)
        .returning(*_RETURNING)
        .execution_options(synchronize_session=False)
    )


_TAKE = _take(db_now())
_TAKE_AT = _take(bindparam("at", type_=Task.started_at.type))
_OPEN_ATTEMPT = insert(TaskAttempt).values(started_at=db_now())
