"""What full durability costs on SQLite: TENURE_SQLITE_SYNC=normal (the default) against full.

    .venv/bin/python bench/durability.py [SUBMITS] [TASKS] [REPEATS] [DIR]

For each level, interleaved, REPEATS times (default 3), each on a fresh database file in DIR
(default: a temporary directory; it must be on the disk you mean to measure, not a tmpfs):

1. SUBMITS (default 1000) `echo` tasks submitted one by one with ``submit_task`` (one write
   transaction, one commit each), no worker running: submits per second.
2. TASKS (default 2000) `sleep` tasks of 0 s as one run, drained by one `tenure worker` started
   first (as in bench/throughput.py), submission to run completion: tasks per second. Every
   claim, group commit and heartbeat is a commit, so this is where a sync per commit shows.

Both the submitting process and the worker run at the level measured. Prints medians with
every sample; asserts nothing (a benchmark, not a test).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import throughput  # bench/throughput.py: measure() starts a worker and times a drain

import service

LEVELS = ("normal", "full")


def submits_per_s(db: Path, level: str, submits: int) -> float:
    t = service.open(str(db), sqlite_sync=level)
    try:
        start = time.monotonic()
        for _ in range(submits):
            t.submit_task("echo", {})
        return submits / (time.monotonic() - start)
    finally:
        t.close()


def drained_per_s(db: Path, level: str, tasks: int) -> float:
    """One worker draining ``tasks`` no-ops, both it and this process at sync ``level`` (bench/throughput.py)."""
    os.environ["TENURE_SQLITE_SYNC"] = level  # read by this process's open and by the worker it starts
    try:
        return float(throughput.measure(str(db), 1, tasks))
    finally:
        del os.environ["TENURE_SQLITE_SYNC"]


def filesystem(path: Path) -> str:
    """The mount under ``path`` and its type, from /proc/mounts (Linux)."""
    best = ("?", "?")
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                _dev, mount, kind = line.split()[:3]
                if str(path.resolve()).startswith(mount) and len(mount) >= len(best[0]):
                    best = (mount, kind)
    except OSError:
        pass
    return f"{best[1]} mounted at {best[0]}"


def main() -> None:
    submits = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    tasks = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    with tempfile.TemporaryDirectory(dir=sys.argv[4] if len(sys.argv) > 4 else None) as tmp:
        where = Path(tmp)
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; databases on "
              f"{filesystem(where)}; medians of {repeats}")
        found: dict[tuple[str, str], list[float]] = {}
        for i in range(repeats):
            for level in LEVELS:
                found.setdefault((level, "submit"), []).append(submits_per_s(where / f"s-{level}-{i}.db", level,
                                                                             submits))
                found.setdefault((level, "drain"), []).append(drained_per_s(where / f"d-{level}-{i}.db", level, tasks))
        for what, label in (("submit", f"{submits} submits one by one, no worker"),
                            ("drain", f"{tasks} tasks of 0 s drained by one worker")):
            print(label)
            for level in LEVELS:
                samples = found[(level, what)]
                print(f"  {level:<6} {statistics.median(samples):7.0f} /s   "
                      f"({', '.join(f'{s:.0f}' for s in samples)})")
        print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
