"""`tenure serve` (and so `make run`) on a port that is taken: one line naming the holder, nothing started."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.procs import REPO, free_port

pytestmark = pytest.mark.acceptance


def serve(db: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "web", "serve", "--db", str(db), *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, cwd=REPO, timeout=60)


@pytest.mark.parametrize("how", ["--port", "TENURE_PORT"])
def test_a_busy_port_is_refused_before_anything_starts(tmp_path: Path, how: str) -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        db = tmp_path / "tenure.db"
        if how == "--port":
            done = serve(db, "--port", str(port))
        else:
            done = serve(db, env={"TENURE_PORT": str(port)})
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"tenure: error: cannot serve on 127.0.0.1:{port}: Address already in use"), lines[0]
    # It says who holds the port (this test's own process), and how to choose another.
    assert f"(by pid {os.getpid()}: " in lines[0] and "make run PORT=8001" in lines[0]
    assert "serving" not in done.stderr
    # Nothing started: no database was even made, so no supervisor was registered in one.
    assert not db.exists()


def test_a_port_out_of_range_is_one_line_too(tmp_path: Path) -> None:
    done = serve(tmp_path / "tenure.db", env={"TENURE_PORT": "80000"})
    assert done.returncode != 0
    assert done.stderr.strip() == "tenure: error: TENURE_PORT must be between 1 and 65535, got 80000"
