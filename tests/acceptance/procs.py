"""Running the real `tenure` command as subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
JSON = {"Content-Type": "application/json"}  # what the API reads (urllib would say it sends a form)


def tenure(
    *args: str, db: Path, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service", *args, "--db", str(db)], capture_output=True,
                          text=True, check=check, env={**os.environ, **(env or {})}, cwd=REPO, timeout=60)


def start_worker(db: Path | str, log: Path, env: dict[str, str] | None = None, *extra: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "service", "worker", "--db", str(db), *extra],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=REPO)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`tenure serve` as a subprocess that can be killed and started again on the same port."""

    def __init__(self, db: Path, log: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.db, self.log, self.port, self.env, self.args = db, log, free_port(), env or {}, args
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> None:
        env = {**os.environ, "TENURE_HEARTBEAT_S": "0.25", "TENURE_LEASE_TTL_S": "30", **self.env}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "web", "serve", "--db", str(self.db), "--port", str(self.port), *self.args],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        if wait:
            wait_for(self._answers, 20, "tenure serve to answer")

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"tenure serve exited: {self.log.read_text()[-2000:]}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)  # uvicorn waits up to 10 s for open connections, then 5 s grace
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def stop_all(procs: list[subprocess.Popen[bytes]], timeout_s: float = 30.0) -> list[int | None]:
    """SIGTERM each (a graceful stop), wait for all; SIGKILL any still running. Their exit codes."""
    import signal

    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes: list[int | None] = []
    for p in procs:
        try:
            codes.append(p.wait(timeout_s))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
            codes.append(None)
    return codes
