"""An idle worker over a big history: CPU per second of idling, and what a claim costs.

    .venv/bin/python bench/idle.py [FINISHED]

For SQLite and PostgreSQL: a database with FINISHED (default 1,000,000) finished tasks, each
with its attempt, as a long history leaves it. Then:

1. `tenure worker` with default settings, idle: its CPU (and its zygote's and task processes')
   over 30 s, as a share of one core.
2. A claim when nothing is due (what an idle worker does five times a second on SQLite) and a
   claim of one due task, each timed in-process (median and p99 of 300), on that database and on
   an empty one.

Prints figures; asserts nothing (a benchmark, not a test).
"""

from __future__ import annotations

import os
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
from service.storage.leases import Leases
from service.storage.models import Outcome

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("TENURE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
IDLE_S = 30.0


def fill(url: str, n: int) -> None:
    t = service.open(url)
    run_id = t.submit_run(1, "echo")
    series = ("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n) SELECT i FROM s"
              if t.engine.dialect.name == "sqlite" else "SELECT generate_series(1, :n) AS i")
    with t.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO tasks (run_id, position, kind, args, status, attempts, max_attempts, charged, lost, isolated, "
            "progress, created_at, started_at, finished_at) "
            f"SELECT :r, i, 'echo', '{{}}', 'succeeded', 1, 3, 0, 0, false, 1.0, '2026-01-01', '2026-01-01', "
            f"'2026-01-01' FROM ({series}) AS g"), {"r": run_id, "n": n})
        conn.execute(text("INSERT INTO task_attempts (task_id, attempt, started_at, finished_at, outcome, charged) "
                          "SELECT id, 1, created_at, created_at, 'succeeded', false FROM tasks WHERE run_id = :r"),
                     {"r": run_id})
        conn.execute(text("UPDATE tasks SET status = 'succeeded' WHERE run_id = :r"), {"r": run_id})
        conn.execute(text("ANALYZE"))
    t.close()


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` and all its descendants, in clock ticks."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += int(stats[p][11]) + int(stats[p][12])
        todo.extend(children.get(p, []))
    return total


def idle_cpu(url: str) -> float:
    proc = subprocess.Popen([sys.executable, "-m", "service", "worker", "--db", url, "--log-level", "WARNING"],
                            cwd=REPO)
    try:
        time.sleep(5)  # start-up done, spare task processes forked
        before, start = cpu_ticks(proc.pid), time.monotonic()
        time.sleep(IDLE_S)
        used = (cpu_ticks(proc.pid) - before) / os.sysconf("SC_CLK_TCK")
        return 100 * used / (time.monotonic() - start)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def claim_costs(url: str) -> tuple[float, float, float, float]:
    t = service.open(url)
    leases = Leases(t.engine)
    me = leases.register("bench", 1, None, None)
    idle, busy = [], []
    for _ in range(300):
        started = time.perf_counter()
        if leases.anything_due():
            leases.claim(me, 64)
        idle.append(time.perf_counter() - started)
    for _ in range(300):
        t.submit_task("echo")
        started = time.perf_counter()
        (lease,) = leases.claim(me, 64) if leases.anything_due() else [None]
        busy.append(time.perf_counter() - started)
        assert lease is not None
        leases.finish(lease, me, outcome=Outcome.SUCCEEDED, result=1)
    t.close()

    def p99(xs: list[float]) -> float:
        return sorted(xs)[int(len(xs) * 0.99) - 1]
    return (statistics.median(idle) * 1000, p99(idle) * 1000, statistics.median(busy) * 1000, p99(busy) * 1000)


def databases(n: int) -> list[tuple[str, str, bool]]:
    """(label, url, big) for an empty and a big database on each backend."""
    tmp = Path(tempfile.mkdtemp())
    out = [("SQLite", str(tmp / "empty.db"), False), ("SQLite", str(tmp / "big.db"), True)]
    admin = make_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    for big in (False, True):
        name = f"tenure_idle_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        out.append(("PostgreSQL", make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False), big))
    admin.dispose()
    for _, url, big in out:
        service.open(url).close()
        if big:
            started = time.monotonic()
            fill(url, n)
            print(f"  (filled {url.split('/')[-1]} with {n:,} finished tasks in {time.monotonic() - started:.0f} s)")
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    print(f"an idle `tenure worker` and its claims, empty database vs {n:,} finished tasks")
    for label, url, big in databases(n):
        cost = claim_costs(url)
        cpu = idle_cpu(url) if big else None
        size = f"{n:,} finished" if big else "empty"
        print(f"  {label:<10} {size:>18}: claim with nothing due median {cost[0]:.2f} ms (p99 {cost[1]:.2f}), "
              f"claim of one task {cost[2]:.2f} ms (p99 {cost[3]:.2f})"
              + (f"; idle worker {cpu:.2f} % of a core over {IDLE_S:g} s" if cpu is not None else ""))
        if label == "PostgreSQL":
            admin = make_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
            admin.dispose()


if __name__ == "__main__":
    main()
