"""A reclaim is not fenced on the heartbeat it judged: a supervisor that beats between the watcher's
read of the holders (``lease_holders``) and its reclaim (``reclaim_supervisor``) loses every lease
anyway (lost, counted), although its heartbeat had just changed.

The window is the time between the two transactions (longer on SQLite when the reclaim waits for the
write lock, which the holder's own heartbeat may take first). The interleaving is forced here by
running the holder's heartbeat inside that window.
"""

from __future__ import annotations

import service
from service.clock import FakeClock
from service.config import Settings
from service.storage.leases import Leases
from service.supervisor.upkeep import Upkeep


def test_a_holder_that_beat_after_the_watcher_read_keeps_its_leases(t: service.Tenure) -> None:
    clock = FakeClock()
    leases = Leases(t.engine)
    watcher = Upkeep(leases, Settings(heartbeat_s=5.0, lease_ttl_s=15.0), clock)
    watcher_id = watcher.register("host-w")
    holder = leases.register("host-s", 4242, None, None, heartbeat_s=5.0, lease_ttl_s=15.0)
    task_id = t.submit_task("echo", {"x": 1})
    leases.claim(holder, 1)
    watcher.reclaim_silent(watcher_id)
    for _ in range(14):  # a look a second, its heartbeat unchanged: 14 s of silence
        clock.advance(1.0)
        watcher.reclaim_silent(watcher_id)
    assert t.task(task_id).status == "running"
    clock.advance(1.0)  # the 15th second: the watcher reads the holders, the heartbeat still unchanged ...

    real_reclaim = leases.reclaim_supervisor

    def reclaim_after_a_beat(dead: int, reason: str) -> list[tuple[int, int]]:
        assert leases.heartbeat(holder).alive  # ... but it beats now, before the reclaim's transaction
        return real_reclaim(dead, reason)

    leases.reclaim_supervisor = reclaim_after_a_beat  # type: ignore[method-assign]
    watcher.reclaim_silent(watcher_id)
    task = t.task(task_id)
    print("after the reclaim:", task.status, [a.outcome for a in t.attempts(task_id)])
    assert task.status == "running", "a supervisor whose heartbeat had just changed lost its lease"
