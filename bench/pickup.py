"""Pickup after idle: how soon an idle `tenure worker` starts a task submitted by another process.

    .venv/bin/python bench/pickup.py [IDLE_S] [SAMPLES]

For SQLite (doorbells) and PostgreSQL (LISTEN/NOTIFY): start one `tenure worker`, let it sit
idle IDLE_S seconds (default 30), then submit SAMPLES (default 40) `echo` tasks one at a time
from this process, each after a random pause of 0.3-0.7 s (so that no submit lines up with the
worker's poll), and read the pickup of each from the database: its attempt's ``started_at``
minus the task's ``created_at``, both stamped by the database's clock. Prints median, p99, max.
A third row has the worker open the SQLite file by a relative URL (``--db sqlite:///pickup.db``
in the file's directory) while this process submits through the absolute path: the doorbell is
named after the file itself, so the spelling must not matter. Asserts nothing (a benchmark, not
a test).
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

import service
from service.storage.db import make_engine

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("TENURE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def measure(url: str, idle_s: float, samples: int, worker_db: str | None = None,
            worker_cwd: Path = REPO) -> list[float]:
    t = service.open(url)
    worker = subprocess.Popen([sys.executable, "-m", "service", "worker", "--db", worker_db or url,
                               "--log-level", "WARNING"], cwd=worker_cwd)
    try:
        first = t.submit_task("echo", {})  # the worker is up once it ran one task
        t.wait_task(first, 30)
        time.sleep(idle_s)  # the point of the benchmark: an idle worker
        rng = random.Random(1)
        ids = []
        for _ in range(samples):
            time.sleep(rng.uniform(0.3, 0.7))
            ids.append(t.submit_task("echo", {}))
        for task_id in ids:
            t.wait_task(task_id, 30)
        with t.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT tasks.created_at, task_attempts.started_at FROM tasks JOIN task_attempts "
                "ON task_attempts.task_id = tasks.id AND task_attempts.attempt = 1 WHERE tasks.id >= :first"),
                {"first": ids[0]}).all()
        return [(_dt(started) - _dt(created)) * 1000 for created, started in rows]
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        t.close()


def _dt(value: object) -> float:
    from datetime import datetime

    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return parsed.timestamp()


def report(name: str, ms: list[float]) -> None:
    ms.sort()
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    print(f"{name:<34} n={len(ms):3d}  median {statistics.median(ms):6.1f} ms  p99 {p99:6.1f} ms  "
          f"max {ms[-1]:6.1f} ms")


def main() -> None:
    idle_s = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    samples = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    print(f"machine: {os.cpu_count()} cores; worker idle {idle_s:g} s, then {samples} tasks submitted one at a time "
          "from another process; pickup = attempt started_at - task created_at (database clock)")
    with tempfile.TemporaryDirectory() as tmp:
        report("SQLite (doorbell)", measure(f"sqlite:///{tmp}/pickup.db", idle_s, samples))
        report("SQLite, worker's URL relative", measure(f"sqlite:///{tmp}/spelled.db", idle_s, samples,
                                                        "sqlite:///spelled.db", Path(tmp)))
    admin = make_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"tenure_pickup_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        report("PostgreSQL (LISTEN/NOTIFY)", measure(make_url(PG_ADMIN).set(database=name).render_as_string(
            hide_password=False), idle_s, samples))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
