"""What process isolation costs: memory of the headline run, and recovery after kill -9.

    .venv/bin/python bench/isolation.py

1. Memory: `tenure serve` runs the headline run (50 `sleep` tasks at once). Sums the PSS
   (proportional set size: a page shared by n processes counts 1/n in each) of the server,
   its zygote and every task process, from /proc/PID/smaps_rollup; RSS for comparison.
2. Restart: kill -9 of `tenure serve` with the 50 tasks running, then a new `tenure serve`:
   the time from starting it to every interrupted task running again, and what was charged.

Prints figures; asserts nothing about speed (a benchmark, not a test).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from sqlalchemy import text

import service

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(db: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "web", "serve", "--db", str(db), "--port", str(port),
                             "--log-level", "WARNING"], cwd=REPO, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.02)
    raise SystemExit("tenure serve did not start")


def start_run(port: int, tasks: int, lo: float, hi: float) -> int:
    body = json.dumps({"tasks": tasks, "min_seconds": lo, "max_seconds": hi, "failure_rate": 0,
                       "transient_rate": 0, "seed": 11}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/runs", data=body, method="POST")
    with urllib.request.urlopen(req) as r:
        return int(json.load(r)["id"])


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def rollup(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in KiB."""
    pss = rss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    return pss, rss


def wait_until(predicate, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.01)


def memory(tmp: Path) -> None:
    db, port = tmp / "memory.db", free_port()
    proc = serve(db, port)
    t = service.open(str(db), migrate=False)
    try:
        run_id = start_run(port, 50, 20, 25)
        wait_until(lambda: t.run(run_id).counts["running"] == 50, 20)
        time.sleep(3)  # let every task settle into its sleep loop
        pids = descendants(proc.pid)
        figures = {pid: rollup(pid) for pid in pids}
        zygote = [pid for pid in pids if _ppid(pid) == proc.pid]  # serve's only child
        hosts = [pid for pid in pids if pid != proc.pid and pid not in zygote]
        total_pss = sum(p for p, _ in figures.values())
        total_rss = sum(r for _, r in figures.values())
        print("headline run in `tenure serve`: 50 sleep tasks running at once")
        for label, pid in [("tenure serve", proc.pid), *(("zygote", z) for z in zygote)]:
            pss, rss = figures[pid]
            print(f"  {label:<22} PSS {pss / 1024:6.1f} MB   RSS {rss / 1024:6.1f} MB")
        host_pss = sum(figures[h][0] for h in hosts) / 1024
        host_rss = sum(figures[h][1] for h in hosts) / 1024
        print(f"  {len(hosts)} task processes     PSS {host_pss:6.1f} MB   RSS {host_rss:6.1f} MB "
              f"({host_pss / max(1, len(hosts)):.1f} MB PSS each)")
        print(f"  total                  PSS {total_pss / 1024:6.1f} MB   RSS {total_rss / 1024:6.1f} MB"
              "   (target: PSS <= 400 MB)")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        t.close()


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def restart(tmp: Path) -> None:
    db, port = tmp / "restart.db", free_port()
    proc = serve(db, port)
    t = service.open(str(db), migrate=False)
    try:
        run_id = start_run(port, 50, 20, 25)
        wait_until(lambda: t.run(run_id).counts["running"] == 50, 20)
        time.sleep(1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        started = time.monotonic()
        proc = serve(db, port)
        answering = time.monotonic() - started

        def all_again() -> bool:
            with t.engine.connect() as conn:
                return conn.execute(text(
                    "SELECT count(*) FROM tasks WHERE run_id = :r AND status = 'running' AND attempts = 2"),
                    {"r": run_id}).scalar() == 50
        wait_until(all_again, 30)
        again = time.monotonic() - started
        with t.engine.connect() as conn:
            lost, charged = conn.execute(text(
                "SELECT sum(a.outcome = 'lost'), sum(a.charged) FROM task_attempts a JOIN tasks t ON t.id = a.task_id "
                "WHERE t.run_id = :r"), {"r": run_id}).one()
        print("kill -9 of `tenure serve` with 50 tasks running, then `tenure serve` again")
        print(f"  start -> serving pages           {answering:.3f} s")
        print(f"  start -> all 50 running again    {again:.3f} s   (target: <= 1 s)")
        print(f"  interrupted attempts: {lost} recorded as lost, {charged} charged")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        t.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        memory(Path(d))
        restart(Path(d))
