"""PostgreSQL stops mid-run and starts again; a worker and `tenure serve` ride it out.

A private cluster (see pgcluster.py). While the server is down the API answers 503 with a
reason and the pages a readable error; the worker keeps its tasks running, holds their
outcomes back, and writes them once the server is back. Wanted: every task succeeds, none is
lost or run twice, nobody reclaims a live supervisor's leases after the outage, and the logs
say what happened without a flood. An acceptance test: about 20 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import service
from tests.acceptance import pgcluster
from tests.acceptance.procs import JSON, REPO, free_port, stop_all
from tests.conftest import report, wait_for

WHY_NOT = pgcluster.available()
pytestmark = [pytest.mark.acceptance,
              pytest.mark.skipif(WHY_NOT is not None and os.environ.get("CI") != "true",
                                 reason=f"a private PostgreSQL cluster cannot be made: {WHY_NOT}")]
OUTAGE_S = 6.0


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        return 0, str(exc)


def test_the_database_restarts_mid_run(tmp_path: Path) -> None:
    cluster = pgcluster.Cluster()
    cluster.start()
    url = cluster.url()
    env = {**os.environ, "TENURE_HEARTBEAT_S": "0.5", "TENURE_LEASE_TTL_S": "4"}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        service.open(url).close()
        with open(tmp_path / "worker.log", "ab") as out:
            procs.append(subprocess.Popen([sys.executable, "-m", "service", "worker", "--db", url], cwd=REPO,
                                          stdout=out, stderr=subprocess.STDOUT, env=env))
        port = free_port()
        with open(tmp_path / "serve.log", "ab") as out:
            procs.append(subprocess.Popen([sys.executable, "-m", "web", "serve", "--no-worker", "--db", url,
                                           "--port", str(port)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                          env=env))
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: get(base + "/healthz")[0] == 200, 20, "tenure serve")
        body = json.dumps({"tasks": 20, "min_seconds": 3, "max_seconds": 6, "failure_rate": 0,
                           "transient_rate": 0}).encode()
        request = urllib.request.Request(base + "/api/runs", data=body, method="POST", headers=JSON)
        with urllib.request.urlopen(request) as r:
            run_id = json.load(r)["id"]
        wait_for(lambda: json.loads(get(f"{base}/api/runs/{run_id}")[1])["counts"]["running"] == 20, 20, "all running")
        cluster.stop("fast")
        stopped = time.monotonic()
        answers = []
        while time.monotonic() - stopped < OUTAGE_S:
            answers.append(get(f"{base}/api/runs/{run_id}"))
            time.sleep(0.25)  # the outage's length is the test's choice, not a synchronization
        page = get(f"{base}/runs/{run_id}")
        cluster.start()
        restarted = time.monotonic()
        wait_for(lambda: get(f"{base}/api/runs/{run_id}")[0] == 200, 30, "the API back")
        back = time.monotonic() - restarted
        t = service.open(url, migrate=False)
        try:
            run = t.wait_run(run_id, 60)
            done = time.monotonic() - restarted
            _, tasks = t.run_with_tasks(run_id)
            outcomes = [a.outcome for task in tasks for a in t.attempts(task.id)]
        finally:
            t.close()
    finally:
        stop_all(procs)
        cluster.destroy()
    statuses = [code for code, _ in answers]
    assert statuses and all(code == 503 for code in statuses), statuses
    assert all("database" in json.loads(text)["error"] for _, text in answers), answers[:2]
    assert page[0] == 503 and "database" in page[1]
    assert run.counts["succeeded"] == 20, run.counts
    assert outcomes.count("succeeded") == 20 and "lost" not in outcomes, outcomes
    worker_log = (tmp_path / "worker.log").read_text()
    warnings = [line for line in worker_log.splitlines() if " WARNING " in line or " ERROR " in line]
    assert len(warnings) <= 6, "\n".join(warnings)  # one episode, not a line per failed beat
    report(f"database restart: PostgreSQL down {OUTAGE_S:g} s mid-run; API answered 503 ({len(statuses)} polls), "
           f"back {back:.1f} s after the restart; run complete {done:.1f} s after it: 20 of 20 succeeded, "
           f"0 lost, 0 twice; the worker logged {len(warnings)} warnings")
