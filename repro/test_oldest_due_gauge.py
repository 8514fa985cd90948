"""tenure_oldest_due_seconds reads the queued_at of the *first task by id* among those due at once,
not the oldest queued_at: a task handed back just now (released, lost) with a low id hides every
task that has waited longer behind it. The metric's help says "How long the task that has been due
the longest has waited for a claim"."""

from __future__ import annotations

from sqlalchemy import select, update

import service
from service.storage.gauges import Gauges
from service.storage.leases import Leases
from service.storage.models import Outcome, Task


def test_the_oldest_due_gauge_sees_a_task_that_waited_a_minute(t: service.Tenure) -> None:
    leases = Leases(t.engine)
    first, second = t.submit_task("echo", {"i": 1}), t.submit_task("echo", {"i": 2})
    _age(t, 60)
    holder = leases.register("h", 1, None, None)
    (lease,) = leases.claim(holder, 1)
    assert lease.task_id == first
    # Handed back at once (a graceful stop): due again, queued_at = now.
    assert leases.finish(lease, holder, outcome=Outcome.RELEASED)
    figures = Gauges(t.engine).figures(15.0)
    print("oldest_due_s:", figures.oldest_due_s, "(task", second, "has waited 60 s)")
    assert figures.oldest_due_s >= 59.0


def _age(t: service.Tenure, seconds: int) -> None:
    from datetime import timedelta

    with t.engine.begin() as conn:
        for task_id, queued_at in conn.execute(select(Task.id, Task.queued_at)).all():
            conn.execute(update(Task).where(Task.id == task_id)
                         .values(queued_at=queued_at - timedelta(seconds=seconds)))


def test_a_lost_task_queues_behind_those_never_started_as_the_readme_says(t: service.Tenure) -> None:
    """README, "Pictures of a run": "a dotted line ... runs on to where that task started again (often
    later: lost tasks queue behind those never started)". Due at once is claimed by task id, so a
    task handed back goes to the head of the line instead."""
    leases = Leases(t.engine)
    first, second = t.submit_task("echo", {"i": 1}), t.submit_task("echo", {"i": 2})
    holder = leases.register("h", 1, None, None)
    (lease,) = leases.claim(holder, 1)
    assert lease.task_id == first
    assert leases.finish(lease, holder, outcome=Outcome.LOST, error="its supervisor died", counted=True)
    (nxt,) = leases.claim(holder, 1)
    print("claimed next:", nxt.task_id, "(never started:", second, ")")
    assert nxt.task_id == second
