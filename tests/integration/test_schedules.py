"""Schedules, fired with an injected clock: one fire row per slot, catch-up, overlap, pause, sync, races.

``t.fire_due_schedules(now=...)`` (naive UTC) replaces the database's clock for firing, so a
gap of hours is a jump of ``now``; verbs that read the database's own clock (create, resume)
are met by aging rows with an UPDATE instead of waiting.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update

import service
from service.errors import Conflict, InvalidInput, NotFound
from service.faces import schedules as defined_schedules
from service.storage.db import db_now
from service.storage.models import Run, Schedule, ScheduleFire, Task
from tests.conftest import wait_for
from tests.integration.test_retention import age

HOUR = timedelta(hours=1)
SECOND = timedelta(seconds=1)
DAY_S = 86_400.0
RACERS = 8
DEADLINE_S = 20.0
RUN = {"kind": "echo", "tasks": [{"x": 1}, {"x": 2}]}


def add(t: service.Tenure, name: str = "hourly", cron: str = "0 * * * *", **options: Any) -> datetime:
    """Create a schedule (a run of two echo tasks per slot unless told); returns its first slot."""
    if "task" not in options:
        options.setdefault("run", RUN)
    view = t.add_schedule(name, cron, **options)
    assert view.next_slot_at is not None
    return view.next_slot_at


def fires(t: service.Tenure, name: str = "hourly") -> list[Any]:
    with t.engine.connect() as conn:
        return list(conn.execute(
            select(*ScheduleFire.__table__.c).join(Schedule, Schedule.id == ScheduleFire.schedule_id)
            .where(Schedule.name == name).order_by(ScheduleFire.id)).all())


def count(t: service.Tenure, table: Any, *where: Any) -> int:
    with t.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def cursor(t: service.Tenure, name: str = "hourly") -> datetime | None:
    return t.schedule(name).next_slot_at


def db_time(t: service.Tenure) -> datetime:
    with t.engine.connect() as conn:
        return conn.execute(select(db_now())).scalar_one()  # type: ignore[no-any-return]


def race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Each call in its own thread, released together; what each returned (a racer's error fails the test)."""
    start = threading.Barrier(len(calls), timeout=DEADLINE_S)
    out: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def racer(i: int) -> None:
        start.wait()
        try:
            out[i] = calls[i]()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_S)
    assert not any(thread.is_alive() for thread in threads), "a racer never finished"
    assert not errors, errors
    return out


# -- on time --------------------------------------------------------------------------------


def test_a_slot_on_time_creates_one_run_named_for_its_slot_and_moves_the_cursor(t: service.Tenure) -> None:
    slot = add(t, timezone="Europe/Berlin")
    assert slot > db_time(t) and slot.minute == slot.second == 0
    assert t.fire_due_schedules(now=slot - SECOND) == []  # not yet
    assert fires(t) == []

    [fired] = t.fire_due_schedules(now=slot + 2 * SECOND)
    assert (fired.outcome, fired.catch_up, fired.slot_at, fired.lag_s) == ("fired", False, slot, 2.0)
    assert fired.run_id is not None and fired.task_id is None
    [row] = fires(t)
    assert (row.slot_at, row.outcome, row.catch_up, row.slots, row.run_id) == (slot, "fired", False, 1, fired.run_id)
    assert row.fired_at == slot + 2 * SECOND  # the injected clock
    run, tasks = t.run_with_tasks(fired.run_id)
    local = slot.replace(tzinfo=UTC).astimezone(ZoneInfo("Europe/Berlin"))
    assert run.name == f"hourly · {local.strftime('%Y-%m-%d %H:%M:%S %Z')}"
    assert run.status == "running" and run.scheduled_for is None  # due at once
    assert [(task.kind, task.status) for task in tasks] == [("echo", "queued")] * 2
    assert cursor(t) == slot + HOUR
    assert t.store.fire_of(run_id=fired.run_id) is not None

    assert t.fire_due_schedules(now=slot + 3 * SECOND) == []  # the slot is done: never twice
    assert len(fires(t)) == 1 and count(t, Run) == 1


def test_a_task_schedule_creates_one_task_per_slot(t: service.Tenure) -> None:
    slot = add(t, "tick", "*/5 * * * *", task={"kind": "echo", "args": {"hello": 1}, "label": "tick"})
    done = t.fire_due_schedules(now=slot)
    assert [(f.outcome, f.task_id is not None, f.run_id) for f in done] == [("fired", True, None)]
    task = t.task(done[0].task_id)  # type: ignore[arg-type]
    assert (task.kind, task.status, task.run_id) == ("echo", "queued", None)
    [row] = fires(t, "tick")
    assert row.task_id == task.id and row.slot_at == slot
    ref = t.store.fire_of(task_id=task.id)
    assert ref is not None and (ref.schedule, ref.slot_at, ref.catch_up) == ("tick", slot, False)
    assert cursor(t, "tick") == slot + timedelta(minutes=5)


# -- catch-up after a gap -------------------------------------------------------------------


def gap(t: service.Tenure, **options: Any) -> tuple[datetime, list[Any]]:
    """A schedule whose workers were away for six slots (S .. S+5h): fired at S+5h+60s (grace 30 s)."""
    slot = add(t, overlap="allow", **options)
    done = t.fire_due_schedules(now=slot + 5 * HOUR + 60 * SECOND)
    assert cursor(t) == slot + 6 * HOUR
    assert t.fire_due_schedules(now=slot + 5 * HOUR + 61 * SECOND) == []
    return slot, done


def test_catch_up_none_records_the_gap_as_one_missed_span(t: service.Tenure) -> None:
    slot, done = gap(t, catch_up="none")
    assert [(f.outcome, f.slots) for f in done] == [("missed", 6)]
    [row] = fires(t)
    assert (row.outcome, row.slot_at, row.last_slot_at, row.slots, row.run_id) == \
        ("missed", slot, slot + 5 * HOUR, 6, None)
    assert "6 slots" in row.reason and "catch-up none" in row.reason
    assert count(t, Run) == 0


def test_catch_up_latest_creates_the_latest_missed_slot_and_records_the_rest(t: service.Tenure) -> None:
    slot, done = gap(t, catch_up="latest")
    assert [(f.outcome, f.catch_up, f.slots) for f in done] == [("missed", False, 5), ("fired", True, 1)]
    missed, fired = fires(t)
    assert (missed.slot_at, missed.last_slot_at, missed.slots) == (slot, slot + 4 * HOUR, 5)
    assert (fired.slot_at, fired.catch_up, fired.outcome) == (slot + 5 * HOUR, True, "fired")
    assert fired.run_id is not None and "caught up" in fired.reason
    assert count(t, Run) == 1


def test_catch_up_all_creates_each_missed_slot(t: service.Tenure) -> None:
    slot, done = gap(t, catch_up="all")
    assert [(f.outcome, f.catch_up) for f in done] == [("fired", True)] * 6
    rows = fires(t)
    assert [r.slot_at for r in rows] == [slot + i * HOUR for i in range(6)]
    assert all(r.catch_up and r.run_id is not None for r in rows)
    assert count(t, Run) == 6 and len({r.run_id for r in rows}) == 6


def test_catch_up_all_with_a_maximum_creates_the_latest_and_records_the_rest(t: service.Tenure) -> None:
    slot, done = gap(t, catch_up="all", catch_up_max=2)
    assert [(f.outcome, f.catch_up, f.slots) for f in done] == \
        [("missed", False, 4), ("fired", True, 1), ("fired", True, 1)]
    missed, *created = fires(t)
    assert (missed.slot_at, missed.last_slot_at, missed.slots) == (slot, slot + 3 * HOUR, 4)
    assert "at most 2" in missed.reason
    assert [r.slot_at for r in created] == [slot + 4 * HOUR, slot + 5 * HOUR]
    assert count(t, Run) == 2


def test_one_missed_slot_is_a_span_of_one(t: service.Tenure) -> None:
    slot = add(t, catch_up="none")
    [f] = t.fire_due_schedules(now=slot + 31 * SECOND)  # just past its grace
    assert (f.outcome, f.slots) == ("missed", 1)
    [row] = fires(t)
    assert row.slots == 1 and "the slot at" in row.reason and row.last_slot_at == slot


def test_a_catch_up_is_skipped_while_the_run_from_before_the_gap_still_runs(t: service.Tenure) -> None:
    slot = add(t, catch_up="all")
    [first] = t.fire_due_schedules(now=slot)  # on time; no supervisor: its run stays running
    done = t.fire_due_schedules(now=slot + 3 * HOUR + 60 * SECOND)
    assert [(f.outcome, f.catch_up) for f in done] == [("skipped", True)] * 3
    assert all(f"run {first.run_id}" in r.reason for r in fires(t)[1:])
    assert count(t, Run) == 1


# -- overlap --------------------------------------------------------------------------------


def test_overlap_skip_names_the_run_still_running(t: service.Tenure) -> None:
    slot = add(t)  # overlap skip is the default
    [first] = t.fire_due_schedules(now=slot)
    [second] = t.fire_due_schedules(now=slot + HOUR + SECOND)
    assert (second.outcome, second.run_id) == ("skipped", None)
    row = fires(t)[-1]
    assert row.outcome == "skipped" and f"run {first.run_id}" in row.reason and "had not ended" in row.reason
    assert count(t, Run) == 1

    t.cancel_run(first.run_id)  # type: ignore[arg-type]  # ended: the next slot fires
    [third] = t.fire_due_schedules(now=slot + 2 * HOUR)
    assert third.outcome == "fired" and count(t, Run) == 2


def test_overlap_skip_looks_at_a_task_target_too(t: service.Tenure) -> None:
    slot = add(t, "tick", task={"kind": "echo", "args": {}})
    [first] = t.fire_due_schedules(now=slot)
    [second] = t.fire_due_schedules(now=slot + HOUR)
    assert second.outcome == "skipped" and f"task {first.task_id}" in fires(t, "tick")[-1].reason


def test_overlap_allow_starts_beside_it(t: service.Tenure) -> None:
    slot = add(t, overlap="allow")
    t.fire_due_schedules(now=slot)
    t.fire_due_schedules(now=slot + HOUR)
    assert [r.outcome for r in fires(t)] == ["fired", "fired"]
    assert count(t, Run, Run.status == "running") == 2


def test_overlap_queue_holds_one_and_starts_it_when_the_previous_ends(t: service.Tenure) -> None:
    slot = add(t, overlap="queue")
    [first] = t.fire_due_schedules(now=slot)
    [queued] = t.fire_due_schedules(now=slot + HOUR)
    assert (queued.outcome, queued.run_id) == ("queued", None)
    assert t.schedule("hourly").waiting and t.store.upcoming().waiting
    [skipped] = t.fire_due_schedules(now=slot + 2 * HOUR)  # one waits at most
    assert skipped.outcome == "skipped" and "already waits" in fires(t)[-1].reason
    assert t.fire_due_schedules(now=slot + 2 * HOUR + SECOND) == []  # still running: it still waits
    assert count(t, Run) == 1

    t.cancel_run(first.run_id)  # type: ignore[arg-type]
    [released] = t.fire_due_schedules(now=slot + 2 * HOUR + 5 * SECOND)
    assert (released.outcome, released.slot_at) == ("fired", slot + HOUR) and released.run_id is not None
    rows = {r.slot_at: r for r in fires(t)}
    assert rows[slot + HOUR].outcome == "fired" and rows[slot + HOUR].run_id == released.run_id
    assert "started at" in rows[slot + HOUR].reason
    assert not t.schedule("hourly").waiting
    assert count(t, Run) == 2
    assert t.fire_due_schedules(now=slot + 2 * HOUR + 6 * SECOND) == []  # released once


# -- pause, resume, delete, by hand ----------------------------------------------------------


def test_a_paused_schedule_fires_nothing_and_its_paused_slots_are_not_missed_after_resume(
        t: service.Tenure) -> None:
    slot = add(t, catch_up="all")
    t.pause_schedule("hourly")
    assert t.schedule("hourly").paused and t.schedule("hourly").upcoming == []
    assert t.fire_due_schedules(now=slot + 3 * HOUR) == []
    # Three slots passed while it was paused: age its cursor by the database's clock.
    with t.engine.begin() as conn:
        conn.execute(update(Schedule).where(Schedule.name == "hourly").values(next_slot_at=slot - 3 * HOUR))
    assert t.fire_due_schedules() == []  # by the database's clock: paused, nothing fires
    assert fires(t) == []

    view = t.resume_schedule("hourly")
    assert not view.paused and view.next_slot_at == slot  # the first slot after now
    assert t.fire_due_schedules() == []  # nothing is caught up, nothing recorded as missed
    assert fires(t) == []
    [fired] = t.fire_due_schedules(now=slot)
    assert (fired.outcome, fired.catch_up) == ("fired", False)
    assert [r.outcome for r in fires(t)] == ["fired"]


def test_delete_takes_the_schedule_and_its_fires_and_leaves_its_runs(t: service.Tenure) -> None:
    slot = add(t)
    [fired] = t.fire_due_schedules(now=slot)
    schedule_id = t.schedule("hourly").id
    t.delete_schedule("hourly")
    with pytest.raises(NotFound):
        t.schedule("hourly")
    with pytest.raises(NotFound):
        t.delete_schedule(schedule_id)
    assert count(t, ScheduleFire) == 0 and count(t, Schedule) == 0
    assert t.run(fired.run_id).status == "running"  # type: ignore[arg-type]
    assert t.store.fire_of(run_id=fired.run_id) is None
    assert t.fire_due_schedules(now=slot + HOUR) == []


def test_fire_now_creates_work_outside_the_slots(t: service.Tenure) -> None:
    slot = add(t)
    t.pause_schedule("hourly")  # a paused one too: a person asked
    first = t.fire_schedule("hourly")
    second = t.fire_schedule(t.schedule("hourly").id)
    assert first.slot_at is None and first.run_id is not None and second.run_id not in (None, first.run_id)
    rows = fires(t)
    assert [(r.slot_at, r.outcome, r.reason) for r in rows] == [(None, "fired", "fired by hand")] * 2
    assert t.run(first.run_id).name == "hourly · by hand"  # type: ignore[arg-type]
    assert cursor(t) == slot  # the slots are untouched
    with pytest.raises(NotFound):
        t.fire_schedule("nope")


def test_a_taken_name_is_a_conflict_and_writes_nothing(t: service.Tenure) -> None:
    add(t)
    with pytest.raises(Conflict, match="'hourly' exists already"):
        add(t, cron="*/5 * * * *")
    with pytest.raises(Conflict):
        add(t, "  hourly  ")  # names are trimmed
    assert count(t, Schedule) == 1 and t.schedule("hourly").cron == "0 * * * *"


@pytest.mark.parametrize(("options", "field"), [
    ({"cron": "61 * * * *"}, "cron"), ({"timezone": "Mars/Olympus"}, "timezone"), ({"catch_up": "some"}, "catch_up"),
    ({"catch_up_max": 0}, "catch_up_max"), ({"overlap": "maybe"}, "overlap"), ({"grace_s": 0}, "grace_s"),
    ({"run": {"kind": "nope", "tasks": [{}]}}, "run"), ({"task": {"kind": "echo", "oops": 1}}, "task"),
    ({"run": RUN, "task": {"kind": "echo"}}, "task or a run"),
])
def test_a_bad_schedule_is_refused_naming_its_field_and_writes_nothing(
        t: service.Tenure, options: dict[str, Any], field: str) -> None:
    arguments = {"name": "bad", "cron": "0 * * * *", "run": RUN, **options}
    if "task" in options and "run" not in options:
        arguments.pop("run")
    with pytest.raises(InvalidInput, match=field):
        t.add_schedule(**arguments)
    assert count(t, Schedule) == 0


# -- code-defined schedules -----------------------------------------------------------------


@pytest.fixture
def in_code(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The process's schedules defined in code, empty for this test."""
    mine: dict[str, Any] = {}
    monkeypatch.setattr(defined_schedules, "_DEFINED", mine)
    return mine


def test_code_defined_schedules_synced_by_many_at_once_are_each_written_once(
        t: service.Tenure, in_code: dict[str, Any]) -> None:
    service.schedule("nightly", "0 2 * * *", timezone="Europe/Berlin", run=RUN)
    service.schedule("tick", "*/5 * * * *", task={"kind": "echo", "args": {"x": 1}}, overlap="allow")
    assert set(in_code) == {"nightly", "tick"}

    written = race([lambda: defined_schedules.sync_defined(t.store)] * RACERS)
    assert sorted(name for names in written for name in names) == ["nightly", "tick"]  # each by one racer
    assert count(t, Schedule) == 2
    nightly = t.schedule("nightly")
    assert (nightly.origin, nightly.timezone, nightly.target) == ("code", "Europe/Berlin", "run")
    assert defined_schedules.sync_defined(t.store) == []  # unchanged: nothing written

    first = nightly.next_slot_at
    service.schedule("nightly", "0 2 * * *", timezone="Europe/Berlin", run=RUN, overlap="queue")
    service.schedule("tick", "*/10 * * * *", task={"kind": "echo", "args": {"x": 2}}, overlap="allow")
    written = race([lambda: defined_schedules.sync_defined(t.store)] * RACERS)
    assert sorted(name for names in written for name in names) == ["nightly", "tick"]
    nightly, tick = t.schedule("nightly"), t.schedule("tick")
    assert nightly.overlap == "queue" and nightly.next_slot_at == first  # same expression: cursor kept
    assert tick.cron == "*/10 * * * *" and tick.spec["row"]["args"] == {"x": 2}
    assert tick.next_slot_at is not None and tick.next_slot_at.minute % 10 == 0
    assert count(t, Schedule) == 2


def test_a_schedule_decorating_a_registered_kind_starts_that_kind(
        t: service.Tenure, in_code: dict[str, Any]) -> None:
    from service.task_process.kinds.echo import build

    service.schedule("echoes", "@hourly", args={"y": 1})(build)
    with pytest.raises(InvalidInput, match="not a registered kind"):
        service.schedule("stray", "@hourly")(object)
    assert defined_schedules.sync_defined(t.store) == ["echoes"]
    view = t.schedule("echoes")
    assert (view.target, view.kind, view.spec["row"]["args"]) == ("task", "echo", {"y": 1})


# -- fired by a supervisor, by the database's clock ----------------------------------------


def test_a_supervisor_fires_each_slot_at_its_time_never_early(t: service.Tenure, supervise: Any) -> None:
    supervise(idle_poll_s=30.0)  # only its look-ahead can fire on time; it is asleep when the schedule comes
    add(t, "every-second", "* * * * * *", task={"kind": "echo", "args": {}}, overlap="allow", catch_up="none")

    def fired() -> list[Any]:
        return [r for r in fires(t, "every-second") if r.outcome == "fired"]

    wait_for(lambda: len(fired()) >= 3, 10, "three fires")
    t.pause_schedule("every-second")
    rows = fires(t, "every-second")
    assert all(r.outcome == "fired" and r.task_id is not None for r in rows), [r.reason for r in rows]
    slots = [r.slot_at for r in rows]
    assert slots == sorted(set(slots))  # one row per slot
    assert [b - a for a, b in pairwise(slots)] == [SECOND] * (len(slots) - 1)  # none left out
    lags = [(r.fired_at - r.slot_at).total_seconds() for r in rows]
    assert min(lags) >= 0 and max(lags) < 0.5, lags
    for r in rows:
        assert t.wait_task(r.task_id, 10).status == "succeeded"


# -- races ----------------------------------------------------------------------------------


def test_many_firers_at_once_make_one_fire_row_and_one_run_per_slot(t: service.Tenure) -> None:
    slot = add(t, catch_up="all", overlap="allow")
    add(t, "other", catch_up="all", overlap="allow")
    now = slot + 4 * HOUR + 10 * SECOND  # S .. S+3h caught up, S+4h on time: five slots each
    done = race([lambda: t.fire_due_schedules(now=now)] * RACERS)

    created = [f for batch in done for f in batch]
    assert len(created) == 10 and all(f.outcome == "fired" for f in created)
    for name in ("hourly", "other"):
        rows = fires(t, name)
        assert [r.slot_at for r in rows] == [slot + i * HOUR for i in range(5)]
        assert len({r.run_id for r in rows}) == 5
        assert cursor(t, name) == slot + 5 * HOUR
    assert count(t, Run) == 10 and count(t, Task) == 20


# -- retention ------------------------------------------------------------------------------


def test_prune_takes_old_runs_with_their_fire_rows_and_never_a_schedule(t: service.Tenure) -> None:
    slot = add(t, catch_up="none")
    add(t, "tick", task={"kind": "echo", "args": {}}, catch_up="none")
    made = t.fire_due_schedules(now=slot)
    [run_fire] = [f for f in made if f.run_id is not None]
    [task_fire] = [f for f in made if f.task_id is not None]
    gone = t.fire_due_schedules(now=slot + 3 * HOUR + 60 * SECOND)  # S+1h .. S+3h: made nothing
    assert [(f.outcome, f.slots) for f in gone] == [("missed", 3), ("missed", 3)]
    t.cancel_run(run_fire.run_id)  # type: ignore[arg-type]
    t.cancel_task(task_fire.task_id)  # type: ignore[arg-type]
    age(t, 40)
    with t.engine.begin() as conn:  # the fire rows were written then too
        conn.execute(update(ScheduleFire).values(fired_at=ScheduleFire.fired_at - timedelta(days=40)))

    report = t.prune(30 * DAY_S)

    assert (report.runs, report.tasks, report.fires) == (1, 2 + 1, 2)
    assert count(t, ScheduleFire) == 0 and count(t, Run) == 0 and count(t, Task) == 0
    assert count(t, Schedule) == 2
    # And the schedules go on firing as before.
    later = t.fire_due_schedules(now=slot + 4 * HOUR)
    assert sorted((f.schedule, f.outcome) for f in later) == [("hourly", "fired"), ("tick", "fired")]


def test_prune_keeps_what_is_recent_or_running(t: service.Tenure) -> None:
    slot = add(t, overlap="allow")
    [old] = t.fire_due_schedules(now=slot)
    [live] = t.fire_due_schedules(now=slot + HOUR)
    t.cancel_run(old.run_id)  # type: ignore[arg-type]
    report = t.prune(30 * DAY_S)  # ended just now: not old enough
    assert report.runs == 0 and len(fires(t)) == 2
    age(t, 40)
    t.prune(30 * DAY_S)
    assert [r.run_id for r in fires(t)] == [live.run_id]  # the running one stays, with its fire row


def test_a_pruned_last_fire_is_not_mistaken_for_another_schedules_fire(t: service.Tenure) -> None:
    """SQLite gives a new row the id of a deleted last row: the schedule's ``last_fire_id`` may then
    name another schedule's fire, whose running work must not make this schedule skip."""
    slot = add(t)
    [old] = t.fire_due_schedules(now=slot)
    t.cancel_run(old.run_id)  # type: ignore[arg-type]
    age(t, 40)
    t.prune(30 * DAY_S)
    assert fires(t) == []
    add(t, "other", "30 * * * *")
    with t.engine.begin() as conn:  # the other's first slot falls between this one's
        conn.execute(update(Schedule).where(Schedule.name == "other").values(next_slot_at=slot + HOUR / 2))
    [theirs] = t.fire_due_schedules(now=slot + HOUR / 2)
    assert (theirs.schedule, theirs.outcome) == ("other", "fired")  # its run is still running
    [mine] = t.fire_due_schedules(now=slot + HOUR)
    assert (mine.schedule, mine.outcome) == ("hourly", "fired"), fires(t)[-1].reason


def test_a_fire_queued_before_a_pause_waits_for_the_resume(t: service.Tenure) -> None:
    slot = add(t, overlap="queue")
    [first] = t.fire_due_schedules(now=slot)
    [queued] = t.fire_due_schedules(now=slot + HOUR)
    assert queued.outcome == "queued"
    t.pause_schedule("hourly")
    t.cancel_run(first.run_id)  # type: ignore[arg-type]  # the run it waited for ends while paused
    assert t.fire_due_schedules(now=slot + HOUR + SECOND) == []  # paused: nothing starts
    assert count(t, Run) == 1 and t.schedule("hourly").waiting

    t.resume_schedule("hourly")
    [released] = t.fire_due_schedules(now=slot + HOUR + 2 * SECOND)
    assert (released.outcome, released.slot_at) == ("fired", slot + HOUR)
    assert count(t, Run) == 2 and not t.schedule("hourly").waiting
