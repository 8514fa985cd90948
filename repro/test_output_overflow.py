"""PostgreSQL: a task that writes more than 2**31 - 1 characters of output.

``tasks.output_chars`` and ``task_attempts.logs_cut`` are 32-bit INTEGER columns; the supervisor
writes the attempt's character count into them at every heartbeat and at its end. Past
2,147,483,647 PostgreSQL refuses the value ("integer out of range"), so:

* every heartbeat of the supervisor is refused as a whole (its row's heartbeat_at stops
  changing, no progress of any task is stored), and a watching supervisor reclaims all of its
  healthy leases (lost, counted);
* the loud task's own success is refused, then refused again without its values (logs_cut is
  kept), and written bare: failed for good, though it succeeded.
"""

from __future__ import annotations

import pytest

import service
from repro import review_kinds  # noqa: F401  (the kinds this test runs)
from tests import kinds_for_tests  # noqa: F401
from tests.conftest import wait_for

CHARS = 2_200_000_000


@pytest.fixture
def db_url(pg_url: str) -> str:  # PostgreSQL only: SQLite's integers are 64-bit
    return pg_url


def test_a_task_that_prints_over_2_gib_keeps_heartbeats_and_succeeds(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    loud = t.submit_task("r_loud", {"chars": CHARS, "after_s": 4.0}, max_attempts=1, memory_limit_mb=4096)
    neighbours = [t.submit_task("t_long", {"steps": 100, "step_s": 0.1}, max_attempts=1) for _ in range(3)]
    supervise(heartbeat_s=0.1, lease_ttl_s=1.0, memory_limit_mb=4096)
    wait_for(lambda: all(t.task(n).status == "running" for n in neighbours), 10, "the neighbours to run")
    supervise(heartbeat_s=0.1, lease_ttl_s=1.0, reclaim_every_s=0.05, concurrency=1)  # watching
    done = t.wait_task(loud, 60)
    report = [(n, t.task(n).status, t.task(n).lost, [a.outcome for a in t.attempts(n)]) for n in neighbours]
    print("loud task:", done.status, repr(done.error))
    print("neighbours (id, status, lost, attempts):", report)
    for n in neighbours:
        finished = t.wait_task(n, 30)
        assert (finished.status, finished.attempts, finished.lost) == ("succeeded", 1, 0), t.attempts(n)
    assert done.status == "succeeded", done.error


def test_alone_a_task_that_prints_over_2_gib_succeeds(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    """No watcher: the end itself is refused (logs_cut), refused again without its values (logs_cut is
    kept by without_values), and written bare: the success becomes a permanent failure."""
    loud = t.submit_task("r_loud", {"chars": CHARS, "after_s": 0.5}, max_attempts=1, memory_limit_mb=4096)
    supervise(heartbeat_s=0.1, lease_ttl_s=1.0, memory_limit_mb=4096)
    done = t.wait_task(loud, 60)
    print("alone:", done.status, repr(done.error))
    assert done.status == "succeeded", done.error
