"""Web benchmark: what one status poll costs for a 50-task run, a 500-task one and a 10,000-task one.

    .venv/bin/python bench/fragment.py

Runs `tenure serve --no-worker` on a scratch database holding a mid-run snapshot (tasks in
every status, with progress and errors), then times full fragment renders (200) and
unchanged-run polls (304) over real HTTP on loopback, and the server's own time for each (the
app called in-process, no HTTP), and counts the SQL statements of each. The 50- and 500-task
runs are a quarter in each of four statuses; the 10,000-task run is what a run of that size
looks like mid-way (a running task is a process: 64 run at once). Prints figures; asserts
nothing about speed.
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
BIG = 10_000


def seed(db: Path, tasks: int) -> int:
    t = service.open(str(db))
    run_id = t.submit_run(tasks, "sleep", {"seed": 1}, name="bench")
    if tasks >= BIG:  # 60 % done (12 failed), 64 running, a few retrying, the rest queued
        succeeded, failed, running = "position < 6000", "position % 500 = 7", "position BETWEEN 6000 AND 6063"
        retrying = "position > 6063 AND position % 400 = 3"
    else:  # a quarter each: done, failed, running at various progress, queued
        succeeded, failed, running, retrying = "position % 4 = 0", "position % 4 = 1", "position % 4 = 2", "0 = 1"
    with t.engine.begin() as conn:
        conn.execute(text("UPDATE tasks SET status = 'succeeded', progress = 1, attempts = 1, result = '{}', "
                          f"started_at = created_at, finished_at = created_at WHERE {succeeded}"))
        conn.execute(text("UPDATE tasks SET status = 'failed', attempts = 3, error = 'PermanentError: boom', "
                          f"started_at = created_at, finished_at = created_at WHERE {failed}"))
        conn.execute(text("UPDATE tasks SET status = 'running', attempts = 1, progress = 0.4, "
                          f"started_at = created_at WHERE {running}"))
        conn.execute(text("UPDATE tasks SET status = 'retrying', attempts = 1, charged = 1, error = 'flaky' "
                          f"WHERE {retrying}"))
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

    app = create_app(str(db), supervise=False, allowed_hosts=["testserver"])
    with TestClient(app) as c:
        seen: list[str] = []
        engine = app.state.tenure.engine
        listener = lambda *a: seen.append(a[2]) if not str(a[2]).startswith("BEGIN") else None  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        answer = c.get(f"/runs/{run_id}/status", headers={"If-None-Match": etag} if etag else {})
        assert answer.status_code == (304 if etag else 200), answer.status_code
        event.remove(engine, "before_cursor_execute", listener)
    return len(seen)


def server_times(db: Path, run_id: int, etag: str) -> tuple[list[float], list[float]]:
    """The app's own time per poll, called in-process as uvicorn calls it: no sockets, no HTTP parsing."""
    import asyncio

    app = create_app(str(db), supervise=False)
    path = f"/runs/{run_id}/status"

    async def poll(tag: str | None) -> float:
        answered: list[object] = []

        headers = [(b"host", b"127.0.0.1"), (b"accept-encoding", b"gzip")]
        if tag:
            headers.append((b"if-none-match", tag.encode()))
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
                 "path": path, "raw_path": path.encode(), "query_string": b"", "headers": headers,
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "root_path": "", "state": {}}

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, object]) -> None:
            if message["type"] == "http.response.start":
                answered.append(message["status"])

        start = time.perf_counter()
        await app(scope, receive, send)
        elapsed = (time.perf_counter() - start) * 1000
        assert answered == [304 if tag else 200], answered
        return elapsed

    async def main() -> tuple[list[float], list[float]]:
        async with app.router.lifespan_context(app):
            app.state.tenure.run_status(run_id)  # warm the connection pool and the statement cache
            full = [await poll(None) for _ in range(ROUNDS)]
            cached = [await poll(etag) for _ in range(ROUNDS)]
        return full, cached

    return asyncio.run(main())


def figures(samples: list[float]) -> str:
    ordered = sorted(samples)
    return (f"median {statistics.median(samples):6.2f} ms  p95 {ordered[int(len(ordered) * .95)]:6.2f}"
            f"  p99 {ordered[int(len(ordered) * .99)]:6.2f}")


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
    server_full, server_cached = server_times(db, run_id, etag)
    print(f"status fragment, {tasks:,} tasks ({len(first.content):,} bytes, {wire:,} gzipped on the wire), "
          f"{ROUNDS} polls each")
    print(f"  200 render  over HTTP {figures(full)}   server {figures(server_full)}"
          f"   {queries(db, run_id, None)} SQL statements")
    print(f"  304 poll    over HTTP {figures(cached)}   server {figures(server_cached)}"
          f"   {queries(db, run_id, etag)} SQL statements, 0 bytes of body")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        for size in (50, 500, BIG):
            report(size, Path(d))
