"""Under fire: repeated kill -9 of `tenure serve`, a poison task, graceful stops, two supervisors.

Acceptance tests with real processes. Fault timings are drawn from a seeded RNG whose seed is
printed (TENURE_CHAOS_SEED replays a failure).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import sqlite3
import threading
import urllib.request
from pathlib import Path

import pytest

import service
from tests.acceptance.procs import Server, start_worker, tenure
from tests.conftest import report, wait_for

pytestmark = pytest.mark.acceptance

CHAOS_SEED = int(os.environ.get("TENURE_CHAOS_SEED", random.SystemRandom().randrange(10**6)))
PLUGIN = {"TENURE_IMPORT": "tests.kinds_for_tests"}
STATS: dict[str, float] = {}


def integrity(db: Path) -> str:
    with sqlite3.connect(db, timeout=10) as conn:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
    conn.close()
    return str(result)


def open_attempts(db: Path) -> set[tuple[int, int]]:
    with sqlite3.connect(db, timeout=10) as conn:
        rows = conn.execute("SELECT task_id, attempt FROM task_attempts WHERE outcome = 'running'").fetchall()
    conn.close()
    return {(r[0], r[1]) for r in rows}


def pause(seconds: float) -> None:
    """The fault schedule's wait before the next kill (a chosen moment, not a synchronization)."""
    threading.Event().wait(seconds)


def test_ten_kill_9s_of_serve_during_one_run(tmp_path: Path) -> None:
    report(f"chaos seed {CHAOS_SEED} (TENURE_CHAOS_SEED={CHAOS_SEED} replays it)")
    rng = random.Random(CHAOS_SEED)
    db = tmp_path / "tenure.db"
    server = Server(db, tmp_path / "serve.log", {"TENURE_HEARTBEAT_S": "0.2"})
    server.start()
    body = json.dumps({"tasks": 50, "min_seconds": 0.5, "max_seconds": 2.5, "failure_rate": 0.1,
                       "transient_rate": 0.1, "seed": CHAOS_SEED, "max_attempts": 30}).encode()
    with urllib.request.urlopen(urllib.request.Request(server.url + "/api/runs", data=body, method="POST")) as r:
        run_id = json.load(r)["id"]
    interrupted: set[tuple[int, int]] = set()
    kills = 0
    for i in range(10):
        during_startup = i % 3 == 2
        if during_startup:
            server.kill9()
            server.start(wait=False)
            pause(rng.uniform(0.05, 0.4))  # mid start-up: recovery may be half done
        else:
            pause(rng.uniform(0.2, 1.2))
        server.kill9()
        kills += 1
        interrupted |= open_attempts(db)
        assert integrity(db) == "ok"
        server.start()
        assert integrity(db) == "ok"
    t = service.open(str(db), migrate=False)
    try:
        run = t.wait_run(run_id, 90)
        _, tasks = t.run_with_tasks(run_id)
        outcomes = {(task.id, a.attempt): a.outcome for task in tasks for a in t.attempts(task.id)}
    finally:
        t.close()
        server.stop()
    assert integrity(db) == "ok"
    assert run.status == "completed" and sum(run.counts.values()) == 50 == run.total
    assert run.counts["running"] == run.counts["queued"] == run.counts["retrying"] == 0
    successes: dict[int, int] = {}
    for (task_id, _), outcome in outcomes.items():
        successes[task_id] = successes.get(task_id, 0) + (outcome == "succeeded")
    assert all(successes[task.id] == (task.status == "succeeded") for task in tasks), "a task succeeded twice"
    assert "running" not in outcomes.values(), "an attempt was left open"
    assert interrupted and all(outcomes[key] == "lost" for key in interrupted), "an interrupted attempt not lost"
    STATS.update(kills=kills, lost=len(interrupted), doubled=0)
    report(f"chaos: {kills} kills, {len(interrupted)} interrupted attempts closed as lost, "
          f"{run.counts['succeeded']} succeeded, {run.counts['failed']} failed, 0 succeeded twice")


def test_a_poison_task_is_failed_without_a_crash_loop(tmp_path: Path) -> None:
    db = tmp_path / "tenure.db"
    poison = int(tenure("submit", "--kind", "t_poison", "--tasks", "1", "--max-attempts", "3",
                        db=db, env=PLUGIN).stdout.split()[-1])
    log = tmp_path / "worker.log"
    env = {**PLUGIN, "TENURE_HEARTBEAT_S": "0.1"}
    crashes = 0
    for _ in range(3):
        worker = start_worker(db, log, env)
        assert worker.wait(20) == 70  # the poison task took the whole process down
        crashes += 1
    survivor = start_worker(db, log, env)
    t = service.open(str(db), migrate=False)
    try:
        run = t.wait_run(poison, 20)
        (task,) = t.run_with_tasks(poison)[1]
        assert run.counts["failed"] == 1
        assert task.error is not None and task.error.startswith("worker crashed")
        assert [a.outcome for a in t.attempts(task.id)] == ["lost", "lost", "lost"]
        # The service stays up and goes on with other work.
        after = t.submit_run(3, "sleep", {"min_seconds": 0.01, "max_seconds": 0.02, "failure_rate": 0,
                                          "transient_rate": 0})
        assert t.wait_run(after, 20).counts["succeeded"] == 3
        assert survivor.poll() is None
    finally:
        t.close()
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(10) == 0
    assert crashes == 3


def test_sigterm_releases_leases_and_the_next_start_takes_them_at_once(tmp_path: Path) -> None:
    db = tmp_path / "tenure.db"
    run_id = int(tenure("submit", "--tasks", "5", "--min-seconds", "30", "--max-seconds", "30",
                        "--max-attempts", "1", db=db).stdout.split()[-1])
    log = tmp_path / "worker.log"
    first = start_worker(db, log, {}, "--grace", "0.3")
    t = service.open(str(db), migrate=False)
    try:
        wait_for(lambda: t.run(run_id).counts["running"] == 5, 15, "five running")
        first.send_signal(signal.SIGTERM)
        assert first.wait(10) == 0
        assert t.run(run_id).counts["queued"] == 5
        second = start_worker(db, log, {})
        wait_for(lambda: t.run(run_id).counts["running"] == 5, 3, "the released tasks taken at once")
        second.send_signal(signal.SIGTERM)
        second.send_signal(signal.SIGTERM)  # a second signal: stop without waiting
        assert second.wait(10) == 0
    finally:
        t.close()


def test_two_supervisors_on_one_sqlite_file_never_run_a_task_twice_at_once(tmp_path: Path) -> None:
    db = tmp_path / "tenure.db"
    run_id = int(tenure("submit", "--tasks", "120", "--min-seconds", "0.02", "--max-seconds", "0.3",
                        "--failure-rate", "0", "--transient-rate", "0.3", db=db).stdout.split()[-1])
    log = tmp_path / "workers.log"
    workers = [start_worker(db, log, {}, "--concurrency", "16") for _ in range(2)]
    t = service.open(str(db), migrate=False)
    try:
        run = t.wait_run(run_id, 60)
        with t.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT a.task_id, a.worker_id, a.started_at, a.finished_at, a.outcome FROM task_attempts a "
                "JOIN tasks t ON t.id = a.task_id WHERE t.run_id = ? ORDER BY a.task_id, a.started_at",
                (run_id,)).all()
    finally:
        t.close()
        for w in workers:
            w.send_signal(signal.SIGTERM)
        assert [w.wait(10) for w in workers] == [0, 0]
    assert run.counts["succeeded"] == 120
    by_task: dict[int, list[tuple[str, str, str]]] = {}
    for task_id, _, started, finished, outcome in rows:
        by_task.setdefault(task_id, []).append((str(started), str(finished), outcome))
    for task_id, spans in by_task.items():
        assert [o for *_, o in spans].count("succeeded") == 1, task_id
        for (_, end, _), (start, _, _) in itertools.pairwise(spans):
            assert end <= start, f"task {task_id} ran in two places at once"
    assert len({worker for _, worker, *_ in rows}) == 2, "both supervisors took work"
