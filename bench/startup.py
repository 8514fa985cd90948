"""Start-up and recovery: how soon a new worker runs its first task, and where that time goes.

    .venv/bin/python bench/startup.py [REPEATS] [--against REV]

Rows (REPEATS, default 5, medians with every sample; SQLite and PostgreSQL):

1. ``tenure worker`` and ``tenure serve``, started with one ``echo`` task queued on a migrated
   database: seconds from the command's start to the task's ``succeeded`` (a poll every 2 ms).
2. Crash: 50 ``sleep`` tasks of 5 s (no failures) run by a worker; 2 s after they all started,
   the worker's whole tree (the worker, its zygote, its task processes) gets ``kill -9``, and a
   new worker starts at once. Seconds from that start to all 50 succeeded, and to the first
   re-claim; the tasks' own 5 s bound it from below.
3. Where the first task's time goes: the milestones of one ``tenure worker --log-level debug``
   start (its log's times, relative to the command's start), then what the imports cost by
   package (``python -X importtime``, which inflates them somewhat).

``--against REV`` measures rows 1 and 2 for the code at REV too (a ``git worktree``, run with
the same interpreter and packages), interleaved with today's, and prints the ratios. Commands
run as ``python -m web`` (what the ``tenure`` script runs) with the code's directory first on
``PYTHONPATH``. Prints figures; asserts nothing (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from isolation import descendants, free_port  # bench/isolation.py
from sqlalchemy import text

import service
from service.storage.db import make_engine

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("TENURE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
POLL_S = 0.002
SLEEP_S = 5.0
KILL_AFTER_S = 2.0
MILESTONES = [  # (log text, what it marks)
    ("worker.imported", "imports done, logging set up"),
    ("worker.database_open", "database opened, schema checked"),
    ("pool.zygote_started", "queues and schedules synced; supervisor starting"),
    ("supervisor.started", "supervisor registered, threads up"),
    ("attempt.started", "first claim committed"),
    ("pool.zygote_ready", "zygote ready (launched at the command's start)"),
    ("pool.forked", "first task process forked"),
    ("attempt.succeeded", "first task's end written"),
]


@contextmanager
def database(backend: str, tmp: Path) -> Iterator[str]:
    """A fresh, migrated database's URL."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp}/{uuid.uuid4().hex[:8]}.db"
        service.open(url).close()
        yield url
        return
    admin = make_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"tenure_startup_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    try:
        service.open(url).close()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def counter(url: str) -> Callable[[str], int]:
    """count(status): tasks in it; count("reclaimed"): attempts after a first one."""
    t = service.open(url, migrate=False)
    conn = t.engine.connect()

    def count(status: str) -> int:
        if status == "reclaimed":
            n = conn.execute(text("SELECT count(*) FROM task_attempts WHERE attempt > 1")).scalar_one()
        else:
            n = conn.execute(text("SELECT count(*) FROM tasks WHERE status = :s"), {"s": status}).scalar_one()
        conn.rollback()  # a fresh snapshot next time
        return int(n)

    return count


def wait_until(check: Callable[[], bool], timeout_s: float = 60) -> float:
    deadline = time.time() + timeout_s
    while not check():
        if time.time() > deadline:
            raise TimeoutError("the benchmark waited too long")
        time.sleep(POLL_S)
    return time.time()


def command(kind: str, url: str) -> list[str]:
    base = [sys.executable, "-m", "web", kind, "--db", url, "--log-level", "debug"]
    return [*base, "--port", str(free_port())] if kind == "serve" else base


def env_for(src: Path) -> dict[str, str]:
    """Commands run in ``src`` too: ``python -m`` puts the working directory first on sys.path."""
    return {**os.environ, "PYTHONPATH": str(src)}


def first_task(kind: str, url: str, log: Path, src: Path = REPO) -> float:
    t = service.open(url, migrate=False)
    t.submit_task("echo", {})
    t.close()
    count = counter(url)
    with log.open("w") as err:
        begin = time.time()
        proc = subprocess.Popen(command(kind, url), stdout=subprocess.DEVNULL, stderr=err, env=env_for(src), cwd=src)
        try:
            done = wait_until(lambda: count("succeeded") == 1)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    log.with_suffix(".begin").write_text(repr(begin))
    return done - begin


def crash(url: str, tmp: Path, src: Path = REPO) -> tuple[float, float]:
    t = service.open(url, migrate=False)
    t.submit_run(50, "sleep", {"min_seconds": SLEEP_S, "max_seconds": SLEEP_S, "failure_rate": 0,
                               "transient_rate": 0})
    t.close()
    count = counter(url)
    first = subprocess.Popen([sys.executable, "-m", "web", "worker", "--db", url], stdout=subprocess.DEVNULL,
                             stderr=(tmp / "crash-1.log").open("w"), env=env_for(src), cwd=src)
    wait_until(lambda: count("running") == 50)
    time.sleep(KILL_AFTER_S)  # the point of the row: tasks that ran 2 s when their worker died
    for pid in descendants(first.pid):  # the zygote is a session of its own: no process group
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    first.wait()
    begin = time.time()
    second = subprocess.Popen([sys.executable, "-m", "web", "worker", "--db", url], stdout=subprocess.DEVNULL,
                              stderr=(tmp / "crash-2.log").open("w"), env=env_for(src), cwd=src)
    try:
        reclaimed = wait_until(lambda: count("reclaimed") > 0)
        done = wait_until(lambda: count("succeeded") == 50, 60)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    return done - begin, reclaimed - begin


def milestones(log: Path) -> list[tuple[float, str]]:
    begin = float(log.with_suffix(".begin").read_text())
    seen: list[tuple[float, str]] = []
    lines = log.read_text().splitlines()
    for needle, meaning in MILESTONES:
        for line in lines:
            if needle in line:
                stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                seen.append((stamp - begin, f"{needle}: {meaning}"))
                break
    return sorted(seen)


def imports() -> list[tuple[str, float]]:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c",
                          "import web.cli; from service.supervisor import loop, metrics"],
                         capture_output=True, text=True, check=True).stderr
    by_package: collections.Counter[str] = collections.Counter()
    for m in re.finditer(r"import time:\s+(\d+) \|\s+\d+ \| *(\S+)", out):
        by_package[m.group(2).split(".")[0]] += int(m.group(1))
    return [(name, us / 1000) for name, us in by_package.most_common()]


def show(name: str, samples: list[float], before: list[float] | None = None) -> None:
    line = f"  {name:<52} median {statistics.median(samples):6.3f} s ({', '.join(f'{v:.3f}' for v in samples)})"
    if before:
        line += (f"; before {statistics.median(before):6.3f} s ({', '.join(f'{v:.3f}' for v in before)}), "
                 f"{statistics.median(samples) / statistics.median(before):.2f}x")
    print(line, flush=True)


@contextmanager
def worktree(rev: str | None) -> Iterator[Path | None]:
    if rev is None:
        yield None
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(path), rev], cwd=REPO, check=True)
        try:
            subprocess.run([sys.executable, "-m", "compileall", "-q", "service", "web", "migrations"], cwd=path,
                           check=True)
            yield path
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO, check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("repeats", nargs="?", type=int, default=5)
    parser.add_argument("--against", help="a git revision to measure beside today's code")
    options = parser.parse_args()
    repeats = options.repeats
    # As an installed package has them: with PYTHONDONTWRITEBYTECODE set (as on CI machines) an
    # editable install would compile tenure's own modules at every start, 0.15 s more.
    subprocess.run([sys.executable, "-m", "compileall", "-q", "service", "web", "migrations"], cwd=REPO, check=True)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; {repeats} repeats"
          + (f"; before = {options.against}" if options.against else ""))
    with tempfile.TemporaryDirectory() as tmp_name, worktree(options.against) as before_src:
        tmp = Path(tmp_name)
        last_log = tmp / "first.log"
        sources = [REPO] + ([before_src] if before_src else [])
        for backend in ("sqlite", "postgresql"):
            print(f"{backend}:")
            for kind in ("worker", "serve"):
                samples: dict[Path, list[float]] = {src: [] for src in sources}
                for _ in range(repeats):
                    for src in sources:  # interleaved
                        with database(backend, tmp) as url:
                            samples[src].append(first_task(kind, url, tmp / f"{kind}.log", src))
                        if backend == "sqlite" and kind == "worker" and src == REPO:
                            (tmp / "worker.log").replace(last_log)
                            (tmp / "worker.begin").replace(last_log.with_suffix(".begin"))
                show(f"tenure {kind}: start -> first task succeeded", samples[REPO],
                     samples[before_src] if before_src else None)
            done: dict[Path, list[float]] = {src: [] for src in sources}
            first: dict[Path, list[float]] = {src: [] for src in sources}
            for _ in range(max(1, repeats // 2)):
                for src in sources:
                    with database(backend, tmp) as url:
                        d, f = crash(url, tmp, src)
                    done[src].append(d)
                    first[src].append(f)
            show(f"crash: all 50 done after the new worker's start (tasks {SLEEP_S:g} s)", done[REPO],
                 done[before_src] if before_src else None)
            show("crash: first re-claim after the new worker's start", first[REPO],
                 first[before_src] if before_src else None)
        print("where the last SQLite `tenure worker` start went (from its log, after the command's start):")
        for at, what in milestones(last_log):
            print(f"  {at * 1000:7.0f} ms  {what}")
    print("imports of `tenure worker` by package (python -X importtime, self time; it inflates them):")
    rows = imports()
    rest, total = sum(ms for _, ms in rows[8:]), sum(ms for _, ms in rows)
    print("  " + ", ".join(f"{name} {ms:.0f} ms" for name, ms in rows[:8])
          + f"; {len(rows) - 8} others {rest:.0f} ms; total {total:.0f} ms")


if __name__ == "__main__":
    main()
