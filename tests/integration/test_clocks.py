"""Wall-clock jumps neither expire live leases nor keep dead ones alive.

Leases are judged by watching heartbeats change, on the reaper's monotonic clock
(:mod:`service.reaper`); lease_expires_at is for people and SQL, never compared across clocks.
"""

from __future__ import annotations

from service.clock import FakeClock
from service.leases import Leases
from service.reaper import HeartbeatWatch

TTL = 15.0


def test_wall_clock_jumps_do_not_fool_the_reaper(open_tenure, fake_clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    t = open_tenure(clock=fake_clock)
    leases = Leases(t.engine)
    reaper_id = leases.register_worker("host-r", 1, fake_clock.now())
    alive = leases.register_worker("host-a", 2, fake_clock.now())
    dead = leases.register_worker("host-d", 3, fake_clock.now())
    t.submit_run(4, "echo")
    leases.claim(alive, 2, fake_clock.now(), TTL)
    leases.claim(dead, 2, fake_clock.now(), TTL)
    watch = HeartbeatWatch(TTL, me=reaper_id)
    assert watch.dead(leases.lease_holders(), fake_clock.monotonic()) == []

    # The wall clock leaps an hour ahead: every lease_expires_at is now "past".
    fake_clock.jump_wall(3600)
    for _ in range(5):
        fake_clock.advance(2)
        leases.heartbeat(alive, fake_clock.now(), TTL)
        assert watch.dead(leases.lease_holders(), fake_clock.monotonic()) == []
    # ... and two hours back: the dead worker's lease now looks valid for two more hours.
    fake_clock.jump_wall(-7200)
    fake_clock.advance(6)  # 16 s of real (monotonic) time since the dead worker's last beat
    leases.heartbeat(alive, fake_clock.now(), TTL)
    assert watch.dead(leases.lease_holders(), fake_clock.monotonic()) == [dead]
    assert len(leases.reclaim_worker(dead, fake_clock.now(), "no heartbeat")) == 2
    assert set(leases.lease_holders()) == {alive}


def test_a_new_reaper_gives_every_holder_a_full_ttl(fake_clock: FakeClock) -> None:
    watch = HeartbeatWatch(TTL, me=1)
    beat = fake_clock.now()
    assert watch.dead({2: beat}, 100.0) == []
    assert watch.dead({2: beat}, 114.9) == []
    assert watch.dead({2: beat}, 115.0) == [2]
    assert watch.dead({1: beat}, 999.0) == []  # never itself
