"""`kill -9` of a worker while it writes ends in group commits: no acknowledged success is lost,
no task that succeeded runs again.

The worker acknowledges a success (logs ``attempt.succeeded``, frees its slot) only after the
group commit that wrote it. Two deterministic tests put the crash on either side of that commit
(the worker imports :mod:`tests.commit_faults`, which SIGKILLs it at a chosen moment of the N-th
batch holding successes), on SQLite and PostgreSQL:

* right *before* the COMMIT: the batch is not in the database, so its tasks are still leased by
  the dead worker; the next worker reclaims them (``lost``, uncharged) and runs them again once;
* right *after* the COMMIT, before the acknowledgment: the batch is in the database though the
  worker never said so, and none of its tasks runs again.

A third test kills a draining worker twice at moments the clock picks, to hit what the two
chosen moments do not (a kill during a claim, a heartbeat, between batches). Each asserts: every
success the dead worker acknowledged is in the database with that attempt, each task succeeded
exactly once and that success is its last attempt, no attempt is left open, nothing is charged.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import service
from tests.acceptance.procs import start_worker
from tests.conftest import wait_for

pytestmark = pytest.mark.acceptance

TASKS = 3000
WORKER_ENV = {"TENURE_HEARTBEAT_S": "0.1", "TENURE_LEASE_TTL_S": "60"}
SUCCEEDED = re.compile(r"attempt\.succeeded task=(\d+) attempt=(\d+)")
FAULT_TASKS = 800  # enough for several batches before the chosen one and a drain after it, under load too
FAULT_BATCH = 8  # the batch of successes the worker dies around (batches grow as the drain warms up)


def acknowledged(log: Path) -> set[tuple[int, int]]:
    """The (task, attempt) successes a worker acknowledged in its log."""
    return {(int(a), int(b)) for a, b in SUCCEEDED.findall(log.read_text())}


def attempts(t: service.Tenure, run_id: int) -> list[Any]:
    with t.engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT a.task_id, a.attempt, a.outcome, a.charged, t.attempts, t.charged AS task_charged "
            "FROM task_attempts a JOIN tasks t ON t.id = a.task_id WHERE t.run_id = :run "
            "ORDER BY a.task_id, a.attempt"),
            {"run": run_id}).all())


def drain(t: service.Tenure, db: str, run_id: int, log: Path) -> None:
    """A worker without faults finishes the run, then stops gracefully."""
    last = start_worker(db, log, WORKER_ENV)
    try:
        run = t.wait_run(run_id, 60)
    finally:
        last.send_signal(signal.SIGTERM)
        assert last.wait(10) == 0
    assert run.status == "completed" and run.counts["succeeded"] == run.total, run.counts


def check_exactly_once(rows: list[Any], tasks: int, acked: set[tuple[int, int]]) -> None:
    """What every crash must leave once the run is drained (see the module)."""
    wins = {(r.task_id, r.attempt) for r in rows if r.outcome == "succeeded"}
    assert len(wins) == tasks and len({task for task, _ in wins}) == tasks, "each task succeeded exactly once"
    assert acked and acked <= wins, f"acknowledged successes missing: {sorted(acked - wins)[:10]}"
    assert all(r.attempt == r.attempts for r in rows if r.outcome == "succeeded"), "a success ran again"
    assert not [r for r in rows if r.outcome == "running"], "no attempt left open"
    assert {r.outcome for r in rows} <= {"succeeded", "lost"}
    assert not [r for r in rows if r.charged or r.task_charged], "a worker's crash charged a task"


def crash_around_a_commit(t: service.Tenure, db: str, tmp_path: Path, moment: str) -> tuple[
        int, set[tuple[int, int]], set[tuple[int, int]]]:
    """Run a worker that kills itself ``moment`` the commit of its FAULT_BATCH-th batch of successes.

    Returns the run, what the dead worker acknowledged, and that batch's successes.
    """
    run_id = t.submit_run("echo", [{"i": i} for i in range(FAULT_TASKS)])
    note, log = tmp_path / "batch.json", tmp_path / "worker.log"
    env = {**WORKER_ENV, "TENURE_IMPORT": "tests.commit_faults", "TENURE_TEST_CRASH_AT": moment,
           "TENURE_TEST_CRASH_BATCH": str(FAULT_BATCH), "TENURE_TEST_CRASH_NOTE": str(note)}
    worker = start_worker(db, log, env, "--log-level", "INFO")
    try:
        code = worker.wait(60)
    except subprocess.TimeoutExpired:
        worker.kill()
        raise AssertionError(f"the worker never reached batch {FAULT_BATCH}: {log.read_text()[-2000:]}") from None
    assert code == -signal.SIGKILL, f"exit {code}: {log.read_text()[-2000:]}"
    batch = {(task, attempt) for task, attempt in json.loads(note.read_text())["successes"]}
    acked = acknowledged(log)
    assert batch and acked, "the crash needs a batch of successes, and acknowledged ones before it"
    assert t.run(run_id).counts["succeeded"] < FAULT_TASKS, "the crash came after the drain: it tests nothing"
    return run_id, acked, batch


def outcomes_at_the_crash(t: service.Tenure, run_id: int, acked: set[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """Each attempt's outcome as the dead worker left it; every success it acknowledged must be there."""
    crashed = {(r.task_id, r.attempt): r.outcome for r in attempts(t, run_id)}
    missing = sorted(key for key in acked if crashed.get(key) != "succeeded")
    assert not missing, f"the worker acknowledged successes the database does not have: {missing[:10]}"
    return crashed


def test_a_crash_right_before_a_group_commit_reruns_its_successes_once_uncharged(
        open_tenure: Callable[..., service.Tenure], db_url: str, tmp_path: Path) -> None:
    t = open_tenure()
    run_id, acked, batch = crash_around_a_commit(t, db_url, tmp_path, "before")
    crashed = outcomes_at_the_crash(t, run_id, acked)
    assert {crashed[key] for key in batch} == {"running"}, "the batch was written though its COMMIT never went"

    drain(t, db_url, run_id, tmp_path / "drain.log")
    rows = attempts(t, run_id)
    check_exactly_once(rows, FAULT_TASKS, acked)
    ended = {(r.task_id, r.attempt): r for r in rows}
    for task, attempt in batch:
        assert attempt == 1 and ended[task, 1].outcome == "lost" and not ended[task, 1].charged, ended[task, 1]
        assert ended[task, 2].outcome == "succeeded" and ended[task, 2].attempts == 2, ended[task, 2]


def test_a_crash_right_after_a_group_commit_runs_none_of_its_successes_again(
        open_tenure: Callable[..., service.Tenure], db_url: str, tmp_path: Path) -> None:
    t = open_tenure()
    run_id, acked, batch = crash_around_a_commit(t, db_url, tmp_path, "after")
    crashed = outcomes_at_the_crash(t, run_id, acked)
    assert {crashed[key] for key in batch} == {"succeeded"}, "the batch is not in the database after its COMMIT"
    assert not batch & acked, "the worker acknowledged the batch before it died: the crash came too late"

    drain(t, db_url, run_id, tmp_path / "drain.log")
    rows = attempts(t, run_id)
    check_exactly_once(rows, FAULT_TASKS, acked)
    per_task: dict[int, list[Any]] = {}
    for r in rows:
        per_task.setdefault(r.task_id, []).append(r)
    for task, attempt in batch:  # committed, never acknowledged: its only attempt, never run again
        assert [(r.attempt, r.outcome) for r in per_task[task]] == [(attempt, "succeeded")], per_task[task]
        assert per_task[task][0].attempts == attempt


def test_kill_9_during_group_commits_loses_no_acknowledged_success_and_reruns_no_success(tmp_path: Path) -> None:
    db = tmp_path / "tenure.db"
    t = service.open(str(db))
    try:
        kill_twice_then_drain(t, db, tmp_path)
    finally:
        t.close()


def kill_twice_then_drain(t: service.Tenure, db: Path, tmp_path: Path) -> None:
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
    acked = acknowledged(log)

    drain(t, str(db), run_id, tmp_path / "last.log")
    check_exactly_once(attempts(t, run_id), TASKS, acked)
