"""Wall-clock jumps neither expire live leases nor keep dead ones alive.

Leases are judged by watching heartbeats change, on the watcher's monotonic clock
(:mod:`service.supervisor.liveness`); no wall clock of a process is ever compared with another's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

from service.clock import FakeClock
from service.storage.leases import Leases
from service.supervisor.liveness import HeartbeatWatch, process_alive, process_identity

TTL = 15.0


def test_wall_clock_jumps_do_not_fool_the_watch(open_tenure, fake_clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    t = open_tenure(clock=fake_clock)
    leases = Leases(t.engine)
    watcher = leases.register("host-r", 1, None, None)
    alive = leases.register("host-a", 2, None, None)
    dead = leases.register("host-d", 3, None, None)
    t.submit_run(4, "echo")
    leases.claim(alive, 2)
    leases.claim(dead, 2)
    watch = HeartbeatWatch(TTL, me=watcher)
    assert watch.dead(leases.lease_holders(), fake_clock.monotonic()) == []
    # The wall clock leaps an hour ahead, then two hours back: the watch does not read it.
    fake_clock.jump_wall(3600)
    for _ in range(5):
        fake_clock.advance(2)
        leases.heartbeat(alive)
        assert watch.dead(leases.lease_holders(), fake_clock.monotonic()) == []
    fake_clock.jump_wall(-7200)
    fake_clock.advance(6)  # 16 s of monotonic time since the dead supervisor's last beat
    leases.heartbeat(alive)
    assert watch.dead(leases.lease_holders(), fake_clock.monotonic()) == [dead]
    assert len(leases.reclaim_supervisor(dead, "no heartbeat")) == 2
    assert set(leases.lease_holders()) == {alive}


def test_a_new_watch_gives_every_holder_a_full_ttl(fake_clock: FakeClock) -> None:
    watch = HeartbeatWatch(TTL, me=1)
    beat = fake_clock.now()
    for now in (100.0, 105.0, 110.0, 114.9):
        assert watch.dead({2: (beat, None)}, now) == []
    assert watch.dead({2: (beat, None)}, 115.0) == [2]



def test_a_watch_never_judges_its_own_supervisor(fake_clock: FakeClock) -> None:
    """Its own heartbeat silent for ten TTLs (a watcher looking while its heartbeat thread stalls):
    still never dead in its own eyes (its leases live exactly as long as its heartbeat thread)."""
    watch = HeartbeatWatch(TTL, me=1)
    beat = fake_clock.now()
    for now in range(100, 251):  # a look every second, as a supervisor's
        assert watch.dead({1: (beat, None), 2: (beat, None)}, float(now)) == ([] if now < 115 else [2])


def test_a_heartbeat_that_steps_back_is_a_change_not_silence(fake_clock: FakeClock) -> None:
    """On SQLite a holder's heartbeat_at is its own clock: stepped back an hour, the value still changed."""
    watch = HeartbeatWatch(TTL, me=1)
    beat, stepped = fake_clock.now(), fake_clock.now() - timedelta(hours=1)
    for now in range(100, 140):  # a look every second; the value steps back an hour at 110
        value = beat if now < 110 else stepped
        assert watch.dead({2: (value, None)}, float(now)) == ([] if now < 125 else [2]), now


def test_each_holder_is_judged_by_the_ttl_it_promised(fake_clock: FakeClock) -> None:
    """A watcher with a 1 s TTL of its own and two holders: one promised 6 s, one kept no promise."""
    watch = HeartbeatWatch(1.0, me=1, blind_s=5.0)
    beat = fake_clock.now()
    holders = {2: (beat, 6.0), 3: (beat, None)}
    for tenth in range(1000, 1070):  # a look every 0.1 s
        now = tenth / 10
        expected = [] if now < 101.0 else [3] if now < 106.0 else [2, 3]  # 3: the watcher's TTL; 2: its own
        assert watch.dead(holders, now) == expected, now


def test_same_host_liveness_compares_start_ticks_not_wall_times() -> None:
    boot, ticks = process_identity(os.getpid())
    assert boot and ticks is not None
    assert process_alive(os.getpid(), boot, ticks)
    assert not process_alive(os.getpid(), boot, ticks + 1), "a reused pid (another start) counts as dead"
    assert not process_alive(os.getpid(), "another-boot", ticks), "a process from before a reboot is dead"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    assert not process_alive(int(gone.stdout), boot, ticks)


def test_a_process_that_exited_but_is_not_yet_reaped_is_dead() -> None:
    """A zombie keeps its pid and start ticks until its parent waits for it: a supervisor killed with
    kill -9 under a slow-reaping PID 1 (a container without an init, this sandbox) was taken for alive
    for 5 s, and a restarted `tenure serve` took its leases back only at its next scan."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    boot, ticks = process_identity(child.pid)
    assert ticks is not None
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # it has exited; WNOWAIT leaves it a zombie
    try:
        assert not process_alive(child.pid, boot, ticks)
    finally:
        child.wait()


def test_a_watcher_that_saw_nothing_for_a_while_blames_no_one() -> None:
    """After a database outage every heartbeat looks stale: the watcher starts its timers again."""
    from datetime import datetime

    watch = HeartbeatWatch(TTL, me=1)
    beat = datetime(2026, 1, 1)
    assert watch.dead({2: (beat, None)}, 100.0) == []
    assert watch.dead({2: (beat, None)}, 107.0) == []  # looking every few seconds, as a supervisor does
    # The database is down from 107 s to 140 s: no look at all. The first look after it:
    assert watch.dead({2: (beat, None)}, 140.0) == [], "a holder blamed for the watcher's own blindness"
    for now in (145.0, 150.0):
        assert watch.dead({2: (beat, None)}, now) == []
    assert watch.dead({2: (beat, None)}, 155.0) == [2]  # a full TTL of looks without a change


def test_a_supervisor_watch_still_judges_with_a_short_ttl(open_tenure) -> None:  # type: ignore[no-untyped-def]
    """With a 2 s TTL and a look every second, being blind must not be mistaken for every look."""
    from service.config import Settings
    from service.supervisor.upkeep import Upkeep

    t = open_tenure()
    leases = Leases(t.engine)
    me, other = leases.register("w", 1, None, None), leases.register("d", 2, None, None)
    t.submit_run(1, "echo")
    leases.claim(other, 1)
    clock = FakeClock()
    upkeep = Upkeep(leases, Settings(lease_ttl_s=2.0, heartbeat_s=0.3, reclaim_every_s=1.0), clock)
    upkeep.watch_as(me)
    for _ in range(4):  # the dead one never beats again; the watcher looks once a second
        upkeep.reclaim_silent(me)
        clock.advance(1.05)
    assert leases.lease_holders() == {}, "a silent supervisor kept its lease"


def test_each_statement_gets_its_own_offset_from_the_database_clock(open_tenure) -> None:  # type: ignore[no-untyped-def]
    # SQLAlchemy caches compiled statements: an offset baked in at compile time would give every
    # later retry the first one's backoff, and every prune the first one's cutoff.
    from datetime import timedelta

    from sqlalchemy import select

    from service.storage.db import db_now

    t = open_tenure()
    with t.engine.connect() as conn:
        now, day_ago, hour_on = (conn.execute(select(db_now(), db_now(-86_400), db_now(3600))).one())
        for offset in (60.0, -3600.0, 0.5):
            shifted = conn.execute(select(db_now(offset))).scalar_one()
            assert abs((shifted - now - timedelta(seconds=offset)).total_seconds()) < 5, (offset, shifted, now)
    assert abs((now - day_ago).total_seconds() - 86_400) < 1 and abs((hour_on - now).total_seconds() - 3600) < 1
