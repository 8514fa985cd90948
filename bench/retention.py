"""Submitting a run of 10,000 explicit tasks from a JSONL file, and pruning 1,000,000 tasks.

    .venv/bin/python bench/retention.py [TASKS_TO_PRUNE [sqlite,postgresql]]

For SQLite and PostgreSQL:

1. `tenure submit --kind echo --tasks-file tasks.jsonl` with 10,000 lines, as a user runs it
   (a new process: start-up, checks, the write), median of 3.
2. A history of TASKS_TO_PRUNE (default 1,000,000) finished tasks in runs of 1,000, each with
   one attempt that wrote 200 characters of output, all ended 40 days ago. `prune(30 days)`
   deletes it while another thread submits a one-task run every 20 ms: the prune's total time,
   its batches (median, p99, longest: each is one write transaction, the time it holds the
   write lock), and the longest a submit waited meanwhile.

Prints figures; asserts nothing (a benchmark, not a test).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

import service
from service.storage.db import make_engine

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("TENURE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DAY_S = 86_400.0
RUN_SIZE = 1000


def submit_jsonl(url: str, workdir: Path) -> list[float]:
    tasks = workdir / "tasks.jsonl"
    with tasks.open("w") as f:
        for i in range(10_000):
            f.write(json.dumps({"path": f"/data/in/{i:05d}.csv", "out": f"/data/out/{i:05d}.parquet"}) + "\n")
    times = []
    for _ in range(3):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "service", "submit", "--db", url, "--kind", "echo",
                        "--tasks-file", str(tasks)], check=True, cwd=REPO, capture_output=True)
        times.append(time.perf_counter() - began)
    return times


def fill(url: str, n: int) -> None:
    """n finished tasks in runs of RUN_SIZE, one attempt each with output, all ended 40 days ago."""
    t = service.open(url)
    sqlite = t.engine.dialect.name == "sqlite"
    runs = max(1, n // RUN_SIZE)

    def series(count: str) -> str:
        return (f"WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {count} - 1) SELECT i FROM s"
                if sqlite else f"SELECT generate_series(0, {count} - 1) AS i")

    old = "2026-10-01 12:00:00"
    with t.engine.begin() as conn:
        first = conn.execute(text("SELECT coalesce(max(id), 0) FROM runs")).scalar_one()
        conn.execute(text(
            "INSERT INTO runs (id, status, kind, total, params, created_at, finished_at) "
            f"SELECT :first + 1 + i, 'completed', 'echo', {RUN_SIZE}, '{{}}', '{old}', '{old}' "
            f"FROM ({series(':runs')}) g"),
            {"first": first, "runs": runs})
        conn.execute(text(
            "INSERT INTO tasks (run_id, position, kind, args, status, attempts, max_attempts, charged, lost, isolated, "
            "progress, created_at, started_at, finished_at, output_chars) "
            f"SELECT r.id, p.i, 'echo', '{{\"path\": \"/data/x.csv\"}}', 'succeeded', 1, 3, 0, 0, false, 1.0, '{old}', "
            f"'{old}', '{old}', 0 FROM runs r, ({series(str(RUN_SIZE))}) p WHERE r.id > :first"), {"first": first})
        conn.execute(text(
            "INSERT INTO task_attempts (task_id, attempt, started_at, finished_at, outcome, charged, logs, logs_cut) "
            f"SELECT id, 1, created_at, created_at, 'succeeded', false, '{'x' * 199}' || char(10), 0 FROM tasks "
            "WHERE run_id > :first".replace("char(10)", "char(10)" if sqlite else "chr(10)")), {"first": first})
    with t.engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    t.close()


def prune_with_a_writer(url: str) -> tuple[service.storage.retention.PruneReport, list[float]]:
    t = service.open(url)
    waits: list[float] = []
    done = threading.Event()

    def writer() -> None:
        while not done.is_set():
            began = time.perf_counter()
            t.submit_run("echo", [{"i": 1}])
            waits.append(time.perf_counter() - began)
            done.wait(0.02)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        report = t.prune(30 * DAY_S)
    finally:
        done.set()
        thread.join()
        t.close()
    return report, waits


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench(label: str, url: str, n: int, workdir: Path) -> None:
    service.open(url).close()
    times = submit_jsonl(url, workdir)
    print(f"{label}: submit of a 10,000-task run from a JSONL file (tenure submit, a new process): "
          f"median {statistics.median(times):.2f} s of 3 ({', '.join(f'{x:.2f}' for x in times)})", flush=True)
    began = time.perf_counter()
    fill(url, n)
    print(f"{label}: history of {n:,} finished tasks with attempts and output made in "
          f"{time.perf_counter() - began:.0f} s", flush=True)
    report, waits = prune_with_a_writer(url)
    batches = [b * 1000 for b in report.batch_times]
    print(f"{label}: prune --older-than 30d deleted {report.runs:,} runs, {report.tasks:,} tasks, "
          f"{report.attempts:,} attempts in {report.seconds:.1f} s ({report.tasks / report.seconds:,.0f} tasks/s); "
          f"{report.batches:,} write transactions: median {statistics.median(batches):.1f} ms, "
          f"p99 {pct(batches, 0.99):.1f} ms, longest {max(batches):.1f} ms; a submit beside it every 20 ms "
          f"({len(waits)} of them): median {statistics.median(waits) * 1000:.1f} ms, "
          f"longest {max(waits) * 1000:.1f} ms", flush=True)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    backends = sys.argv[2].split(",") if len(sys.argv) > 2 else ["sqlite", "postgresql"]
    if "sqlite" in backends:
        with tempfile.TemporaryDirectory() as tmp:
            bench("SQLite", f"sqlite:///{tmp}/bench.db", n, Path(tmp))
    if "postgresql" not in backends:
        return
    admin = make_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"tenure_bench_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # noqa: BLE001 - no server: say so and stop
        print(f"PostgreSQL: skipped ({exc.__class__.__name__}: {str(exc).splitlines()[0]})")
        return
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bench("PostgreSQL", make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False), n,
                  Path(tmp))
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


if __name__ == "__main__":
    main()
