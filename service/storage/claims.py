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
  (starts in any window of that length) hold across every supervisor: on PostgreSQL a claim
  locks the queue's row (``FOR UPDATE``, in name order) before the statement that picks its
  candidates counts the queue's open attempts and its starts within the period (in the same
  statement); it stamps its own starts with the database's clock read after its locks. On
  SQLite the write transaction holds the whole file: the counts in that one statement are exact;
* a concurrency key's limits (``limit_keys``) the same way: on PostgreSQL its row is locked (in
  name order, after the queues and the candidate tasks) before its open attempts and recent
  starts are counted; on SQLite the candidates' statement counts them too. Candidates beyond
  what a key allows are left queued, and the claim looks past them;
* a paused queue starts nothing, and neither does a paused run.

Candidate tasks are locked ``FOR UPDATE SKIP LOCKED``: a claim never waits for a task row,
which is why it may lock key rows after them without breaking the one lock order of
:mod:`service.storage` (nothing that holds a key row waits for a task row).

When nothing can start, a claim is one read of index probes (:func:`looks.look`), never a write.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Integer, bindparam, exists, func, insert, or_, select, update

from service.storage.db import db_now, is_sqlite, status_is
from service.storage.keyed import Keys, earliest, latest
from service.storage.looks import KEY_LIMITS, QUEUE_LIMITS, Claimed, Look, QueueState, counts, counts_of
from service.storage.models import (
    DUE_TASK_STATUSES,
    LimitKey,
    Outcome,
    Queue,
    Run,
    SupervisorRow,
    Task,
    TaskAttempt,
)

DUE = tuple(s.value for s in DUE_TASK_STATUSES)
KEY_ROUNDS = 6  # candidate rounds when keys at their limit hold some back (after the 2nd, every full key is known)


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
    lite = is_sqlite(conn)
    limited = sorted(q.name for q in queues if q.limited)
    if limited and not lite:  # the lock that makes a queue's limits global (SQLite's transaction holds the file)
        conn.execute(_LOCK_QUEUES, {"names": limited}).all()
    picks: list[tuple[int, str | None]] = []
    taken: list[Any] = []  # leased already, by the one statement of a queue with nothing to count
    keys = Keys(lite)
    left = limit
    for q in queues:
        if left <= 0:
            break
        if not q.limited and not found.key_limits:
            got_rows = _take_plain(conn, supervisor_id, q, left, found)
            taken += got_rows
            left -= len(got_rows)
            continue
        got = _pick(conn, supervisor_id, q, left, found, keys, out)
        picks.extend(got)
        left -= len(got)
    out.held_back = out.held_back or keys.held_back
    out.reopen_at = earliest(out.reopen_at, keys.reopen_at)
    now = latest(out.now, keys.now)  # read after every lock this claim took: its starts are stamped with it
    out.now = now
    ids = [i for i, _ in picks]
    if ids:
        if now is not None:
            rows = list(conn.execute(_TAKE_AT, {"claim_supervisor": supervisor_id, "ids": ids, "at": now}))
        else:
            rows = list(conn.execute(_TAKE, {"claim_supervisor": supervisor_id, "ids": ids}))
        order = {task_id: i for i, task_id in enumerate(ids)}
        rows.sort(key=lambda r: order[r.id])  # RETURNING keeps no order: the claim's own
        taken += rows
    if not taken:
        return out
    params = [{"task_id": r.id, "attempt": r.attempts, "supervisor_id": supervisor_id, "outcome": Outcome.RUNNING.value,
               "charged": False, "queue": r.queue, "limit_key": r.limit_key} for r in taken]
    if now is None:
        conn.execute(_OPEN_ATTEMPT, params)
    else:  # every start of this claim at the one instant its limits were counted for
        conn.execute(insert(TaskAttempt), [{**p, "started_at": now} for p in params])
    out.rows = taken
    return out


def _take_plain(conn: Connection, supervisor_id: int, q: QueueState, left: int, found: Look) -> list[Any]:
    """Lease up to ``left`` tasks of a queue without limits while no key has any: one UPDATE per part
    of its order, which picks (``FOR UPDATE SKIP LOCKED``) and leases at once, as claims did before
    there were limits."""
    rows: list[Any] = []
    for part in _parts(q, found):
        want = left - len(rows)
        if want <= 0:
            break
        _, values = _part(part, q, found, _NO_KEYS, [])
        got = list(conn.execute(_plain(part),
                                {**values, "claim_supervisor": supervisor_id, "want": want}))
        got.sort(key=_ORDER[part])
        rows += got
    return rows


@functools.cache
def _plain(part: str) -> Any:
    # No key has limits, by the look: nor may a task's key have since (a submit that set one meanwhile).
    free = or_(Task.limit_key.is_(None), ~exists(select(LimitKey.name).where(
        LimitKey.name == Task.limit_key, or_(LimitKey.concurrency.is_not(None), LimitKey.rate_count.is_not(None)))))
    picked = _picker(part, False, False, False, False).with_only_columns(Task.id).where(free)
    return (update(Task).where(Task.id.in_(picked.scalar_subquery()))
            .values(status="running", supervisor_id=bindparam("claim_supervisor", type_=Integer),
                    attempts=Task.attempts + 1, output_chars=0, started_at=func.coalesce(Task.started_at, db_now()),
                    next_attempt_at=None)
            .returning(*_RETURNING, Task.priority, Task.queued_at)
            .execution_options(synchronize_session=False))


def _pick(conn: Connection, supervisor_id: int, q: QueueState, left: int, found: Look, keys: Keys,
          out: Claimed) -> list[tuple[int, str | None]]:
    """Up to ``left`` task ids of queue ``q`` in its claim order, locked, within its own limits
    (counted again in the statement that picks them) and their keys'."""
    chosen: list[tuple[int, str | None]] = []
    seen: list[int] = []
    take = left if q.room is None else min(left, q.room)  # the look's; the count under the lock narrows it
    for part in _parts(q, found):
        for _ in range(KEY_ROUNDS):
            want = take - len(chosen)
            if want <= 0:
                return chosen
            query, values = _part(part, q, found, keys, seen)
            rows = conn.execute(query, {**values, "claim_supervisor": supervisor_id, "want": want}).all()
            if not rows:
                break
            if q.limited:
                fresh = counts_of(replace(q, paused=rows[0].q_paused_at is not None, concurrency=rows[0].q_concurrency,
                                          rate_count=rows[0].q_rate_count, rate_period_s=rows[0].q_rate_period_s),
                                  rows[0], "q_")
                out.now = latest(out.now, rows[0].now)
                room = 0 if fresh.paused else fresh.room
                if room is not None and room < take:
                    take = room
                    out.held_back = True
                    out.reopen_at = earliest(out.reopen_at, fresh.reopen_at)
                if take <= len(chosen):
                    return chosen
                rows = rows[:take - len(chosen)]
                if fresh.rate_count is not None and fresh.rate_period_s is not None and \
                        fresh.recent + take >= fresh.rate_count:
                    # This claim fills the window: it frees a start when its oldest start leaves it (a wake then).
                    start = fresh.window_from or rows[0].now
                    out.reopen_at = earliest(out.reopen_at, start + timedelta(seconds=fresh.rate_period_s))
            seen.extend(r.id for r in rows)
            keys.meet(conn, rows)
            admitted = [(r.id, r.limit_key) for r in rows if keys.admit(r.limit_key)]
            chosen += admitted
            if len(rows) < want or len(chosen) >= take:
                break
            if len(admitted) < len(rows):  # full keys ahead: pass every key at a limit by in the next round
                keys.learn_full(conn)
    return chosen


def _parts(q: QueueState, found: Look) -> list[str]:
    """The parts of queue ``q``'s claim order that hold due work, in that order."""
    parts = []
    if q.by_time:
        parts.append("time")
    if q.at_once and q.oldest_at is not None and q.oldest_at <= found.now - timedelta(seconds=q.age_s):
        parts.append("aged")
    if q.at_once:
        parts.append("ready")
    return parts


def _part(part: str, q: QueueState, found: Look, keys: Keys, seen: Sequence[int]) -> tuple[Any, dict[str, Any]]:
    """The statement that picks candidates of ``part`` of queue ``q``, and its values."""
    values: dict[str, Any] = {"claim_queue": q.name}
    if part == "aged":
        values["aged_before"] = found.now - timedelta(seconds=q.age_s)
    if keys.full:
        values["full"] = sorted(keys.full)
    if seen:
        values["seen"] = list(seen)
    return _picker(part, bool(keys.full), bool(seen), q.limited, keys.lite), values


@functools.cache
def _picker(part: str, full: bool, seen: bool, counted: bool, key_counts: bool) -> Any:
    """Built once per shape: building a statement costs more than running it.

    ``counted``: with the queue's limits, pause and counts (``q_*``) and the database's clock
    (``now``); ``key_counts``: with each candidate's key limits and counts (``k_*``).
    """
    me = bindparam("claim_supervisor", type_=Integer)
    alive = exists(select(SupervisorRow.id).where(SupervisorRow.id == me, SupervisorRow.stopped_at.is_(None)))
    queue = bindparam("claim_queue", type_=Task.queue.type)
    columns: list[Any] = [Task.id, Task.limit_key]
    if counted:
        of_queue = {c.key: select(c).where(Queue.name == queue).scalar_subquery() for c in QUEUE_LIMITS[1:]}
        columns += [v.label(f"q_{k}") for k, v in of_queue.items()]
        columns += [c.label(f"q_{c.name}") for c in counts(queue, of_queue["rate_period_s"], TaskAttempt.queue)]
        columns.append(db_now().label("now"))
    query = select(*columns)
    if key_counts:
        query = query.add_columns(LimitKey.name.label("k_name"), *(c.label(f"k_{c.key}") for c in KEY_LIMITS[1:]),
                                  *(c.label(f"k_{c.name}") for c in counts(
                                      Task.limit_key, LimitKey.rate_period_s, TaskAttempt.limit_key)))
        query = query.select_from(Task).outerjoin(LimitKey, LimitKey.name == Task.limit_key)
        if not counted:
            query = query.add_columns(db_now().label("now"))
    query = query.where(status_is(Task.status, *DUE), Task.queue == queue, alive)
    if not counted:  # a queue its look saw without limits: still so (else the next claim counts it), not paused
        query = query.where(~exists(select(Queue.name).where(
            Queue.name == queue, or_(Queue.concurrency.is_not(None), Queue.rate_count.is_not(None),
                                     Queue.paused_at.is_not(None)))))
    if part == "time":
        query = query.where(Task.next_attempt_at <= db_now()).order_by(Task.next_attempt_at, Task.id)
    elif part == "aged":
        query = query.where(Task.next_attempt_at.is_(None),
                            Task.queued_at <= bindparam("aged_before", type_=Task.queued_at.type)
                            ).order_by(Task.queued_at, Task.id)
    else:
        query = query.where(Task.next_attempt_at.is_(None)).order_by(Task.priority.desc(), Task.id)
    if full:
        query = query.where(or_(Task.limit_key.is_(None), Task.limit_key.not_in(bindparam("full", expanding=True))))
    # Not of a paused run, as the claim's own statement reads it (a pause after the look holds too).
    query = query.where(or_(Task.run_id.is_(None), ~exists(select(Run.id).where(
        Run.id == Task.run_id, Run.paused_at.is_not(None)))))
    if seen:
        query = query.where(Task.id.not_in(bindparam("seen", expanding=True)))
    return query.limit(bindparam("want", type_=Integer)).with_for_update(of=Task, skip_locked=True)


_NO_KEYS = Keys(False)
# RETURNING keeps no order: each part's own, as near as the rows returned tell (a due time is gone).
_ORDER = {"time": lambda r: (r.id,), "aged": lambda r: (r.queued_at, r.id), "ready": lambda r: (-r.priority, r.id)}


_LOCK_QUEUES = (select(*QUEUE_LIMITS).where(Queue.name.in_(bindparam("names", expanding=True))).order_by(Queue.name)
                .with_for_update())
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
