"""`kill -9` of a real `tenure worker` mid-run, then a restart: nothing lost, nothing doubled.

An acceptance test: it runs real processes and real sleep tasks of about a second, so it
takes a few seconds.
"""

from __future__ import annotations

import signal
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text

import service
from tests.acceptance.procs import start_worker, tenure
from tests.conftest import wait_for

pytestmark = pytest.mark.acceptance

# A lease TTL far longer than the test: recovery must come from noticing the dead pid.
WORKER_ENV = {"TENURE_HEARTBEAT_S": "0.1", "TENURE_LEASE_TTL_S": "60"}


def test_kill_9_mid_run_then_restart_loses_and_doubles_nothing(tmp_path: Path) -> None:
    db = tmp_path / "tenure.db"
    submitted = tenure("submit", "--tasks", "20", "--min-seconds", "1.0", "--max-seconds", "2.0",
                       "--failure-rate", "0", "--transient-rate", "0.2", "--seed", "123", db=db)
    run_id = int(submitted.stdout.split()[-1])
    t = service.open(str(db), migrate=False)
    log = tmp_path / "worker.log"
    first = start_worker(db, log, WORKER_ENV)
    try:
        # Kill once several tasks are well under way (their progress reached the database).
        def under_way() -> bool:
            _, tasks = t.run_with_tasks(run_id)
            return sum(task.status == "running" and task.progress >= 0.3 for task in tasks) >= 5
        wait_for(under_way, 15, "five tasks 30 % done")
        first.send_signal(signal.SIGKILL)
        first.wait(5)
    finally:
        if first.poll() is None:
            first.kill()
    _, at_kill = t.run_with_tasks(run_id)
    interrupted = {task.id for task in at_kill if task.status == "running"}
    assert len(interrupted) >= 5

    second = start_worker(db, log, WORKER_ENV)
    try:
        run = t.wait_run(run_id, 30)
        assert second.poll() is None, "the restarted worker died"
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(10) == 0
    _, tasks = t.run_with_tasks(run_id)

    assert run.status == "completed"
    assert run.counts["succeeded"] == 20 and sum(run.counts.values()) == 20
    with t.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT a.task_id, a.outcome, a.finished_at, w.started_at AS restart "
            "FROM task_attempts a JOIN tasks t ON t.id = a.task_id, supervisors w "
            "WHERE t.run_id = :run AND w.id = (SELECT max(id) FROM supervisors)"), {"run": run_id}).all()
        first_stopped = conn.execute(text("SELECT stopped_at FROM supervisors WHERE id = 1")).scalar()
    succeeded = [r.task_id for r in rows if r.outcome == "succeeded"]
    assert sorted(succeeded) == sorted(task.id for task in tasks), "each task succeeded exactly once"
    assert not [r for r in rows if r.outcome == "running"], "no attempt left open"
    lost = [r for r in rows if r.outcome == "lost"]
    assert {r.task_id for r in lost} == interrupted and len(lost) == len(interrupted)
    # Reclaimed within about a second of the restart, not after the 60 s TTL.
    delays = [(_dt(r.finished_at) - _dt(r.restart)).total_seconds() for r in lost]
    assert max(delays) < 1.0, delays
    assert first_stopped is not None
    # The checkpoint survived the crash: interrupted tasks resumed, not restarted from zero.
    # Those 30 % or more done at the kill (of 1 s or more) had checkpointed at least 0.25 s.
    well_under_way = {task.id for task in at_kill if task.status == "running" and task.progress >= 0.3}
    resumed = [task.result["resumed_from_s"] for task in tasks if task.id in well_under_way]
    assert len(resumed) >= 5 and all(r >= 0.25 for r in resumed), sorted(resumed)
    t.close()


def _dt(value: object) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
