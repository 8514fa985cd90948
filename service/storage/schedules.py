"""Schedules as rows: create, sync from code, list, pause, resume, delete, fire by hand.

Firing itself is :mod:`service.storage.firing`. A schedule's cursor (``next_slot_at``) starts
at its first slot after it was made (or resumed): slots before that are not its own, never
"missed". A schedule defined in code is synced by name at every start: the unique name makes
many workers starting together insert it once; a changed definition updates it (its cursor is
kept when the expression and zone are unchanged, else it restarts after now).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from service.cron import cron
from service.errors import Conflict, NotFound
from service.storage import notify
from service.storage.db import db_now, read_tx, write_tx
from service.storage.errors import translated
from service.storage.firing import Fired, Firing, fire_by_hand, locked_schedule
from service.storage.models import Run, Schedule, ScheduleFire, Task

FIRES_SHOWN = 10  # a schedule's latest fires in a listing
UPCOMING_SHOWN = 3
DEFINING = ("cron", "timezone", "target", "kind", "spec", "catch_up", "catch_up_max", "overlap", "grace_s")


@dataclass(frozen=True)
class FireView:
    id: int
    schedule_id: int
    slot_at: datetime | None  # UTC; None: fired by hand
    slots: int
    last_slot_at: datetime | None
    outcome: str
    catch_up: bool
    reason: str | None
    fired_at: datetime
    run_id: int | None
    task_id: int | None
    status: str | None = None  # of its run or task, when it has one


@dataclass(frozen=True)
class ScheduleView:
    id: int
    name: str
    cron: str
    timezone: str
    description: str  # the expression in words, with its zone
    target: str
    kind: str
    spec: dict[str, Any]
    catch_up: str
    catch_up_max: int
    overlap: str
    grace_s: float
    paused: bool
    origin: str
    next_slot_at: datetime | None
    upcoming: list[datetime]  # the next few fire times (UTC), none while paused
    created_at: datetime
    updated_at: datetime
    fires: list[FireView] = field(default_factory=list)  # the latest, newest first
    waiting: bool = False  # a fire is queued behind the previous one


@dataclass(frozen=True)
class ScheduleFireRef:
    """Which schedule and slot started a run or task (for its page)."""

    schedule_id: int
    schedule: str
    slot_at: datetime | None
    catch_up: bool
    timezone: str


class Schedules(Firing):
    engine: Engine

    @translated
    def create_schedule(self, values: dict[str, Any]) -> int:
        """Insert a schedule (``values`` checked by the caller). Raises Conflict: the name is taken."""
        c = cron(values["cron"], values["timezone"])
        try:
            with write_tx(self.engine) as conn:
                now = conn.execute(select(db_now())).scalar_one()
                made = int(conn.execute(insert(Schedule).values(
                    **values, paused=False, next_slot_at=c.after(now), created_at=now, updated_at=now,
                ).returning(Schedule.id)).scalar_one())
                notify.notify(conn)  # supervisors sleep until its first slot
                return made
        except IntegrityError:
            raise Conflict(f"a schedule named {values['name']!r} exists already; pick another name, or "
                           "delete that one first") from None

    @translated
    def sync_schedules(self, definitions: list[dict[str, Any]]) -> list[str]:
        """Make the schedules defined in code exist as defined (by name); returns the names written."""
        written: list[str] = []
        for values in definitions:
            for _ in range(2):  # a second round only after another worker inserted the same name first
                try:
                    if self._sync_one(values):
                        written.append(values["name"])
                    break
                except IntegrityError:
                    continue
        return written

    def _sync_one(self, values: dict[str, Any]) -> bool:
        with write_tx(self.engine) as conn:
            row = conn.execute(select(Schedule.id, Schedule.definition_hash, Schedule.cron, Schedule.timezone)
                               .where(Schedule.name == values["name"]).with_for_update()).one_or_none()
            now = conn.execute(select(db_now())).scalar_one()
            c = cron(values["cron"], values["timezone"])
            if row is None:
                conn.execute(insert(Schedule).values(**values, paused=False, next_slot_at=c.after(now),
                                                     created_at=now, updated_at=now))
            elif row.definition_hash == values["definition_hash"]:
                return False
            else:
                changed = {k: values[k] for k in (*DEFINING, "definition_hash", "origin")}
                if (row.cron, row.timezone) != (values["cron"], values["timezone"]):
                    changed["next_slot_at"] = c.after(now)
                conn.execute(update(Schedule).where(Schedule.id == row.id).values(**changed, updated_at=now))
            notify.notify(conn)
            return True

    @translated
    def schedules(self, *, fires: int = FIRES_SHOWN) -> list[ScheduleView]:
        with read_tx(self.engine) as conn:
            rows = conn.execute(select(*Schedule.__table__.c).order_by(Schedule.name)).all()
            return [_view(conn, r, fires) for r in rows]

    @translated
    def schedule(self, ref: int | str, *, fires: int = FIRES_SHOWN) -> ScheduleView:
        """One schedule by id or name. Raises NotFound."""
        with read_tx(self.engine) as conn:
            return _view(conn, _find(conn, ref), fires)

    @translated
    def schedule_fires(self, ref: int | str, *, limit: int = 50, before_id: int | None = None) -> list[FireView]:
        with read_tx(self.engine) as conn:
            row = _find(conn, ref)
            return _fires(conn, row.id, limit, before_id)

    @translated
    def pause_schedule(self, ref: int | str) -> ScheduleView:
        """No slot fires while paused; those passing meanwhile are not caught up on resume."""
        with write_tx(self.engine) as conn:
            row = _find(conn, ref)
            conn.execute(update(Schedule).where(Schedule.id == row.id).values(paused=True, updated_at=db_now()))
        return self.schedule(row.id)

    @translated
    def resume_schedule(self, ref: int | str) -> ScheduleView:
        """Fires again from its first slot after now."""
        with write_tx(self.engine) as conn:
            row = _find(conn, ref)
            if row.paused:
                now = conn.execute(select(db_now())).scalar_one()
                conn.execute(update(Schedule).where(Schedule.id == row.id).values(
                    paused=False, next_slot_at=cron(row.cron, row.timezone).after(now), updated_at=now))
                notify.notify(conn)
        return self.schedule(row.id)

    @translated
    def delete_schedule(self, ref: int | str) -> None:
        """Delete a schedule and its fire history; the runs and tasks it started stay."""
        with write_tx(self.engine) as conn:
            row = _find(conn, ref)
            locked_schedule(conn, row.id)
            conn.execute(delete(ScheduleFire).where(ScheduleFire.schedule_id == row.id))
            conn.execute(delete(Schedule).where(Schedule.id == row.id))

    @translated
    def fire_schedule_now(self, ref: int | str) -> Fired:
        """Create the schedule's task or run now, outside its slots (a paused schedule too)."""
        with write_tx(self.engine) as conn:
            row = _find(conn, ref)
            return fire_by_hand(conn, locked_schedule(conn, row.id))

    @translated
    def fire_of(self, *, run_id: int | None = None, task_id: int | None = None) -> ScheduleFireRef | None:
        """The schedule and slot that started this run or task, if one did."""
        column = ScheduleFire.run_id if run_id is not None else ScheduleFire.task_id
        with read_tx(self.engine) as conn:
            row = conn.execute(
                select(ScheduleFire.schedule_id, Schedule.name, ScheduleFire.slot_at, ScheduleFire.catch_up,
                       Schedule.timezone)
                .join(Schedule, Schedule.id == ScheduleFire.schedule_id)
                .where(column == (run_id if run_id is not None else task_id))).first()
        return None if row is None else ScheduleFireRef(*row)

    @translated
    def count_schedules(self) -> int:
        with read_tx(self.engine) as conn:
            return int(conn.execute(select(func.count()).select_from(Schedule)).scalar_one())


def _find(conn: Connection, ref: int | str) -> Any:
    by = Schedule.id == ref if isinstance(ref, int) else Schedule.name == ref
    row = conn.execute(select(*Schedule.__table__.c).where(by)).one_or_none()
    if row is None:
        raise NotFound(f"no schedule {'#' if isinstance(ref, int) else ''}{ref}")
    return row


def _fires(conn: Connection, schedule_id: int, limit: int, before_id: int | None = None) -> list[FireView]:
    query = (select(*ScheduleFire.__table__.c, func.coalesce(Run.status, Task.status).label("status"))
             .outerjoin(Run, Run.id == ScheduleFire.run_id).outerjoin(Task, Task.id == ScheduleFire.task_id)
             .where(ScheduleFire.schedule_id == schedule_id))
    if before_id is not None:
        query = query.where(ScheduleFire.id < before_id)
    rows = conn.execute(query.order_by(ScheduleFire.id.desc()).limit(limit)).all()
    return [FireView(**r._mapping) for r in rows]


def _view(conn: Connection, r: Any, fires: int) -> ScheduleView:
    c = cron(r.cron, r.timezone)
    upcoming = [] if r.paused or r.next_slot_at is None else \
        [r.next_slot_at, *c.upcoming(r.next_slot_at, UPCOMING_SHOWN - 1)]
    return ScheduleView(
        id=r.id, name=r.name, cron=r.cron, timezone=r.timezone, description=c.explain(), target=r.target,
        kind=r.kind, spec=r.spec, catch_up=r.catch_up, catch_up_max=r.catch_up_max, overlap=r.overlap,
        grace_s=r.grace_s, paused=bool(r.paused), origin=r.origin, next_slot_at=r.next_slot_at, upcoming=upcoming,
        created_at=r.created_at, updated_at=r.updated_at, fires=_fires(conn, r.id, fires) if fires else [],
        waiting=r.waiting_fire_id is not None,
    )
