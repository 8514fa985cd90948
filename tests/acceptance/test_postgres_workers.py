"""Several `tenure worker` processes sharing one PostgreSQL database.

Real processes against the machine's PostgreSQL; each test gets its own database. Skips with
a reason where no PostgreSQL answers, unless TENURE_REQUIRE_POSTGRES=1 (as in .ci/run).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import text

import service
from tests.acceptance.procs import REPO, stop_all
from tests.conftest import report, wait_for

pytestmark = pytest.mark.acceptance


def workers(url: str, log: Path, n: int, env: dict[str, str], *extra: str) -> list[subprocess.Popen[bytes]]:
    import os
    import sys

    procs = []
    for i in range(n):
        with open(log, "ab") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "service", "worker", "--db", url, *extra],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                env={**os.environ, "TENURE_HOST": f"host-{i}", **env}))
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    stop_all(procs, 20)


def live_workers(t: service.Tenure) -> int:
    with t.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM supervisors WHERE stopped_at IS NULL")).scalar_one())


def test_three_workers_run_each_task_exactly_once_and_share_the_work(pg_url: str, tmp_path: Path) -> None:
    t = service.open(pg_url)
    procs = workers(pg_url, tmp_path / "w.log", 3, {}, "--concurrency", "8")
    try:
        wait_for(lambda: live_workers(t) == 3, 20, "three workers registered")
        run_id = t.submit_run(300, "sleep", {"min_seconds": 0.01, "max_seconds": 0.05, "failure_rate": 0,
                                             "transient_rate": 0.1, "seed": 3})
        run = t.wait_run(run_id, 60)
        with t.engine.connect() as conn:
            per_worker = dict(conn.execute(text(
                "SELECT a.supervisor_id, count(*) FROM task_attempts a JOIN tasks t ON t.id = a.task_id "
                "WHERE t.run_id = :r AND a.outcome = 'succeeded' GROUP BY a.supervisor_id"), {"r": run_id}).all())
            doubled = conn.execute(text(
                "SELECT count(*) FROM (SELECT a.task_id FROM task_attempts a JOIN tasks t ON t.id = a.task_id "
                "WHERE t.run_id = :r AND a.outcome = 'succeeded' GROUP BY a.task_id HAVING count(*) > 1) d"),
                {"r": run_id}).scalar_one()
    finally:
        stop(procs)
        t.close()
    assert run.counts["succeeded"] == 300 and doubled == 0
    assert len(per_worker) == 3 and min(per_worker.values()) >= 30, per_worker
    report(f"postgres: 300 tasks over 3 workers, succeeded per worker {sorted(per_worker.values())}, 0 doubled")


def test_kill_9_of_one_worker_of_three(pg_url: str, tmp_path: Path) -> None:
    t = service.open(pg_url)
    env = {"TENURE_LEASE_TTL_S": "2", "TENURE_HEARTBEAT_S": "0.3"}
    procs = workers(pg_url, tmp_path / "w.log", 3, env, "--concurrency", "10")
    try:
        wait_for(lambda: live_workers(t) == 3, 20, "three workers registered")
        run_id = t.submit_run(60, "sleep", {"min_seconds": 0.5, "max_seconds": 1.5, "failure_rate": 0,
                                            "transient_rate": 0, "seed": 9}, max_attempts=5)
        victim = procs[0]
        with t.engine.connect() as conn:
            def victim_busy() -> bool:
                return bool(conn.execute(text(
                    "SELECT count(*) FROM tasks t JOIN supervisors w ON w.id = t.supervisor_id "
                    "WHERE t.status = 'running' AND w.host = 'host-0'")).scalar_one())
            wait_for(victim_busy, 20, "the victim to hold leases")
            conn.rollback()
        victim.kill()
        victim.wait(5)
        run = t.wait_run(run_id, 60)
        with t.engine.connect() as conn:
            lost = conn.execute(text(
                "SELECT count(*) FROM task_attempts a JOIN supervisors w ON w.id = a.supervisor_id "
                "WHERE a.outcome = 'lost' AND w.host = 'host-0'")).scalar_one()
            doubled = conn.execute(text(
                "SELECT count(*) FROM (SELECT task_id FROM task_attempts WHERE outcome = 'succeeded' "
                "GROUP BY task_id HAVING count(*) > 1) d")).scalar_one()
            still_open = conn.execute(text(
                "SELECT count(*) FROM task_attempts WHERE outcome = 'running'")).scalar_one()
    finally:
        stop(procs)
        t.close()
    assert run.counts["succeeded"] == 60 and sum(run.counts.values()) == 60
    assert lost > 0 and doubled == 0 and still_open == 0
    report(f"postgres: kill -9 of 1 worker of 3: {lost} lost attempts finished elsewhere, 0 doubled")
