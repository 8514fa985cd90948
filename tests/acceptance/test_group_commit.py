"""`kill -9` of a worker while it writes ends in group commits: no acknowledged success is lost,
no task that succeeded runs again.

A worker draining thousands of no-op tasks spends most of its time in group commits, so a
SIGKILL at some moment of the drain lands in or around one. The worker acknowledges a success
(logs ``attempt.succeeded``) only after the commit: every success it logged must be in the
database with that attempt, and a task's succeeded attempt must be its last one.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
from sqlalchemy import text

import service
from tests.acceptance.procs import start_worker
from tests.conftest import wait_for

pytestmark = pytest.mark.acceptance

TASKS = 3000
WORKER_ENV = {"TENURE_HEARTBEAT_S": "0.1", "TENURE_LEASE_TTL_S": "60"}
SUCCEEDED = re.compile(r"attempt\.succeeded task=(\d+) attempt=(\d+)")


def test_kill_9_during_group_commits_loses_no_acknowledged_success_and_reruns_no_success(tmp_path: Path) -> None:
    db = tmp_path / "tenure.db"
    t = service.open(str(db))
    run_id = t.submit_run("echo", [{"i": i} for i in range(TASKS)])
    log = tmp_path / "worker.log"

    def succeeded() -> int:
        return t.run(run_id).counts["succeeded"]

    for at_least in (TASKS // 5, TASKS // 2):  # two kills, mid-drain
        worker = start_worker(db, log, WORKER_ENV, "--log-level", "INFO")
        try:
            wait_for(lambda: succeeded() >= at_least, 60, f"{at_least} successes")  # noqa: B023
            worker.send_signal(signal.SIGKILL)
            assert worker.wait(5) == -signal.SIGKILL
        finally:
            if worker.poll() is None:
                worker.kill()
        assert succeeded() < TASKS, "the kill came after the drain: it tests nothing"
    acknowledged = {(int(a), int(b)) for a, b in SUCCEEDED.findall(log.read_text())}

    last = start_worker(db, tmp_path / "last.log", WORKER_ENV)
    try:
        run = t.wait_run(run_id, 60)
    finally:
        last.send_signal(signal.SIGTERM)
        assert last.wait(10) == 0

    assert run.status == "completed" and run.counts["succeeded"] == TASKS
    with t.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT a.task_id, a.attempt, a.outcome, t.attempts FROM task_attempts a JOIN tasks t ON t.id = a.task_id "
            "WHERE t.run_id = :run"), {"run": run_id}).all()
    wins = {(r.task_id, r.attempt) for r in rows if r.outcome == "succeeded"}
    assert len(wins) == TASKS and len({task for task, _ in wins}) == TASKS, "each task succeeded exactly once"
    assert acknowledged and acknowledged <= wins, "a success the worker acknowledged is missing"
    assert all(r.attempt == r.attempts for r in rows if r.outcome == "succeeded"), "a success ran again"
    assert not [r for r in rows if r.outcome == "running"], "no attempt left open"
    assert {r.outcome for r in rows} <= {"succeeded", "lost"}
    t.close()
