"""Processes whose wall clocks are two hours off, on one host, sharing one run (Debian's faketime).

The submitter and the web process run two hours ahead, one worker two hours behind, another
on time. Due times
come from the database's clock (PostgreSQL) or are swept when they lie beyond any honest
backoff (SQLite), and same-host liveness compares start ticks, not wall times: the run ends
with every task succeeded and no lease taken from a live supervisor. An acceptance test:
about 10 s per backend; skipped with the reason where faketime is missing (CI installs it).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import service
from tests.acceptance.procs import JSON, REPO, free_port, stop_all
from tests.conftest import report, wait_for

pytestmark = [pytest.mark.acceptance,
              pytest.mark.skipif(shutil.which("faketime") is None and os.environ.get("CI") != "true",
                                 reason="Debian's faketime is not installed (apt-get install faketime)")]


def skewed(offset: str, *args: str, log: Path, env: dict[str, str] | None = None,
           module: str = "service") -> subprocess.Popen[bytes]:
    """`python -m service ARGS` with its wall clock moved by ``offset`` ("" for none).

    Only the wall clock: a stepped or skewed clock never moves CLOCK_MONOTONIC, and faking that
    too (faketime's default) breaks every timed wait in the process, which is not the fault
    being tested.
    """
    # libfaketime preloaded into python itself, not the `faketime` wrapper: the wrapper does not
    # pass SIGTERM on, so stopping it left the python process running after the test.
    fake = {"LD_PRELOAD": _libfaketime(), "FAKETIME": offset} if offset else {}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", module, *args],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "FAKETIME_DONT_FAKE_MONOTONIC": "1", **fake, **(env or {})})


def _libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    assert found, "Debian's faketime package puts libfaketime.so.1 under /usr/lib/<arch>/faketime/"
    return found[0]


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError):
        return False


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_clocks_two_hours_apart_on_one_host_share_a_run(backend: str, request: pytest.FixtureRequest,
                                                        tmp_path: Path) -> None:
    url = str(tmp_path / "tenure.db") if backend == "sqlite" else str(request.getfixturevalue("pg_url"))
    service.open(url).close()
    fast = {"TENURE_HEARTBEAT_S": "0.2", "TENURE_LEASE_TTL_S": "30"}
    behind = skewed("-2h", "worker", "--db", url, "--concurrency", "6", log=tmp_path / "behind.log", env=fast)
    on_time = skewed("", "worker", "--db", url, "--concurrency", "6", log=tmp_path / "on_time.log", env=fast)
    port = free_port()
    web = skewed("+2h", "serve", "--no-worker", "--db", url, "--port", str(port), log=tmp_path / "web.log",
                 module="web")
    t = service.open(url, migrate=False)
    try:
        ahead = skewed("+2h", "submit", "--db", url, "--tasks", "24", "--min-seconds", "0.5", "--max-seconds", "1.5",
                       "--failure-rate", "0", "--transient-rate", "0.3", "--seed", "7", log=tmp_path / "ahead.log")
        assert ahead.wait(30) == 0
        run_id = t.runs(limit=1)[0].id
        submitted = time.monotonic()
        wait_for(lambda: _answers(port), 20, "the skewed web process")
        body = json.dumps({"tasks": 6, "min_seconds": 0.2, "max_seconds": 0.5, "failure_rate": 0}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/runs", data=body, method="POST", headers=JSON)
        with urllib.request.urlopen(req, timeout=10) as r:
            from_web = json.load(r)["id"]
        run = t.wait_run(run_id, 40)
        took = time.monotonic() - submitted
        assert t.wait_run(from_web, 20).counts["succeeded"] == 6
        _, tasks = t.run_with_tasks(run_id)
        attempts = [a for task in tasks for a in t.attempts(task.id)]
        by = {a.supervisor_id for a in attempts}
    finally:
        t.close()
        stop_all([web, behind, on_time])
    outcomes = [a.outcome for a in attempts]
    report(f"clocks ({backend}): submitter and web +2 h, workers -2 h and on time: {run.counts['succeeded']} of 24 "
           f"succeeded in {took:.1f} s, {outcomes.count('failed')} transient failures retried, "
           f"{outcomes.count('lost')} leases taken from a live supervisor, both workers ran tasks: {len(by) == 2}")
    assert run.counts["succeeded"] == 24
    assert "lost" not in outcomes, "a live supervisor on this host was judged dead"
    assert len(by) == 2, "a worker whose clock is off took no work"
    assert took < 20, "due times judged by skewed clocks held the tasks back"


def test_work_due_at_once_waits_for_no_clock_even_one_running_a_little_ahead(tmp_path: Path) -> None:
    """SQLite's clock is each writing process's own. A submitter, and a worker handing work back as
    it stops, whose clocks run 120 s ahead (inside the sweep's horizon for stepped clocks) must
    not hold new or handed-back tasks for 120 s: a task due at once carries no time at all."""
    url = str(tmp_path / "tenure.db")
    t = service.open(url)
    on_time = {"heartbeat_s": 0.2, "lease_ttl_s": 5.0, "idle_poll_s": 0.2}
    try:
        ahead = skewed("+120s", "submit", "--db", url, "--kind", "echo", "--tasks", "5", log=tmp_path / "ahead.log")
        assert ahead.wait(30) == 0
        (run,) = t.runs(limit=1)
        sup = t.start_supervisor(**on_time)
        try:
            assert t.wait_run(run.id, 10).counts["succeeded"] == 5, "new work waited for the submitter's clock"
        finally:
            sup.stop(grace_s=0.0)
        # A worker 120 s ahead takes a run of long tasks, then stops gracefully: it hands them back.
        long_run = t.submit_run(3, "sleep", {"min_seconds": 30, "max_seconds": 30, "failure_rate": 0,
                                             "transient_rate": 0})
        worker = skewed("+120s", "worker", "--db", url, "--grace", "0", log=tmp_path / "worker.log")
        try:
            wait_for(lambda: t.run(long_run).counts["running"] == 3, 20, "the skewed worker to take the long run")
        finally:
            stop_all([worker])
        assert t.run(long_run).counts["queued"] == 3, (tmp_path / "worker.log").read_text()[-2000:]
        sup = t.start_supervisor(**on_time)
        try:
            wait_for(lambda: t.run(long_run).counts["running"] == 3, 10, "the handed-back tasks to be claimed")
        finally:
            sup.stop(grace_s=0.0)
    finally:
        t.close()
