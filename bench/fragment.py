"""Web benchmark: what one status poll costs for a 50-task run (and a 500-task one).

    .venv/bin/python bench/fragment.py

Runs `tenure serve --no-worker` on a scratch database holding a mid-run snapshot (tasks in
every status, with progress and errors), then times full fragment renders (200) and
unchanged-run polls (304) over real HTTP on loopback, and counts the SQL statements of each.
Prints figures; asserts nothing about speed.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2 as httpx
from sqlalchemy import event, text

import service
from web.app import create_app

REPO = Path(__file__).resolve().parents[1]
ROUNDS = 300


def seed(db: Path, tasks: int) -> int:
    t = service.open(str(db))
    run_id = t.submit_run(tasks, "sleep", {"seed": 1}, name="bench")
    with t.engine.begin() as conn:  # a mid-run mix: done, failed, running at various progress
        conn.execute(text("UPDATE tasks SET status = 'succeeded', progress = 1, attempts = 1, result = '{}', "
                          "started_at = created_at, finished_at = created_at WHERE position % 4 = 0"))
        conn.execute(text("UPDATE tasks SET status = 'failed', attempts = 3, error = 'PermanentError: boom', "
                          "started_at = created_at, finished_at = created_at WHERE position % 4 = 1"))
        conn.execute(text("UPDATE tasks SET status = 'running', attempts = 1, progress = 0.4, "
                          "started_at = created_at WHERE position % 4 = 2"))
    t.close()
    return run_id


def timed(client: httpx.Client, url: str, headers: dict[str, str], expect: int) -> list[float]:
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        response = client.get(url, headers=headers)
        samples.append((time.perf_counter() - start) * 1000)
        assert response.status_code == expect, response.status_code
    return samples


def queries(db: Path, run_id: int, etag: str | None) -> int:
    from starlette.testclient import TestClient

    app = create_app(str(db), supervise=False)
    with TestClient(app) as c:
        seen: list[str] = []
        engine = app.state.tenure.engine
        listener = lambda *a: seen.append(a[2]) if not str(a[2]).startswith("BEGIN") else None  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        c.get(f"/runs/{run_id}/status", headers={"If-None-Match": etag} if etag else {})
        event.remove(engine, "before_cursor_execute", listener)
    return len(seen)


def report(tasks: int, tmp: Path) -> None:
    db = tmp / f"bench{tasks}.db"
    run_id = seed(db, tasks)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "web", "serve", "--no-worker", "--db", str(db),
                             "--port", str(port), "--log-level", "WARNING"], cwd=REPO, env=dict(os.environ))
    try:
        url = f"http://127.0.0.1:{port}/runs/{run_id}/status"
        with httpx.Client(timeout=5) as client:
            for _ in range(100):
                try:
                    first = client.get(url)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            etag = first.headers["etag"]
            full = timed(client, url, {}, 200)
            cached = timed(client, url, {"If-None-Match": etag}, 304)
    finally:
        proc.terminate()
        proc.wait(10)
    wire = first.num_bytes_downloaded
    print(f"status fragment, {tasks} tasks ({len(first.content):,} bytes, {wire:,} gzipped on the wire), "
          f"{ROUNDS} polls each over loopback HTTP")
    print(f"  200 render  median {statistics.median(full):.2f} ms  p95 {sorted(full)[int(ROUNDS * .95)]:.2f} ms"
          f"  {queries(db, run_id, None)} SQL statements")
    print(f"  304 poll    median {statistics.median(cached):.2f} ms  p95 {sorted(cached)[int(ROUNDS * .95)]:.2f} ms"
          f"  {queries(db, run_id, etag)} SQL statements, 0 bytes of body")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        report(50, Path(d))
        report(500, Path(d))
