"""Firing schedules: for every slot, exactly one row in ``schedule_fires``, whatever crashes.

A schedule's ``next_slot_at`` is a cursor: every slot before it has its fire row, none at or
after it does. Handling a slot is one short write transaction that locks the schedule row
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL: another firer skips it; SQLite has one writer),
reads the cursor, writes the slot's fire row and the task or run it creates, and moves the
cursor past the slot. The unique key on (schedule_id, slot_at) makes the database refuse a
second row for a slot, so even a firer that stalled (SIGSTOP) or whose clock stepped back
cannot create a slot's work twice: its transaction rolls back whole. No lock outlives its
transaction, so a ``kill -9`` at any moment leaves either the slot done or untouched.

What a slot becomes (judged by one clock: the database's, or an injected ``now`` in tests):

* **on time** (found at most ``grace_s`` after its time): its work is created, unless the work
  of the schedule's previous fire has not ended: then the overlap policy decides (skip: a
  ``skipped`` row saying why; allow: created beside it; queue: a ``queued`` row, created once
  the previous ends; while one waits, further slots are skipped);
* **missed** (found later: nothing ran at its time): the catch-up policy decides. ``none``
  records them as one ``missed`` row for the span; ``latest`` creates the latest of them, marked
  as a catch-up, and records the rest as missed; ``all`` creates each (the latest
  ``catch_up_max`` of them), marked as catch-ups, one transaction per slot. Catch-ups are not
  each other's overlap: only a fire from before the outage can make one skip.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, exists, false, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from service.cron import Cron, cron, from_utc
from service.storage import notify
from service.storage.db import db_now, elapsed_ms, read_tx, status_is, write_tx
from service.storage.errors import translated
from service.storage.models import (
    TERMINAL_TASK_STATUSES,
    CatchUp,
    FireOutcome,
    Overlap,
    Run,
    RunStatus,
    Schedule,
    ScheduleFire,
    ScheduleTarget,
    Task,
)
from service.storage.submit import Placement, insert_run, insert_task, placed

log = logging.getLogger("tenure.schedules")

MAX_COUNTED = 10_000  # slots of one missed span counted one by one; beyond, "more than"
MAX_SLOTS_PER_PASS = 1_000  # transactions one pass makes for one schedule, at most (the next pass goes on)
TERMINAL = {s.value for s in TERMINAL_TASK_STATUSES}


@dataclass(frozen=True)
class Fired:
    """What one transaction did with one slot, for metrics and logs."""

    schedule: str
    outcome: str  # FireOutcome
    catch_up: bool
    slot_at: datetime | None
    lag_s: float | None  # from the slot's time to its work's creation, by the database's clock
    slots: int = 1
    run_id: int | None = None
    task_id: int | None = None


@dataclass(frozen=True)
class Upcoming:
    """Seconds until the earliest task due by a time and the earliest schedule slot (by the
    database's clock; 0 when it is due already; None: there is none), and whether a fire waits
    behind an earlier one."""

    task_in_s: float | None
    slot_in_s: float | None
    waiting: bool


class Firing:
    engine: Engine

    def upcoming(self, queues: Sequence[str] | None = None) -> Upcoming:
        """Index reads only: what a supervisor sleeps until. With ``queues``, only tasks of those
        queues count (the ones it serves that are neither paused nor at a limit)."""
        with read_tx(self.engine) as conn:
            if queues is None:
                task_ms, slot_ms, waiting = conn.execute(_UPCOMING).one()
            else:
                task_ms, slot_ms, waiting = conn.execute(_UPCOMING_IN, {"queues": list(queues)}).one()
        return Upcoming(None if task_ms is None else max(0.0, task_ms / 1000),
                        None if slot_ms is None else max(0.0, slot_ms / 1000), bool(waiting))

    @translated
    def fire_due(self, now: datetime | None = None) -> list[Fired]:
        """Handle every due slot of every schedule (and every queued fire whose predecessor ended);
        one transaction per slot. ``now`` (naive UTC) replaces the database's clock, for tests."""
        with read_tx(self.engine) as conn:
            at = _now(conn, now)
            ids = [row[0] for row in conn.execute(
                select(Schedule.id).where(Schedule.paused == false(), Schedule.next_slot_at <= at)
                .union(select(Schedule.id).where(Schedule.waiting_fire_id.is_not(None))))]
        done: list[Fired] = []
        for schedule_id in sorted(ids):
            for _ in range(MAX_SLOTS_PER_PASS):
                fired, more = self._fire_one(schedule_id, now)
                done.extend(fired)
                if not more:  # its cursor is past now: no transaction just to find that out
                    break
        return done

    def _fire_one(self, schedule_id: int, now: datetime | None) -> tuple[list[Fired], bool]:
        """One transaction: what it wrote (a created slot may come with the missed span before
        it; empty when nothing was due or another firer holds the schedule), and whether another
        slot of it is due already."""
        try:
            with write_tx(self.engine) as conn:
                s = locked_schedule(conn, schedule_id, skip_locked=True)
                if s is None:
                    return [], False  # deleted, or another firer holds it now
                at = now if now is not None else s.db_now
                if s.paused:
                    return [], False  # nothing starts while paused, a fire queued before the pause neither
                if s.waiting_fire_id is not None and not _running(conn, s, s.last_fire_id):
                    fired = [_release_waiting(conn, s, at)]
                elif s.next_slot_at is None or s.next_slot_at > at:
                    return [], False
                else:
                    fired = _handle_slot(conn, s, cron(s.cron, s.timezone), at)
                return fired, s.next_slot_at is not None and s.next_slot_at <= at
        except IntegrityError as exc:
            # The row lock makes this rare: a slot's row is there, yet the cursor was not past it.
            log.warning("schedule.slot_refused schedule=%s: the database refused a second row for a slot (%s); "
                        "nothing was written", schedule_id, str(exc.orig).splitlines()[0] if exc.orig else exc)
            return [], False


def locked_schedule(conn: Connection, schedule_id: int, *, skip_locked: bool = False) -> Any:
    """The schedule's row, locked for this transaction (on PostgreSQL; SQLite has one writer), as a
    mutable namespace with the database's clock as ``db_now``; None when there is none (or, with
    ``skip_locked``, another holds it)."""
    row = conn.execute(select(*Schedule.__table__.c, db_now().label("db_now")).where(Schedule.id == schedule_id)
                       .with_for_update(skip_locked=skip_locked)).one_or_none()
    return None if row is None else SimpleNamespace(**row._mapping)


def _now(conn: Connection, now: datetime | None) -> datetime:
    return now if now is not None else conn.execute(select(db_now())).scalar_one()  # type: ignore[no-any-return]


def _handle_slot(conn: Connection, s: Any, c: Cron, at: datetime) -> list[Fired]:
    slot = c.at_or_after(s.next_slot_at)  # the cursor is a slot, unless the expression changed since
    if (at - slot).total_seconds() <= s.grace_s:
        return [_fire(conn, s, c, slot, at, catch_up=False)]
    latest = c.at_or_before(at - _seconds(s.grace_s))  # the latest missed slot
    last_missed = latest[0] if latest and latest[0] >= slot else slot
    if s.catch_up == CatchUp.NONE:
        return [_missed(conn, s, c, slot, last_missed, at, "catch-up none")]
    if s.catch_up == CatchUp.LATEST:
        done = []
        if last_missed > slot:  # the span before the latest is reported too: metrics and logs count it
            before = c.at_or_before(last_missed - _seconds(1))[0]
            done.append(_missed(conn, s, c, slot, before, at,
                                "catch-up latest: only the latest missed slot is created"))
        return [*done, _fire(conn, s, c, last_missed, at, catch_up=True)]
    kept = c.at_or_before(last_missed, s.catch_up_max)  # ALL: the latest catch_up_max missed slots
    first_kept = kept[-1] if kept else slot
    if first_kept > slot:
        before = c.at_or_before(first_kept - _seconds(1))[0]
        return [_missed(conn, s, c, slot, before, at,
                        f"catch-up all, at most {s.catch_up_max}: only the latest {s.catch_up_max} are created")]
    return [_fire(conn, s, c, slot, at, catch_up=True)]


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def _missed(conn: Connection, s: Any, c: Cron, first: datetime, last: datetime, at: datetime,
            why: str) -> Fired:
    slots, more = c.between(first, last, MAX_COUNTED)
    count = len(slots) + (1 if more else 0)
    shown = f"more than {MAX_COUNTED:,}" if more else f"{count:,}"
    reason = (f"{shown} slot{'s' if count != 1 else ''} from {_local(first, s)} to {_local(last, s)} missed while "
              f"no worker fired them ({why})") if count != 1 else \
        f"the slot at {_local(first, s)} was missed while no worker fired it ({why})"
    _row(conn, s, slot_at=first, last_slot_at=last, slots=count, outcome=FireOutcome.MISSED, reason=reason,
         at=at)
    _advance(conn, s, c.after(last), at)
    return Fired(s.name, FireOutcome.MISSED.value, False, first, None, slots=count)


def _fire(conn: Connection, s: Any, c: Cron, slot: datetime, at: datetime, *, catch_up: bool) -> Fired:
    lag = (at - slot).total_seconds()
    last = _last_fire(conn, s, s.last_fire_id)
    judged = last is not None and not (catch_up and last.catch_up)  # catch-ups are not each other's overlap
    busy = judged and _running(conn, s, s.last_fire_id)
    if busy and s.overlap != Overlap.ALLOW:
        assert last is not None
        held = f"the {s.target} of the slot at {_local(last.slot_at, s)} ({_ref(last)}) had not ended"
        if s.overlap == Overlap.QUEUE and s.waiting_fire_id is None:
            fire_id = _row(conn, s, slot_at=slot, outcome=FireOutcome.QUEUED, catch_up=catch_up, at=at,
                           reason=f"queued: {held}; it starts when that ends")
            conn.execute(update(Schedule).where(Schedule.id == s.id).values(waiting_fire_id=fire_id))
            _advance(conn, s, c.after(slot), at)
            return Fired(s.name, FireOutcome.QUEUED.value, catch_up, slot, None)
        reason = f"skipped: {held}" if s.overlap == Overlap.SKIP else \
            f"skipped: {held}, and the next slot already waits behind it"
        _row(conn, s, slot_at=slot, outcome=FireOutcome.SKIPPED, catch_up=catch_up, at=at, reason=reason)
        _advance(conn, s, c.after(slot), at)
        return Fired(s.name, FireOutcome.SKIPPED.value, catch_up, slot, None)
    run_id, task_id = _create(conn, s, slot)
    fire_id = _row(conn, s, slot_at=slot, outcome=FireOutcome.FIRED, catch_up=catch_up, at=at, run_id=run_id,
                   task_id=task_id, reason="caught up: created late for a missed slot" if catch_up else None)
    conn.execute(update(Schedule).where(Schedule.id == s.id).values(last_fire_id=fire_id))
    _advance(conn, s, c.after(slot), at)
    notify.notify(conn)
    return Fired(s.name, FireOutcome.FIRED.value, catch_up, slot, lag, run_id=run_id, task_id=task_id)


def fire_by_hand(conn: Connection, s: Any) -> Fired:
    """Create the schedule's work now, outside its slots (no overlap policy: a person asked)."""
    at = s.db_now
    run_id, task_id = _create(conn, s, None)
    fire_id = _row(conn, s, slot_at=None, outcome=FireOutcome.FIRED, at=at, run_id=run_id, task_id=task_id,
                   reason="fired by hand")
    conn.execute(update(Schedule).where(Schedule.id == s.id).values(last_fire_id=fire_id))
    notify.notify(conn)
    return Fired(s.name, FireOutcome.FIRED.value, False, None, None, run_id=run_id, task_id=task_id)


def _release_waiting(conn: Connection, s: Any, at: datetime) -> Fired:
    """The fire queued behind the previous one: its predecessor ended, so its work starts now."""
    fire = _last_fire(conn, s, s.waiting_fire_id)
    conn.execute(update(Schedule).where(Schedule.id == s.id).values(waiting_fire_id=None))
    if fire is None:
        return Fired(s.name, FireOutcome.QUEUED.value, False, None, None)
    run_id, task_id = _create(conn, s, fire.slot_at)
    conn.execute(update(ScheduleFire).where(ScheduleFire.id == fire.id).values(
        outcome=FireOutcome.FIRED.value, run_id=run_id, task_id=task_id, fired_at=at,
        reason=f"{fire.reason or 'queued'}; started at {_local(at, s)} when it ended"))
    conn.execute(update(Schedule).where(Schedule.id == s.id).values(last_fire_id=fire.id))
    notify.notify(conn)
    lag = (at - fire.slot_at).total_seconds() if fire.slot_at is not None else None
    return Fired(s.name, FireOutcome.FIRED.value, fire.catch_up, fire.slot_at, lag, run_id=run_id, task_id=task_id)


def _create(conn: Connection, s: Any, slot: datetime | None) -> tuple[int | None, int | None]:
    spec = s.spec
    # Where its work waits: the kind's queue and key limits, as planned when the schedule was made.
    where = Placement(queue=spec.get("queue") or "default",
                      key_limits=tuple((str(k), int(n)) for k, n in spec.get("key_limits") or ()))
    if s.target == ScheduleTarget.TASK:
        return None, placed(conn, where, lambda: insert_task(conn, {**spec["row"], "queue": where.queue}, None))
    when = _local(slot, s) if slot is not None else "by hand"
    name = spec.get("name") or f"{s.name} · {when}"
    return placed(conn, where, lambda: insert_run(
        conn, kind=spec["kind"], total=int(spec["total"]), params=spec.get("params") or {}, tasks=spec["rows"],
        name=name[:200], on_complete=spec.get("on_complete"), due=None, queue=where.queue)), None


def _row(conn: Connection, s: Any, *, slot_at: datetime | None, outcome: FireOutcome, at: datetime,
         reason: str | None = None, catch_up: bool = False, slots: int = 1, last_slot_at: datetime | None = None,
         run_id: int | None = None, task_id: int | None = None) -> int:
    return int(conn.execute(insert(ScheduleFire).values(
        schedule_id=s.id, slot_at=slot_at, slots=slots, last_slot_at=last_slot_at, outcome=outcome.value,
        catch_up=catch_up, reason=reason, fired_at=at, run_id=run_id, task_id=task_id,
    ).returning(ScheduleFire.id)).scalar_one())


def _advance(conn: Connection, s: Any, to: datetime, at: datetime) -> None:
    # The row is locked (PostgreSQL) or the database is (SQLite): nobody moved the cursor since it was
    # read. No guard on its old value: on SQLite that would compare text, and a time written by hand
    # in another format ('… 02:00:00' for '… 02:00:00.000000') would never match, wedging the schedule.
    conn.execute(update(Schedule).where(Schedule.id == s.id).values(next_slot_at=to, updated_at=at))
    s.next_slot_at = to


def _last_fire(conn: Connection, s: Any, fire_id: int | None) -> Any:
    """That fire of this schedule; None when it is gone. The schedule is checked too: a fire row
    pruned with its run leaves the id behind, and SQLite gives a deleted last row's id to the next
    row inserted, which may be another schedule's fire."""
    if fire_id is None:
        return None
    return conn.execute(select(*ScheduleFire.__table__.c)
                        .where(ScheduleFire.id == fire_id, ScheduleFire.schedule_id == s.id)).one_or_none()


def _running(conn: Connection, s: Any, fire_id: int | None) -> bool:
    """Whether the work of that fire has not ended (a pruned or deleted one has)."""
    last = _last_fire(conn, s, fire_id)
    if last is None:
        return False
    if last.run_id is not None:
        status = conn.execute(select(Run.status).where(Run.id == last.run_id)).scalar_one_or_none()
        return status == RunStatus.RUNNING.value
    if last.task_id is not None:
        status = conn.execute(select(Task.status).where(Task.id == last.task_id)).scalar_one_or_none()
        return status is not None and status not in TERMINAL
    return False


def _ref(fire: Any) -> str:
    return f"run {fire.run_id}" if fire.run_id is not None else f"task {fire.task_id}"


def _local(moment: datetime | None, s: Any) -> str:
    if moment is None:
        return "by hand"
    return from_utc(moment, cron(s.cron, s.timezone).tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def _upcoming(*where: Any) -> Any:
    return select(
        elapsed_ms(
            select(func.min(Task.next_attempt_at))
            .where(status_is(Task.status, "queued", "retrying"), Task.next_attempt_at.is_not(None), *where,
                   or_(Task.run_id.is_(None), ~exists(select(Run.id).where(Run.id == Task.run_id,
                                                                            Run.paused_at.is_not(None)))))
            .scalar_subquery(),
            db_now()),
        elapsed_ms(select(func.min(Schedule.next_slot_at)).where(Schedule.paused == false()).scalar_subquery(),
                   db_now()),
        select(Schedule.id).where(Schedule.waiting_fire_id.is_not(None)).limit(1).exists(),
    )


_UPCOMING = _upcoming()
_UPCOMING_IN = _upcoming(Task.queue.in_(bindparam("queues", expanding=True)))
