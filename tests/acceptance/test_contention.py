"""An outside writer holds SQLite's write lock for 5 s while a run goes on.

The pages and API keep answering reads, writes wait and go through, nothing is lost, and the
wait is logged once, not as a flood. An acceptance test: about 8 s.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import service
from tests.acceptance.procs import JSON, Server
from tests.conftest import report, wait_for

pytestmark = pytest.mark.acceptance
HOLD_S = 5.0


def call(url: str, body: dict | None = None) -> tuple[int, float]:
    start = time.monotonic()
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST" if data else "GET", headers=JSON),
                                timeout=30) as r:
        r.read()
        return r.status, time.monotonic() - start


def test_a_5_second_write_lock_is_ridden_out(tmp_path: Path) -> None:
    db = tmp_path / "tenure.db"
    server = Server(db, tmp_path / "serve.log", {"TENURE_HEARTBEAT_S": "0.2"})
    server.start()
    try:
        status, _ = call(server.url + "/api/runs", {"tasks": 30, "min_seconds": 0.2, "max_seconds": 1.5,
                                                    "failure_rate": 0, "transient_rate": 0.2, "seed": 5})
        t = service.open(str(db), migrate=False)
        wait_for(lambda: t.run(1).counts["running"] > 0, 10, "tasks running")
        shell = subprocess.Popen(["sqlite3", str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        assert shell.stdin is not None and shell.stdout is not None
        # The shell waits for locks too, so its BEGIN and COMMIT never fail on a passing checkpoint.
        shell.stdin.write(".timeout 10000\nBEGIN IMMEDIATE;\nSELECT 'locked';\n")
        shell.stdin.flush()
        assert shell.stdout.readline().strip() == "locked"
        locked_at = time.monotonic()
        # A write submitted during the lock waits for it, then goes through.
        submitted: dict[str, object] = {}
        writer = threading.Thread(target=lambda: submitted.update(
            result=call(server.url + "/api/runs", {"tasks": 3, "min_seconds": 0, "max_seconds": 0.1,
                                                "failure_rate": 0})))
        writer.start()
        reads = []
        while time.monotonic() - locked_at < HOLD_S:
            for path in ("/api/runs/1", "/runs/1/status", "/healthz", "/"):
                code, took = call(server.url + path)
                reads.append((path, code, took))
        _, shell_errors = shell.communicate("COMMIT;\n.quit\n", timeout=10)  # releases the lock
        assert shell.returncode == 0, shell_errors
        writer.join(30)
        status, waited = submitted["result"]  # type: ignore[misc]
        assert status == 201 and waited >= HOLD_S - 1.0
        assert reads and all(code == 200 for _, code, _ in reads)
        slowest = max(took for *_, took in reads)
        assert slowest < 1.0, f"a read waited {slowest:.2f} s behind the writer"
        run = t.wait_run(1, 30)
        assert run.counts["succeeded"] == 30 and t.wait_run(2, 30).counts["succeeded"] == 3
        t.close()
    finally:
        server.stop()
    log = (tmp_path / "serve.log").read_text()
    assert log.count("db.write_waited") == 1, log[-3000:]
    report(f"contention: {HOLD_S:g} s write lock ridden out; {len(reads)} reads during it, slowest "
          f"{slowest * 1000:.0f} ms; a write waited {waited:.1f} s then went through; 1 log line")
