"""Throughput benchmark: short tasks per second with 1, 2 and 3 workers on PostgreSQL, 1 on SQLite.

    .venv/bin/python bench/throughput.py [TASKS]

Each measurement uses a fresh database (PostgreSQL at TENURE_TEST_PG, default the local
server), starts the `tenure worker` processes, waits until they are registered, submits TASKS
(default 2000) `sleep` tasks of 0 s, and times submission to run completion. Prints figures.
"""

from __future__ import annotations

import os
import signal
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


def measure(url: str, n_workers: int, tasks: int) -> float:
    t = service.open(url)
    procs = [subprocess.Popen([sys.executable, "-m", "service", "worker", "--db", url, "--log-level", "WARNING"],
                              cwd=REPO, env={**os.environ, "TENURE_HOST": f"bench-{i}"}) for i in range(n_workers)]
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with t.engine.connect() as conn:
                live = conn.execute(text("SELECT count(*) FROM supervisors WHERE stopped_at IS NULL")).scalar()
                if live == n_workers:
                    break
            time.sleep(0.05)
        start = time.monotonic()
        run_id = t.submit_run(tasks, "sleep", {"min_seconds": 0, "max_seconds": 0, "failure_rate": 0,
                                               "transient_rate": 0})
        t.wait_run(run_id, 600, poll_s=0.02)
        return tasks / (time.monotonic() - start)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
        t.close()


def main() -> None:
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    print(f"{tasks} sleep tasks of 0 s each, submission to run completion, default concurrency 64 per worker")
    admin = make_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    for n in (1, 2, 3):
        name = f"tenure_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            url = make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
            print(f"  PostgreSQL, {n} worker{'s' if n > 1 else ' '}: {measure(url, n, tasks):7.0f} tasks/s")
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()
    with tempfile.TemporaryDirectory() as d:
        print(f"  SQLite,     1 worker : {measure(str(Path(d) / 'bench.db'), 1, tasks):7.0f} tasks/s")


if __name__ == "__main__":
    main()
