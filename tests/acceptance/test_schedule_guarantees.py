"""Schedules against real `tenure worker` processes, on a SQLite file and on PostgreSQL.

* Exactly once per slot: three workers (three simulated hosts) fire a schedule of every second
  while one of them is killed (-9) and restarted every two seconds, one is frozen (SIGSTOP)
  past the lease TTL and thawed, and one runs under libfaketime with its wall clock stepped
  ahead and behind. Every slot from the first to the last has exactly one fire row, every
  fired row exactly one task, and no task exists without its fire row.
* Missed slots: every worker killed for five seconds, one started again; each catch-up policy
  (none, latest, all, all with a maximum of two) does with the slots of the outage what it
  says, and the slots certainly inside the outage are never lost nor doubled.
* Overlap: work that lasts longer than the interval: skip, allow and queue.
* Daylight saving through the injected clock (no processes): Europe/Berlin's short and long days.

The real-process tests take 15 to 25 s each (they live through real seconds of a schedule of
every second); each says why. The chaos tests run in their own xdist group, beside the other
acceptance tests: their workers mostly wait for the next second.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text

import service
from service.cron import Cron, to_utc
from service.storage.db import db_now
from service.storage.models import Schedule
from tests.acceptance.schedule_fleet import (
    Fleet,
    coverage,
    cursor,
    db_time,
    dt,
    every_slot,
    fires,
    labelled_tasks,
    move_cursor,
)
from tests.conftest import report, wait_for

pytestmark = pytest.mark.acceptance

SECOND = timedelta(seconds=1)
EVERY_SECOND = "* * * * * *"
LEASE_TTL_S = 2.0
WORKER_ENV = {"TENURE_HEARTBEAT_S": "0.3", "TENURE_LEASE_TTL_S": str(LEASE_TTL_S)}
BERLIN = ZoneInfo("Europe/Berlin")
needs_faketime = pytest.mark.skipif(shutil.which("faketime") is None and os.environ.get("CI") != "true",
                                    reason="Debian's faketime is not installed (apt-get install faketime)")


def live_hosts(t: service.Tenure) -> int:
    with t.engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(DISTINCT host) FROM supervisors WHERE stopped_at IS NULL")).scalar_one())


def count(t: service.Tenure, sql: str, **params: Any) -> int:
    with t.engine.connect() as conn:
        return int(conn.execute(text(sql), params).scalar_one())


def pace(until: float, fleet: Fleet, watch: Callable[[], None] = lambda: None) -> None:
    """Wait for the scenario's next moment (the chaos is paced by the clock: that is the scenario, not a
    synchronization), calling ``watch`` every 0.1 s and failing at once should a worker die on its own."""
    while (left := until - time.monotonic()) > 0:
        threading.Event().wait(min(left, 0.1))
        crashed = fleet.exited()
        assert not crashed, f"a worker died on its own: {crashed}\n{fleet.tail()}"
        watch()


def freeze_at_a_slot(fleet: Fleet, host: str) -> None:
    """SIGSTOP the host's worker a few milliseconds after a whole second: as it wakes to fire that slot
    (it may stop holding the schedule's lock, or SQLite's write lock, mid-transaction)."""
    wait_for(lambda: 0.002 <= time.time() % 1 <= 0.02, 2, "a slot's first milliseconds")
    fleet.freeze(host)


def cursor_ahead_s(t: service.Tenure, name: str) -> float:
    """How far the schedule's cursor is ahead of the database's clock (of this process, on SQLite)."""
    with t.engine.connect() as conn:
        slot, now = conn.execute(select(Schedule.next_slot_at, db_now()).where(Schedule.name == name)).one()
    return (dt(slot) - dt(now)).total_seconds()


def check_slots(t: service.Tenure, name: str, c: Cron, first: datetime) -> tuple[list[Any], dict[datetime, Any]]:
    """Every slot from the schedule's first to its last handled one has exactly one fire row (a missed
    span counts for its slots), and the cursor stands right after the last. The rows, and the row of each slot."""
    rows = fires(t, name)
    cov = coverage(rows, c)
    assert not cov.doubled, f"{name}: slots with two fire rows (slot, row, row): {cov.doubled[:5]}"
    assert not cov.bad_spans, f"{name}: missed spans whose count is not their slots: {cov.bad_spans[:3]}"
    slots = sorted(cov.by_slot)
    assert slots and slots[0] == first, f"{name}: the first row is not the first slot {first}: {slots[:1]}"
    gaps = sorted(set(every_slot(c, first, slots[-1])) - set(slots))
    assert not gaps, f"{name}: slots without a fire row: {gaps[:10]}"
    assert cursor(t, name) == c.after(slots[-1]), f"{name}: the cursor is not right after the last slot handled"
    return rows, cov.by_slot


def check_tasks(t: service.Tenure, name: str, rows: list[Any]) -> list[Any]:
    """Every fired row has exactly one task of this schedule, and every task of it has its fire row."""
    fired = [r for r in rows if r.outcome == "fired"]
    assert all(r.task_id is not None and r.run_id is None for r in fired), [r for r in fired if r.task_id is None]
    unfired = [r for r in rows if r.outcome != "fired" and (r.task_id is not None or r.run_id is not None)]
    assert not unfired, f"{name}: rows that are not 'fired' but point at work: {unfired[:3]}"
    by_fire = Counter(r.task_id for r in fired)
    assert max(by_fire.values(), default=1) == 1, f"{name}: a task behind two fire rows"
    tasks = labelled_tasks(t, name)
    assert sorted(tasks) == sorted(by_fire), (f"{name}: {len(tasks)} tasks, {len(fired)} fired rows; without a fire "
                                              f"row: {sorted(set(tasks) - set(by_fire))[:5]}")
    return fired


# -- 1. exactly once per slot --------------------------------------------------------------


CHAOS_S = 20.0
KILL_EVERY_S = 2.0


@needs_faketime
@pytest.mark.xdist_group("schedule-chaos")
def test_every_slot_fires_exactly_once_while_workers_are_killed_frozen_and_their_clocks_stepped(
        db_url: str, tmp_path: Path) -> None:
    """20 s of a schedule of every second (the guarantee needs many slots, each a real second) under three
    workers: one killed -9 and restarted every 2 s (at random, seeded), one frozen 4 s (past the 2 s lease
    TTL) and thawed, one whose wall clock steps +4 s, then -4 s, then back (libfaketime; on SQLite each
    process's clock is the database's, so it fires early, then nothing: never twice)."""
    backend = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    t = service.open(db_url, migrate=False)
    name = "every-second"
    first = t.add_schedule(name, EVERY_SECOND, task={"kind": "echo", "args": {}, "label": name},
                           catch_up="all", overlap="allow").next_slot_at
    assert first is not None
    clock = tmp_path / "clock-host-2"
    clock.write_text("+0s\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(db_url, logs, WORKER_ENV, "--concurrency", "4")
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    events: list[tuple[float, str, Callable[[], None]]] = []
    for i in range(int(CHAOS_S / KILL_EVERY_S)):
        events.append((1.0 + i * KILL_EVERY_S, "kill", lambda: None))
    events += [(4.5, "freeze host-1", lambda: freeze_at_a_slot(fleet, "host-1")),
               (4.5 + LEASE_TTL_S + 2.0, "thaw host-1", lambda: fleet.thaw("host-1")),
               (6.0, "host-2 +4s", lambda: clock.write_text("+4s\n")),
               (11.0, "host-2 -4s", lambda: clock.write_text("-4s\n")),
               (15.0, "host-2 +0s", lambda: clock.write_text("+0s\n"))]
    events.sort(key=lambda e: e[0])
    killed: list[str] = []
    ahead = [0.0]  # the furthest the cursor ran ahead of the (real) clock

    def watch() -> None:
        ahead[0] = max(ahead[0], cursor_ahead_s(t, name))

    try:
        fleet.start("host-0")
        fleet.start("host-1")
        fleet.start("host-2", clock_file=clock)
        wait_for(lambda: live_hosts(t) == 3, 30, "three workers registered")
        wait_for(lambda: fires(t, name), 10, "the first fire")
        began = time.monotonic()
        for at, what, act in events:
            pace(began + at, fleet, watch)
            if what == "kill":
                victim = rng.choice(sorted(h for h in fleet.alive() if h not in fleet.frozen))
                fleet.kill9(victim)
                fleet.start(victim)
                killed.append(victim)
            else:
                act()
        pace(began + CHAOS_S, fleet, watch)
        codes = fleet.stop()
        assert set(codes.values()) == {0}, f"workers did not stop cleanly: {codes}\n{fleet.tail()}"
        c = Cron(EVERY_SECOND)
        rows, by_slot = check_slots(t, name, c, first)
        fired = check_tasks(t, name, rows)
        # Only this schedule makes work here: no run at all, and no task beside the fired rows.
        assert count(t, "SELECT count(*) FROM tasks") == len(fired)
        assert count(t, "SELECT count(*) FROM runs") == 0
        assert {r.outcome for r in rows} <= {"fired", "missed"}, Counter(r.outcome for r in rows)
        # What each worker logged having done: no slot claimed by two (a worker that woke from SIGSTOP or
        # whose clock stepped back had its transaction refused, and logged nothing).
        logged = fleet.logged(name)
        twice = [s for s, n in Counter(s for _, _, s in logged).items() if n > 1]
        assert not twice, f"slots two workers logged handling: {twice[:5]}"
        assert all(s in by_slot and by_slot[s].outcome == outcome for _, outcome, s in logged)
        per_host = Counter(h for h, _, _ in logged)
        # The stepped clock was real: on SQLite (each process's clock is the database's) host-2 fired slots
        # up to 4 s early while ahead, so the cursor ran ahead of the real clock by more than the 1 s a slot
        # handled on time leaves; on PostgreSQL the server's clock rules: it never did.
        if backend == "sqlite":
            assert 2.0 <= ahead[0] <= 5.05, f"the cursor ran {ahead[0]:.2f} s ahead of the clock"
        else:
            assert ahead[0] <= 1.0, f"a slot fired {ahead[0] - 1:.2f} s before its time by the database's clock"
        assert all(dt(r.fired_at) >= dt(r.slot_at) for r in fired), "fired before its slot by the firer's clock"
    finally:
        fleet.stop()
        t.close()
    assert len(by_slot) >= CHAOS_S - 2, f"only {len(by_slot)} slots handled in {CHAOS_S} s"
    assert len(per_host) >= 2, f"one worker fired everything: {per_host}"
    caught_up = sum(r.catch_up for r in fired)
    report(f"schedules ({backend}): {len(by_slot)} slots of every second, {len(rows)} fire rows ({len(fired)} fired, "
           f"{caught_up} catch-ups, {sum(r.outcome == 'missed' for r in rows)} missed spans), 0 doubled, 0 lost, "
           f"{len(fired)} tasks; {fleet.kills} kill -9 ({dict(Counter(killed))}, seed {seed}), one SIGSTOP of "
           f"{LEASE_TTL_S + 2:.0f} s, clock steps +4 s / -4 s (the cursor ran up to {ahead[0]:.1f} s ahead); "
           f"logged per host {dict(sorted(per_host.items()))}")


# -- 2. missed slots -----------------------------------------------------------------------


# A slot found more than GRACE_S late is missed. A worker just restarted on a loaded CI machine
# (recovering the killed workers' leases, its first claims) once handled a slot 0.5 s after the
# outage more than 0.5 s late: a second, genuine outage that "latest" rightly caught up too.
GRACE_S = 2.0
DOWN_S = 7.0
CATCH_UP = {
    "none": {"catch_up": "none"},
    "latest": {"catch_up": "latest"},
    "all": {"catch_up": "all", "catch_up_max": 1000},
    "all-2": {"catch_up": "all", "catch_up_max": 2},
}


def test_slots_missed_while_every_worker_was_down_follow_the_catch_up_policy(db_url: str, tmp_path: Path) -> None:
    """About 14 s: two workers fire four schedules of every second, are all killed -9 for 7 s (a real outage
    of several slots past the 2 s grace), and one is started again."""
    backend = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    t = service.open(db_url, migrate=False)
    fleet = Fleet(db_url, tmp_path, WORKER_ENV)
    c = Cron(EVERY_SECOND)
    firsts = {}
    try:
        fleet.start("host-0")
        fleet.start("host-1")
        wait_for(lambda: live_hosts(t) == 2, 30, "two workers registered")  # their slots are on time from the first
        for name, policy in CATCH_UP.items():
            # overlap allow: a task left queued by the kill must not make the catch-ups skip (another policy).
            view = t.add_schedule(name, EVERY_SECOND, task={"kind": "echo", "args": {}, "label": name},
                                  overlap="allow", grace_s=GRACE_S, **policy)
            firsts[name] = view.next_slot_at
        wait_for(lambda: all(sum(r.outcome == "fired" for r in fires(t, n)) >= 2 for n in CATCH_UP), 30,
                 "two fires of each schedule on time")
        fleet.kill9("host-0")
        fleet.kill9("host-1")
        down = db_time(t)
        wait_for(lambda: db_time(t) >= down + timedelta(seconds=DOWN_S), DOWN_S + 5, "the outage to last")
        up = db_time(t)
        fleet.start("host-0")
        wait_for(lambda: all((cursor(t, n) or down) > up + 2 * SECOND for n in CATCH_UP), 30,
                 "the restarted worker to handle the outage and fire on time again")
        assert fleet.stop() == {"host-0": 0, "host-1": -9}, fleet.tail()
        # Certainly missed: after the kill nothing could fire them, and the restarted worker came
        # later than their grace.
        certain = [s for s in every_slot(c, down, up) if down < s < up - timedelta(seconds=GRACE_S)]
        assert len(certain) >= 3, certain
        seen: dict[str, str] = {}
        for name in CATCH_UP:
            assert firsts[name] is not None
            rows, by_slot = check_slots(t, name, c, firsts[name])
            fired = check_tasks(t, name, rows)
            # What the restarted worker wrote for the outage: missed rows and catch-ups.
            after = [r for r in rows if dt(r.fired_at) >= up]
            backlog = [r for r in after if r.outcome == "missed" or r.catch_up]
            span = sorted(s for s, r in by_slot.items() if r in backlog)
            on_time = [r for r in after if r not in backlog]
            assert all(r.outcome == "fired" and (dt(r.fired_at) - dt(r.slot_at)).total_seconds() <= GRACE_S
                       for r in on_time), f"{name}: a slot after the outage was not fired on time"
            assert set(certain) <= set(span), f"{name}: certainly missed slots not handled as missed: " \
                                              f"{sorted(set(certain) - set(span))}"
            assert span == every_slot(c, span[0], span[-1]), f"{name}: the outage's slots are not one stretch"
            created = [r for r in backlog if r.outcome == "fired"]
            assert all(r.catch_up and r.reason and "caught up" in r.reason for r in created)
            assert all(r.outcome in ("missed", "fired") for r in backlog)
            created_slots = [dt(r.slot_at) for r in created]
            if name == "none":
                assert not created, f"none: work created for missed slots {created_slots}"
                assert not [r for r in fired if dt(r.slot_at) in certain]
            elif name == "latest":
                assert created_slots == [span[-1]], f"latest: {created_slots}, the outage ended at {span[-1]}"
            elif name == "all":
                assert created_slots == span, f"all: {len(created_slots)} caught up of {len(span)} missed"
                assert not [r for r in backlog if r.outcome == "missed"]
            else:
                assert created_slots == span[-2:], f"all-2: {created_slots}, the outage ended {span[-2:]}"
            missed = sorted(s for s, r in by_slot.items() if r in backlog and r.outcome == "missed")
            assert missed == [s for s in span if s not in created_slots]
            seen[name] = (f"{len(span)} missed: {len(created)} created, {len(missed)} recorded missed in "
                          f"{sum(r.outcome == 'missed' for r in rows)} row(s)")
    finally:
        fleet.stop()
        t.close()
    report(f"schedules ({backend}): all workers down {DOWN_S:.0f} s ({len(certain)} slots certainly missed, grace "
           f"{GRACE_S} s): " + "; ".join(f"{k}: {v}" for k, v in seen.items()))


# -- 3. overlap ----------------------------------------------------------------------------


RUN_S = 2.5  # each run: one sleep task this long, over two slots of every second
# PostgreSQL stamps a statement's start: a run's end is stamped a little before it commits, so a firer that
# read its clock a moment earlier may still see the end; times of different transactions agree to this much.
STAMPS_S = 0.05
SLOTS_S = 12.0  # at least two releases of a queued fire need two 2.5 s runs ended, and time to start each


def test_work_longer_than_the_interval_follows_the_overlap_policy(db_url: str, tmp_path: Path) -> None:
    """About 18 s: 12 s of slots of every second, each starting a 2.5 s run (the overlap is the point), then
    the runs end."""
    backend = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    t = service.open(db_url, migrate=False)
    run = {"kind": "sleep", "count": 1, "params": {"min_seconds": RUN_S, "max_seconds": RUN_S, "failure_rate": 0,
                                                   "transient_rate": 0, "seed": 1}}
    names = ("skip", "allow", "queue")
    firsts = {n: t.add_schedule(n, EVERY_SECOND, run=run, overlap=n).next_slot_at for n in names}
    fleet = Fleet(db_url, tmp_path, WORKER_ENV, "--concurrency", "8")
    c = Cron(EVERY_SECOND)
    try:
        fleet.start("host-0")
        fleet.start("host-1")
        first = min(s for s in firsts.values() if s is not None)
        wait_for(lambda: db_time(t) >= first + timedelta(seconds=SLOTS_S), SLOTS_S + 20, f"{SLOTS_S} s of slots")
        for n in names:
            t.pause_schedule(n)
        wait_for(lambda: count(t, "SELECT count(*) FROM runs WHERE status = 'running'") == 0, RUN_S + 20,
                 "the runs to end")
        assert fleet.exited() == {}, fleet.tail()
        fleet.stop()
        rows: dict[str, list[Any]] = {}
        for n in names:
            assert firsts[n] is not None
            rows[n], _ = check_slots(t, n, c, firsts[n])
            fired = [r for r in rows[n] if r.outcome == "fired"]
            assert all(r.run_id is not None and r.task_id is None and r.run_status == "completed" for r in fired)
            assert len({r.run_id for r in fired}) == len(fired)
            made = count(t, "SELECT count(*) FROM runs WHERE name LIKE :p", p=f"{n} · %")
            assert made == len(fired), f"{n}: {made} runs for {len(fired)} fired rows"
            assert not [r for r in rows[n] if r.outcome == "missed" or r.catch_up]
        assert count(t, "SELECT count(*) FROM runs") == sum(
            sum(r.outcome == "fired" for r in rs) for rs in rows.values())
        figures = {n: dict(Counter(r.outcome for r in rows[n])) for n in names}
        # skip: a slot whose previous run had not ended is skipped, naming that run; runs never overlap.
        skip = rows["skip"]
        last: Any = None
        for r in skip:
            if r.outcome == "fired":
                assert last is None or dt(last.run_finished) <= dt(r.fired_at) + timedelta(seconds=STAMPS_S), \
                    "skip: started beside a running run"
                last = r
            else:
                assert r.outcome == "skipped", r
                assert last is not None and f"(run {last.run_id}) had not ended" in r.reason, (r.reason, last)
                assert dt(last.run_finished) > dt(r.fired_at) - timedelta(seconds=STAMPS_S), \
                    "skip: skipped though the run had ended"
        assert Counter(r.outcome for r in skip)["skipped"] >= 2
        # allow: every slot starts its run, beside the ones still running.
        allow = rows["allow"]
        assert {r.outcome for r in allow} == {"fired"}
        spans = [(dt(r.run_created), dt(r.run_finished)) for r in allow]
        beside = max(sum(a <= s < b for a, b in spans) for s, _ in spans)
        assert beside >= 2, f"allow: at most {beside} run at a time"
        # queue: one waits while the previous runs, and starts when it ends; slots meanwhile are skipped.
        queue = rows["queue"]
        runs = sorted((r for r in queue if r.outcome == "fired"), key=lambda r: dt(r.run_created))
        for before, after in pairwise(runs):
            assert dt(after.run_created) >= dt(before.run_finished) - timedelta(seconds=STAMPS_S), \
                "queue: a run started before the previous ended"
        released = [r for r in runs if r.reason and r.reason.startswith("queued:")]
        # Should this fail: each run's span and its attempts say whether a run was slow (a lost attempt,
        # a late start) or a release late.
        attempts = {r.run_id: count(t, "SELECT count(*) FROM task_attempts a JOIN tasks k ON k.id = a.task_id "
                                       "WHERE k.run_id = :r", r=r.run_id) for r in runs}
        assert len(released) >= 2, ([r.reason for r in queue], [(r.run_id, r.run_created, r.run_finished,
                                                                  attempts[r.run_id]) for r in runs])
        for r in released:
            before = runs[runs.index(r) - 1]
            assert f"(run {before.run_id}) had not ended" in r.reason, (r.reason, before.run_id)
            assert "started at" in r.reason
            waited = (dt(r.run_created) - dt(before.run_finished)).total_seconds()
            assert -STAMPS_S <= waited < 2.0, f"queue: started {waited:.2f} s after the previous ended"
        pending = [r for r in queue if r.outcome == "queued"]
        assert len(pending) <= 1, pending
        waiting = [*released, *pending]
        for r in (r for r in queue if r.outcome == "skipped"):
            assert "already waits behind it" in r.reason, r.reason
            assert any(dt(w.slot_at) < dt(r.slot_at) and (w.outcome == "queued" or dt(w.fired_at) >= dt(r.fired_at))
                       for w in waiting), f"queue: slot {r.slot_at} skipped while nothing waited"
        assert Counter(r.outcome for r in queue)["skipped"] >= 2
    finally:
        fleet.stop()
        t.close()
    report(f"schedules ({backend}): {RUN_S} s runs every second: {figures}; allow ran up to {beside} at once; "
           f"queue ran {len(runs)} one after another, {len(released)} of them after waiting")


# -- 4. daylight saving, through the injected clock ---------------------------------------------


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return to_utc(datetime(year, month, day, hour, minute, tzinfo=BERLIN))


@pytest.mark.xdist_group("schedule-clock")
@pytest.mark.parametrize("step_min", [5, 97])
def test_berlin_dst_days_through_the_injected_clock(db_url: str, step_min: int) -> None:
    """02:30 daily fires once on both change days (at 03:00 CEST when 02:30 does not exist); hourly fires
    23 times on the short day and 25 on the long one. The clock is stepped every 5 minutes, and coarsely
    every 97 (a grace of more than the step: every slot is found on time)."""
    t = service.open(db_url, migrate=False)
    step = timedelta(minutes=step_min)
    grace = step.total_seconds() + 60
    for name, expression in (("daily", "30 2 * * *"), ("hourly", "0 * * * *")):
        # No worker runs the tasks here: overlap allow, or each slot would be skipped behind the last one's task.
        t.add_schedule(name, expression, timezone="Europe/Berlin", task={"kind": "echo", "args": {}, "label": name},
                       grace_s=grace, overlap="allow")
    daily, hourly = Cron("30 2 * * *", "Europe/Berlin"), Cron("0 * * * *", "Europe/Berlin")
    lags: list[float] = []
    try:
        for day in (datetime(2026, 3, 29), datetime(2026, 10, 25)):
            # The database's clock says December: the cursors are moved to the window with SQL
            # (create_schedule starts them after the database's now), then the injected clock walks it.
            # The local day before to the local day after: the last step is clamped to 23:59 of the day after.
            start, end = local(day.year, day.month, day.day - 1), local(day.year, day.month, day.day + 1, 23, 59)
            move_cursor(t, "daily", daily.at_or_after(start))
            move_cursor(t, "hourly", hourly.at_or_after(start))
            now = start
            while True:
                for f in t.fire_due_schedules(now=now):
                    assert f.outcome == "fired" and not f.catch_up and f.lag_s is not None, f
                    assert 0 <= f.lag_s <= step.total_seconds(), f"fired early or later than the step: {f}"
                    lags.append(f.lag_s)
                if now == end:
                    break
                now = min(now + step, end)
        daily_rows = fires(t, "daily")
        hourly_rows = fires(t, "hourly")
        check_tasks(t, "daily", daily_rows)
        check_tasks(t, "hourly", hourly_rows)
    finally:
        t.close()
    assert [dt(r.slot_at) for r in daily_rows] == [
        datetime(2026, 3, 28, 1, 30), datetime(2026, 3, 29, 1, 0), datetime(2026, 3, 30, 0, 30),  # 03:00 CEST
        datetime(2026, 10, 24, 0, 30), datetime(2026, 10, 25, 0, 30), datetime(2026, 10, 26, 1, 30),  # once
    ]
    per_day = Counter(dt(r.slot_at).replace(tzinfo=ZoneInfo("UTC")).astimezone(BERLIN).date().isoformat()
                      for r in hourly_rows)
    assert per_day == {"2026-03-28": 24, "2026-03-29": 23, "2026-03-30": 24,
                       "2026-10-24": 24, "2026-10-25": 25, "2026-10-26": 24}, per_day
    slots = [dt(r.slot_at) for r in hourly_rows]
    for window in (slots[:71], slots[71:]):
        assert all(b - a == timedelta(hours=1) for a, b in pairwise(window)), \
            "hourly slots are not one real hour apart across the change"
    assert all(r.outcome == "fired" for r in [*daily_rows, *hourly_rows])
    backend = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    report(f"schedules ({backend}): Europe/Berlin, clock stepped every {step_min} min: 02:30 daily fired once on "
           f"2026-03-29 (01:00 UTC) and 2026-10-25; hourly 23 and 25 times; the latest fire {max(lags):.0f} s late")
