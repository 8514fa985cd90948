"""A watcher that reclaimed a silent supervisor keeps the silence it measured: the supervisor's
next claims are reclaimed at the watcher's very next look, before they are a TTL old.

After a stall or a partition, the judged-dead supervisor's loop lets go of its reclaimed attempts
and claims again (claims do not look at its row) before its heartbeat thread's next beat (up to
``heartbeat_s``, 5 s by default; the watcher looks every second). Its row is stopped, so nothing
changes its heartbeat_at until that beat; the watcher's HeartbeatWatch still remembers the value
and *when it first saw it*, so the new leases are judged by a silence that began before they
existed, and every task just claimed is lost again, counted (MAX_LOST = 20 counted losses fail a task).
"""

from __future__ import annotations

import service
from service.clock import FakeClock
from service.config import Settings
from service.storage.leases import Leases
from service.supervisor.upkeep import Upkeep


def test_leases_claimed_after_a_reclaim_get_a_full_ttl(t: service.Tenure) -> None:
    clock = FakeClock()
    leases = Leases(t.engine)
    settings = Settings(heartbeat_s=5.0, lease_ttl_s=15.0)
    watcher = Upkeep(leases, settings, clock)
    watcher_id = watcher.register("host-w")
    stalled = leases.register("host-s", 4242, None, None, heartbeat_s=5.0, lease_ttl_s=15.0)
    task_id = t.submit_task("echo", {"x": 1})
    (_first,) = leases.claim(stalled, 1)

    watcher.reclaim_silent(watcher_id)  # first look: the holder is seen
    while t.task(task_id).status == "running":  # it stalls: a look a second sees its heartbeat unchanged, for 15 s
        clock.advance(1.0)
        watcher.reclaim_silent(watcher_id)
    assert t.task(task_id).status == "queued" and t.attempts(task_id)[0].outcome == "lost"  # reclaimed: right

    # It wakes up: its loop claims again (the task it just lost is first in line) ...
    (again,) = leases.claim(stalled, 1)
    assert again.attempt == 2
    clock.advance(1.0)  # ... and one second later the watcher looks again, before the holder's next beat.
    watcher.reclaim_silent(watcher_id)
    task = t.task(task_id)
    print("after the next look:", task.status, "lost:", task.lost, [a.outcome for a in t.attempts(task_id)])
    assert (task.status, task.attempts) == ("running", 2), "a lease 1 s old was reclaimed for a 15 s silence"
