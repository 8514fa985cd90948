"""A worker's zygote starts before the worker's own imports, so the two overlap on two cores.

bench/startup.py measures what that saves; here: that it happens (the zygote process exists
before the worker has finished importing), and that only commands that run tasks launch one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

import service
from service.supervisor import early


@pytest.mark.parametrize(("args", "launches"), [
    (["worker"], True),
    (["worker", "--db", "x.db", "--queues", "a"], True),
    (["serve", "--port", "8001"], True),
    (["serve", "--no-worker"], False),  # pages only: no supervisor, no zygote
    (["worker", "--help"], False),
    (["submit", "--tasks", "3"], False),
    ([], False),
])
def test_only_commands_that_run_tasks_launch_a_zygote_early(
        monkeypatch: pytest.MonkeyPatch, args: list[str], launches: bool) -> None:
    launched = []
    monkeypatch.setattr(early, "start_early", lambda: launched.append(True))
    early.start_for(args)
    assert bool(launched) == launches


def started_ticks(pid: int) -> int:
    """The process's start in clock ticks since boot (exact to a tick, unlike /proc/stat's whole-second btime)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def logged_at(log: str, event: str) -> float:
    line = next(line for line in log.splitlines() if event in line)
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_the_zygote_starts_before_the_worker_has_imported_and_runs_its_first_task(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    t = service.open(url)
    task_id = t.submit_task("echo", {"n": 1})
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log_file:
        launched = time.time()
        worker = subprocess.Popen([sys.executable, "-m", "service", "worker", "--db", url, "--log-level", "debug"],
                                  stderr=log_file)
    try:
        assert t.wait_task(task_id, timeout_s=60).status == "succeeded"
        log = log_path.read_text()
        zygote = int(re.search(r"pool.zygote_started pid=(\d+)", log).group(1))  # type: ignore[union-attr]
        # The zygote's start as a Unix time: the worker's (no earlier than `launched`) plus the ticks between them.
        zygote_at = launched + (started_ticks(zygote) - started_ticks(worker.pid)) / os.sysconf("SC_CLK_TCK")
        imported_at = logged_at(log, "worker.imported")
        assert zygote_at < imported_at - 0.05, f"zygote {zygote_at:.3f}, imports done {imported_at:.3f}\n{log}"
    finally:
        worker.terminate()
        assert worker.wait(30) == 0
        t.close()
