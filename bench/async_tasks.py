"""Async tasks: 10,000 tasks each awaiting 5 s, on one worker, on SQLite.

    .venv/bin/python bench/async_tasks.py [TASKS] [SECONDS]

Starts one ``tenure worker --concurrency TASKS`` that imports the kind of bench/async_kind.py
(an ``async def run()`` awaiting ``asyncio.sleep(SECONDS)``), waits until it is registered,
submits one run of TASKS tasks, and times submission to the last task's end. Meanwhile it samples, every 20 ms,
the resident memory of the worker and every process below it (its zygote and task processes):
the peak of their sum is printed, with each process's own high-water mark (VmHWM) and the
proportional share (PSS, shared pages split between the processes that map them) at the peak.

The goal it checks: 10,000 tasks of 5 s end within 7 s of submission, in at most 300 MB.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import text

import service

sys.path.insert(0, str(Path(__file__).resolve().parent))
from async_kind import KIND  # registers the kind here too, for the submission

REPO = Path(__file__).resolve().parents[1]


def tree(root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith(field + ":")), 0)
    except OSError:
        return 0


def pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("Pss:")), 0)
    except OSError:
        return 0


class Sampler(threading.Thread):
    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.peak_rss_kb = 0
        self.peak_pss_kb = 0
        self.peak_processes = 0
        self.hwm_kb: dict[int, int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            pids = tree(self.root)
            rss = sum(status_kb(pid, "VmRSS") for pid in pids)
            if rss > self.peak_rss_kb:
                self.peak_rss_kb, self.peak_processes = rss, len(pids)
                self.peak_pss_kb = sum(pss_kb(pid) for pid in pids)
            for pid in pids:
                self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), status_kb(pid, "VmHWM"))


def main() -> None:
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    with tempfile.TemporaryDirectory() as d:
        url = f"sqlite:///{Path(d) / 'bench.db'}"
        t = service.open(url)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "bench"), str(REPO)])}
        worker = subprocess.Popen([sys.executable, "-m", "service", "worker", "--db", url, "--import", "async_kind",
                                   "--concurrency", str(tasks), "--log-level", "WARNING"], cwd=REPO, env=env)
        sampler = Sampler(worker.pid)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with t.engine.connect() as conn:
                    if conn.execute(text("SELECT count(*) FROM supervisors WHERE stopped_at IS NULL")).scalar():
                        break
                time.sleep(0.05)  # waiting for the worker to register: a poll, not a measurement
            time.sleep(1.0)  # let its spare task processes come up, as a worker that has been running has
            sampler.start()
            start = time.monotonic()
            run_id = t.submit_run(tasks, KIND, {"seconds": seconds}, max_attempts=1)
            submitted = time.monotonic() - start
            run = t.wait_run(run_id, 600, poll_s=0.02)
            elapsed = time.monotonic() - start
            sampler.done.set()
            sampler.join()
            with t.engine.connect() as conn:  # where the time went, by the database's clock
                since = "(julianday({}) - julianday(min(created_at))) * 86400"
                timeline = conn.execute(text(
                    "SELECT " + ", ".join(since.format(f"{agg}({col})") for agg, col in (
                        ("min", "started_at"), ("max", "started_at"), ("min", "finished_at"), ("max", "finished_at")))
                    + " FROM tasks WHERE run_id = :run"), {"run": run_id}).one()
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
            t.close()
    ok = run.counts.get("succeeded", 0)
    print(f"{tasks} async tasks awaiting {seconds:g} s each, one worker (--concurrency {tasks}), SQLite")
    print(f"  submission (one run of {tasks} tasks) took   {submitted:6.2f} s")
    print(f"  submission to the last task's end        {elapsed:6.2f} s  ({ok} succeeded)")
    print("  from submission: first start {:.2f} s, last start {:.2f} s, first end {:.2f} s, last end {:.2f} s"
          .format(*timeline))
    print(f"  peak resident memory, worker + its processes: {sampler.peak_rss_kb / 1024:6.0f} MB RSS, "
          f"{sampler.peak_pss_kb / 1024:.0f} MB PSS, {sampler.peak_processes} processes")
    hwm = sorted(sampler.hwm_kb.items(), key=lambda item: -item[1])
    print("  high-water marks (VmHWM): " + ", ".join(f"pid {pid} {kb / 1024:.0f} MB" for pid, kb in hwm))
    goal = elapsed <= seconds + 2.0 and sampler.peak_rss_kb <= 300 * 1024 and ok == tasks
    print(f"  goal (within {seconds + 2:g} s, at most 300 MB): {'met' if goal else 'NOT met'}")


if __name__ == "__main__":
    main()
