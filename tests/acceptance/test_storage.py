"""A full disk, for real: the database lives on a 4 MiB tmpfs mounted for the test, then filled.

(A read-only remount is refused while the server holds the file open for writing, so the
read-only fault is tested in tests/web/test_storage_faults.py with ``PRAGMA query_only``.)
Skips, saying why, where mounting is not allowed. An acceptance test: about 5 s.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import service
from tests.acceptance.procs import JSON, Server
from tests.acceptance.test_crashes import integrity

pytestmark = pytest.mark.acceptance


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); run as root to test storage faults")
    try:
        yield mount
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(mount)], check=False)
        subprocess.run(["umount", "-l", str(mount)], check=False)


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=JSON)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_full_disk_refuses_writes_whole_and_recovers(tiny_fs: Path, tmp_path: Path) -> None:
    db = tiny_fs / "tenure.db"
    server = Server(db, tmp_path / "serve.log", {"TENURE_HEARTBEAT_S": "0.2"})
    server.start()
    t = service.open(str(db), migrate=False)
    try:
        status, body = post(server.url + "/api/runs", {"tasks": 20, "min_seconds": 1.0, "max_seconds": 2.5,
                                                       "failure_rate": 0, "transient_rate": 0, "seed": 8})
        assert status == 201
        run_id = body["id"]

        # The disk fills: a big submission is refused whole (507), reads still work.
        subprocess.run(["dd", "if=/dev/zero", f"of={tiny_fs / 'filler'}", "bs=64k"], capture_output=True)
        status, body = post(server.url + "/api/runs", {"tasks": 5000, "min_seconds": 0, "max_seconds": 0})
        assert status == 507 and "disk is full" in body["error"], body
        assert t.store.count_runs() == 1, "a refused run was half-written"
        code, page = get(server.url + f"/runs/{run_id}")
        assert code == 200 and "Run #1" in page
        (tiny_fs / "filler").unlink()
        status, _ = post(server.url + "/api/runs", {"tasks": 5, "min_seconds": 0, "max_seconds": 0.1,
                                                    "failure_rate": 0, "transient_rate": 0})
        assert status == 201, "no recovery after the disk was freed"

        run = t.wait_run(run_id, 30)
        assert run.counts["succeeded"] == 20
    finally:
        t.close()
        server.stop()
    assert integrity(db) == "ok"
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
