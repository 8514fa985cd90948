"""A lease a supervisor holds but runs nothing of is handed back at its next heartbeat, idle or not.

Such an *orphan* comes from a claim whose commit went through but whose answer never arrived (a
connection cut after COMMIT): the task is ``running`` under a live supervisor that never started
it, and the supervisor's heartbeat would keep the lease alive forever. Every heartbeat compares
what the supervisor holds with what it runs, both ways.
"""

from __future__ import annotations

from sqlalchemy import insert, select

import service
from service.storage.db import db_now
from service.storage.models import Task, TaskAttempt
from tests import kinds_for_tests  # noqa: F401  (the kinds these tests run)
from tests.conftest import wait_for


def _claimed_behind_its_back(t: service.Tenure, supervisor_id: int) -> int:
    """A task leased to the supervisor in one committed transaction, as a claim does, whose answer it never got."""
    with t.engine.begin() as conn:
        task_id = int(conn.execute(
            insert(Task).values(run_id=None, position=0, kind="echo", args={"x": 1}, status="running",
                                attempts=1, max_attempts=1, supervisor_id=supervisor_id, created_at=db_now(),
                                started_at=db_now()).returning(Task.id)).scalar_one())
        conn.execute(insert(TaskAttempt).values(task_id=task_id, attempt=1, supervisor_id=supervisor_id,
                                                started_at=db_now(), outcome="running", charged=False))
    return task_id


def test_an_idle_supervisor_hands_back_a_lease_it_holds_but_never_started(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    sup = supervise(heartbeat_s=0.1, idle_poll_s=60.0)  # idle: no other work will ever arrive
    assert sup.supervisor_id is not None
    task_id = _claimed_behind_its_back(t, sup.supervisor_id)
    done = t.wait_task(task_id, 5)
    assert (done.status, done.result, done.charged, done.lost) == ("succeeded", {"echo": {"x": 1}}, 0, 0)
    first, second = t.attempts(task_id)
    assert (first.outcome, first.charged) == ("lost", False)
    assert "held its lease without running it" in (first.error or "")
    assert second.outcome == "succeeded"


def test_a_busy_supervisor_hands_back_an_orphan_and_keeps_what_it_runs(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise) -> None:
    running = t.submit_task("t_long", {"steps": 60, "step_s": 0.05}, max_attempts=1)
    sup = supervise(heartbeat_s=0.1)
    assert sup.supervisor_id is not None
    wait_for(lambda: t.task(running).status == "running", 5, "its own task to run")
    orphan = _claimed_behind_its_back(t, sup.supervisor_id)
    assert t.wait_task(orphan, 5).status == "succeeded"
    done = t.wait_task(running, 10)
    assert (done.status, done.attempts, done.lost) == ("succeeded", 1, 0), "a tracked lease was handed back"
    with t.engine.connect() as conn:
        assert conn.execute(select(TaskAttempt.outcome).where(TaskAttempt.task_id == running)).scalars().all() == [
            "succeeded"]
