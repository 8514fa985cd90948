"""Engine benchmark: the headline run's overhead and the time to recover from `kill -9`.

    .venv/bin/python bench/engine.py

1. 50 `sleep` tasks of 1-3 s, submitted with `tenure submit`, run by one `tenure worker`:
   how long after its longest task the run finishes (from the first claim).
2. The same run killed with SIGKILL mid-run and restarted: how soon after the restart every
   interrupted task is running again, and whether anything was lost or done twice.

Prints figures; asserts nothing about speed (a benchmark, not a test).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy import text

import service

REPO = Path(__file__).resolve().parents[1]


def cli(db: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "service", *args, "--db", str(db)], capture_output=True,
                          text=True, check=True, cwd=REPO)
    return done.stdout


def worker(db: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "service", "worker", "--db", str(db), "--log-level", "WARNING"],
                            cwd=REPO, env={**os.environ, **(env or {})})


def seconds(a: object, b: object) -> float:
    def dt(v: object) -> datetime:
        return v if isinstance(v, datetime) else datetime.fromisoformat(str(v))
    return (dt(b) - dt(a)).total_seconds()


def headline(tmp: Path) -> None:
    db = tmp / "headline.db"
    run_id = int(cli(db, "submit", "--tasks", "50", "--min-seconds", "1", "--max-seconds", "3",
                     "--failure-rate", "0", "--transient-rate", "0", "--seed", "2026").split()[-1])
    proc = worker(db)
    t = service.open(str(db), migrate=False)
    t.wait_run(run_id, 60, poll_s=0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    with t.engine.connect() as conn:
        row = conn.execute(text(
            "SELECT min(t.started_at) AS first_claim, r.finished_at, r.created_at, "
            "max(json_extract(t.result, '$.slept_s')) AS longest "
            "FROM runs r JOIN tasks t ON t.run_id = r.id WHERE r.id = :id"), {"id": run_id}).one()
    t.close()
    span = seconds(row.first_claim, row.finished_at)
    print("headline run: 50 sleep tasks of 1-3 s, one `tenure worker`")
    print(f"  longest task            {row.longest:.3f} s")
    print(f"  first claim -> run end  {span:.3f} s")
    print(f"  overhead                {span - row.longest:.3f} s   (target: < 0.5 s)")
    print(f"  submit -> first claim   {seconds(row.created_at, row.first_claim):.3f} s (includes worker start-up)")


def kill9(tmp: Path) -> None:
    db = tmp / "kill9.db"
    run_id = int(cli(db, "submit", "--tasks", "50", "--min-seconds", "1", "--max-seconds", "3",
                     "--failure-rate", "0", "--transient-rate", "0", "--seed", "7").split()[-1])
    env = {"TENURE_HEARTBEAT_S": "0.2"}  # default 15 s lease TTL: recovery must not wait for it
    t = service.open(str(db), migrate=False)
    proc = worker(db, env)
    deadline = time.monotonic() + 30
    while t.run(run_id).counts["running"] < 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted = t.run(run_id).counts["running"]
    restart = time.monotonic()
    proc = worker(db, env)
    run = t.wait_run(run_id, 60, poll_s=0.05)
    total = time.monotonic() - restart
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    with t.engine.connect() as conn:
        lost = conn.execute(text(
            "SELECT a.finished_at AS reclaimed, w.started_at AS restarted FROM task_attempts a, supervisors w "
            "WHERE a.outcome = 'lost' AND w.id = (SELECT max(id) FROM supervisors)")).all()
        reclaimed = conn.execute(text(
            "SELECT max(a.started_at) FROM task_attempts a WHERE a.attempt = 2")).scalar()
        restarted = conn.execute(text("SELECT started_at FROM supervisors ORDER BY id DESC LIMIT 1")).scalar()
        resumed = conn.execute(text(
            "SELECT avg(json_extract(result, '$.resumed_from_s')) FROM tasks WHERE attempts > 1")).scalar()
        doubled = conn.execute(text(
            "SELECT count(*) FROM (SELECT task_id FROM task_attempts WHERE outcome = 'succeeded' "
            "GROUP BY task_id HAVING count(*) > 1) d")).scalar()
    t.close()
    print("kill -9 mid-run, then restart (lease TTL 15 s)")
    print(f"  tasks interrupted                     {interrupted}")
    print(f"  lost attempts recorded                {len(lost)}")
    print(f"  restart -> all re-claimed             {seconds(restarted, reclaimed):.3f} s (after the worker row)")
    print(f"  restart -> run complete               {total:.3f} s")
    print(f"  interrupted tasks resumed from        {resumed:.2f} s in, on average (checkpoints)")
    print(f"  tasks succeeded                       {run.counts['succeeded']}/50, done twice: {doubled}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        headline(Path(d))
        kill9(Path(d))
