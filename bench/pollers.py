"""Many browsers watching one live big run: poll latency, and what the watching costs the run.

    .venv/bin/python bench/pollers.py [TASKS] [POLLERS]

On SQLite: `tenure serve --no-worker` and one `tenure worker` (default concurrency) over a run of
TASKS (default 10,000) `sleep` tasks of 0.05-0.15 s. Twice: once with nobody watching, once with
POLLERS (default 100) clients each polling the run's status fragment every second with its ETag,
as the page does (304 when nothing changed). Prints the run's throughput each time and the poll
latency (median, p99, max; 200s and 304s counted apart). Asserts nothing (a benchmark).
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2 as httpx

import service

REPO = Path(__file__).resolve().parents[1]
PARAMS = {"min_seconds": 0.05, "max_seconds": 0.15, "failure_rate": 0, "transient_rate": 0, "seed": 3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def watch(url: str, pollers: int, done: asyncio.Event) -> list[tuple[int, float]]:
    samples: list[tuple[int, float]] = []
    limits = httpx.Limits(max_connections=pollers, max_keepalive_connections=pollers)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        async def one(offset: float) -> None:
            await asyncio.sleep(offset)  # spread the pollers over the second, as real browsers are
            etag = None
            while not done.is_set():
                started = time.perf_counter()
                response = await client.get(url, headers={"If-None-Match": etag} if etag else {})
                samples.append((response.status_code, time.perf_counter() - started))
                etag = response.headers.get("etag", etag)
                await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - started)))

        await asyncio.gather(*(one(i / pollers) for i in range(pollers)))
    return samples


def drain(tmp: Path, tasks: int, pollers: int) -> tuple[float, list[tuple[int, float]]]:
    db = tmp / f"p{pollers}.db"
    t = service.open(str(db))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "web", "serve", "--no-worker", "--db", str(db), "--port",
                               str(port), "--log-level", "WARNING"], cwd=REPO, env=dict(os.environ))
    worker = subprocess.Popen([sys.executable, "-m", "service", "worker", "--db", str(db), "--log-level", "WARNING"],
                              cwd=REPO)
    try:
        warm = t.submit_task("echo", {})
        t.wait_task(warm, 30)
        run_id = t.submit_run(tasks, "sleep", PARAMS)
        url = f"http://127.0.0.1:{port}/runs/{run_id}/status"
        for _ in range(100):
            try:
                httpx.get(url, timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.1)

        async def main() -> list[tuple[int, float]]:
            done = asyncio.Event()
            watching = asyncio.create_task(watch(url, pollers, done)) if pollers else None
            while t.run(run_id).status == "running":
                await asyncio.sleep(0.05)
            done.set()
            return await watching if watching else []

        samples = asyncio.run(main())
        run = t.run(run_id)
        assert run.finished_at is not None
        took = (run.finished_at - run.created_at).total_seconds()
        print(f"  {pollers:3d} pollers: {run.counts['succeeded']:,} of {tasks:,} succeeded in {took:.1f} s, "
              f"{tasks / took:,.0f} tasks/s")
        return tasks / took, samples
    finally:
        for proc in (worker, server):
            proc.terminate()
            proc.wait(30)
        t.close()


def figures(ms: list[float]) -> str:
    if not ms:
        return "none"
    ms = sorted(ms)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return f"n={len(ms):5d} median {statistics.median(ms):6.1f} ms  p99 {p99:6.1f} ms  max {ms[-1]:6.1f} ms"


def main() -> None:
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    pollers = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    print(f"machine: {os.cpu_count()} cores; a live run of {tasks:,} sleep tasks of 0.05-0.15 s on SQLite, "
          f"`tenure serve --no-worker` + one `tenure worker`")
    with tempfile.TemporaryDirectory() as d:
        alone, _ = drain(Path(d), tasks, 0)
        watched, samples = drain(Path(d), tasks, pollers)
    print(f"  throughput with {pollers} pollers: {watched / alone:.0%} of unwatched ({1 - watched / alone:+.0%} drop)")
    print(f"  all polls  {figures([s * 1000 for _, s in samples])}")
    print(f"  200s       {figures([s * 1000 for code, s in samples if code == 200])}")
    print(f"  304s       {figures([s * 1000 for code, s in samples if code == 304])}")


if __name__ == "__main__":
    main()
