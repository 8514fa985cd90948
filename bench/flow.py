"""Flow control: what a claim costs with limits in force, throughput of an unlimited queue, an idle
worker over 100 queues and a big history, and how fast a resume starts work.

    .venv/bin/python bench/flow.py [--base REV] [--history N] [--idle-s S] [--tasks N] [--quick]

For SQLite and PostgreSQL, each part on fresh databases, side by side with the code before flow
control (``--base``, default ``0779445``, checked out in a temporary ``git worktree``):

1. **Claim cost**, in-process, median and p99 of 180 (after 20 to warm up): one due task submitted,
   then the supervisor's two steps (``anything_due`` then ``claim``) timed, then the task
   finished; at most 50 claims a second. *base*: the code before; *unlimited*: the default queue
   today; *queue*: a queue limited to 8 running; *key*: tasks of a key limited to 2 running;
   *rate*: a queue limited to 100 starts/s; *all*: a queue limited to 8 running and 100 starts/s,
   its tasks of a key limited to 2 running and 100 starts/s (every lock and count of claims.py);
   *nothing can start*: a limited queue paused with work waiting (what an idle worker pays at
   each poll). Two rounds, interleaved, the better of each.
2. **Throughput of an unlimited queue**: one `tenure worker` (default settings), TASKS (default
   2,000) `sleep` tasks of 0 s in one run, submission to completion; base vs today, best of 2.
3. **Idle CPU**: 100 queues (40 with limits and rates, 10 paused with work waiting, 1 at its
   limit with work waiting, held by a lease this process heartbeats) over HISTORY (default
   1,000,000) finished tasks; one idle `tenure worker` for IDLE_S (default 30): its CPU and its
   task processes' as a share of one core.
4. **Resume**: an idle worker, a paused queue with one task waiting; resume; the first start minus
   the resume (both by the database's clock), 20 times.

Targets (issue 19): a claim with limits at most 2x the base; unlimited throughput not lower; idle
< 2 % of a core; resume to start <= 20 ms. Prints a table and writes bench/results/flow.json.
Asserts nothing (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

import service
from service.storage.db import make_engine
from service.storage.leases import Leases

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from idle import cpu_ticks, fill  # noqa: E402 - the history of bench/idle.py

PG_ADMIN = os.environ.get("TENURE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
QUICK = {"failure_rate": 0, "transient_rate": 0}

# Runs in a child process with either code (cwd and sys.path set to it): prints one JSON line.
CLAIM_COST = r'''
import json, statistics, sys, time
import service
from service.storage.leases import Leases
from service.storage.models import Outcome
url, mode = sys.argv[1], sys.argv[2]
t = service.open(url)
leases = Leases(t.engine)
me = leases.register("bench", 1, None, None)
extra = {}
if mode in ("queue", "all", "blocked"):
    t.set_queue("api", concurrency=8, rate="100/s" if mode == "all" else None)
    extra["queue"] = "api"
if mode == "rate":
    t.set_queue("api", rate="100/s")
    extra["queue"] = "api"
if mode in ("key", "all"):
    t.set_key("partner", concurrency=2, rate="100/s" if mode == "all" else None)
    extra["key"] = "partner"
if mode == "blocked":
    t.submit_task("echo", {}, **extra)
    t.pause_queue("api")
times = []
for _ in range(200):
    if mode != "blocked":
        t.submit_task("echo", {}, **extra)
    time.sleep(0.02)  # at most 50 claims a second: a rate of 100/s is in force and never reached
    started = time.perf_counter()
    found = leases.anything_due()
    got = leases.claim(me, 64, found) if found else []
    times.append(time.perf_counter() - started)
    assert len(got) == (0 if mode == "blocked" else 1), (mode, got)
    for lease in got:
        leases.finish(lease, me, outcome=Outcome.SUCCEEDED, result=1)
times = sorted(times[20:])
print(json.dumps({"p50_ms": statistics.median(times) * 1000, "p99_ms": times[int(len(times) * 0.99) - 1] * 1000}))
'''


def fresh(backend: str, tmp: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp / f'{uuid.uuid4().hex[:8]}.db'}"
    name = f"tenure_flow_{uuid.uuid4().hex[:8]}"
    admin = make_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)


def drop(url: str) -> None:
    if url.startswith("postgresql"):
        admin = make_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
        admin.dispose()


def in_code(code: Path, *args: str, script: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "service", *args]
    return subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True, check=True, timeout=600)


def claim_cost(code: Path, backend: str, mode: str, tmp: Path) -> dict[str, float]:
    url = fresh(backend, tmp)
    try:
        in_code(code, "migrate", "--db", url)
        return dict(json.loads(in_code(code, url, mode, script=CLAIM_COST).stdout.strip().splitlines()[-1]))
    finally:
        drop(url)


def worker(code: Path, url: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "service", "worker", "--db", url, "--log-level", "WARNING", *extra],
                            cwd=code, env={**os.environ, "PYTHONPATH": str(code)})


def live(url: str, n: int) -> None:
    engine = make_engine(url)
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if conn.execute(text("SELECT count(*) FROM supervisors WHERE stopped_at IS NULL")).scalar() == n:
                    return
            time.sleep(0.05)
        raise RuntimeError("the worker did not register")
    finally:
        engine.dispose()


def throughput(code: Path, backend: str, tasks: int, tmp: Path) -> float:
    url = fresh(backend, tmp)
    try:
        in_code(code, "migrate", "--db", url)
        proc = worker(code, url)
        try:
            live(url, 1)
            submit = ("import service, sys, time; t = service.open(sys.argv[1], migrate=False); s = time.monotonic()"
                      "; r = t.submit_run(int(sys.argv[2]), 'sleep', {'min_seconds': 0, 'max_seconds': 0, "
                      "'failure_rate': 0, 'transient_rate': 0}); t.wait_run(r, 600, poll_s=0.01)"
                      "; print(int(sys.argv[2]) / (time.monotonic() - s))")
            return float(in_code(code, url, str(tasks), script=submit).stdout.strip().splitlines()[-1])
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    finally:
        drop(url)


def idle_cpu(backend: str, history: int, idle_s: float, tmp: Path) -> dict[str, Any]:
    url = fresh(backend, tmp)
    t = service.open(url)
    fill(url, history)
    for i in range(100):
        name = f"q{i:03d}"
        if i < 40:
            t.set_queue(name, concurrency=4, rate="10/s")
        elif i < 50:
            t.set_queue(name)
            t.submit_run(5, "echo", queue=name)
            t.pause_queue(name)
        elif i == 50:
            t.set_queue(name, concurrency=1)
            t.submit_run(3, "echo", queue=name)
        else:
            t.set_queue(name)
    leases = Leases(t.engine)
    holder = leases.register("bench-holder", os.getpid(), None, None, heartbeat_s=1.0, lease_ttl_s=30.0)
    held = leases.claim(holder, 1, served=["q050"])  # q050 at its limit of 1, two tasks waiting behind it
    stop = threading.Event()
    beat = threading.Thread(target=lambda: [leases.heartbeat(holder) for _ in iter(lambda: stop.wait(1.0), True)],
                            daemon=True)
    beat.start()
    proc = worker(REPO, url)
    try:
        live(url, 2)
        time.sleep(5)  # start-up done, spare task processes forked
        before, start = cpu_ticks(proc.pid), time.monotonic()
        time.sleep(idle_s)
        used = (cpu_ticks(proc.pid) - before) / os.sysconf("SC_CLK_TCK")
        with t.engine.connect() as conn:
            started = conn.execute(text("SELECT count(*) FROM task_attempts WHERE supervisor_id <> :h"),
                                   {"h": holder}).scalar_one()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        stop.set()
        beat.join()
        t.close()
        drop(url)
    return {"cpu_pct": 100 * used / (time.monotonic() - start), "idle_s": idle_s, "history": history,
            "held": len(held), "started_while_idle": int(started)}


def resume_latency(backend: str, tmp: Path, reps: int = 20) -> dict[str, float]:
    url = fresh(backend, tmp)
    t = service.open(url)
    t.set_queue("later")
    proc = worker(REPO, url)
    lags = []
    try:
        live(url, 1)
        t.wait_task(t.submit_task("echo", {}), 30)  # warm
        for _ in range(reps):
            t.pause_queue("later")
            task = t.submit_task("echo", {}, queue="later")
            time.sleep(0.3)  # the worker idles: it saw the paused queue and went back to sleep
            t.resume_queue("later")
            t.wait_task(task, 30, poll_s=0.005)
            with t.engine.connect() as conn:
                resumed, started = conn.execute(text(
                    "SELECT q.updated_at, a.started_at FROM queues q, task_attempts a WHERE q.name = 'later' "
                    "AND a.task_id = :id"), {"id": task}).one()
            lags.append((when(started) - when(resumed)).total_seconds() * 1000)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        t.close()
        drop(url)
    lags.sort()
    return {"n": len(lags), "p50_ms": statistics.median(lags), "max_ms": lags[-1]}


def when(value: Any) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="0779445")
    parser.add_argument("--history", type=int, default=1_000_000)
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="history 100,000, idle 10 s, 1,000 tasks")
    parser.add_argument("--parts", default="claim,throughput,idle,resume", help="which parts to measure")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], help="one backend only")
    args = parser.parse_args()
    if args.quick:
        args.history, args.idle_s, args.tasks = 100_000, 10.0, 1000
    tmp = Path(tempfile.mkdtemp())
    base = tmp / "base"
    subprocess.run(["git", "worktree", "add", "--detach", str(base), args.base], cwd=REPO, check=True,
                   capture_output=True)
    out: dict[str, Any] = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "base": args.base,
                           "cpus": os.cpu_count(), "backends": {}}
    try:
        parts = set(args.parts.split(","))
        for backend in [args.backend] if args.backend else ["sqlite", "postgresql"]:
            figures: dict[str, Any] = {}
            if "claim" in parts:
                # Interleaved, three rounds, the best of each: the machine's noise weighs alike on both codes.
                modes = [("base", base, "unlimited")] + [(m, REPO, m) for m in ("unlimited", "queue", "key", "rate",
                                                                                 "all", "blocked")]
                rounds = [{label: claim_cost(code, backend, mode, tmp) for label, code, mode in modes}
                          for _ in range(2)]
                c = figures["claim"] = {label: {k: min(r[label][k] for r in rounds) for k in ("p50_ms", "p99_ms")}
                                        for label, _, _ in modes}
                b = c["base"]["p50_ms"]
                print(f"{backend}: claim p50 base {b:.2f} ms; " + ", ".join(
                    f"{label} {c[label]['p50_ms']:.2f} ({c[label]['p50_ms'] / b:.2f}x)" for label, _, _ in modes[1:])
                    + f"; p99 base {c['base']['p99_ms']:.2f}, all {c['all']['p99_ms']:.2f}")
            if "throughput" in parts:
                r = figures["throughput"] = {label: max(throughput(code, backend, args.tasks, tmp) for _ in range(2))
                                             for label, code in (("base", base), ("today", REPO))}
                print(f"{backend}: unlimited throughput base {r['base']:.0f}/s, today {r['today']:.0f}/s "
                      f"({r['today'] / r['base']:.2f}x)")
            if "idle" in parts:
                i = figures["idle"] = idle_cpu(backend, args.history, args.idle_s, tmp)
                print(f"{backend}: idle worker over 100 queues and {i['history']:,} finished tasks: "
                      f"{i['cpu_pct']:.2f} % "
                      f"of a core over {i['idle_s']:g} s ({i['started_while_idle']} started while held back or paused)")
            if "resume" in parts:
                z = figures["resume"] = resume_latency(backend, tmp)
                print(f"{backend}: resume to first start p50 {z['p50_ms']:.1f} ms, max {z['max_ms']:.1f} ms "
                      f"(n={z['n']})")
            figures["loadavg"] = os.getloadavg()
            out["backends"][backend] = figures
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    name = "flow-quick.json" if args.quick or args.parts != parser.get_default("parts") else "flow.json"
    (REPO / "bench" / "results" / name).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote bench/results/{name}")


if __name__ == "__main__":
    main()
