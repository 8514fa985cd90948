"""A private PostgreSQL cluster for tests that stop and start the server, or cut its network.

Made with the machine's own ``initdb`` and ``pg_ctl`` (run as the postgres user: they refuse
root), on a port of its own, so the shared server on 5432 and every other test are untouched.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

BIN = Path(os.environ.get("TENURE_PG_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> str | None:
    """None if a private cluster can be made here, else why not."""
    if os.geteuid() != 0:
        return "needs root (to run initdb as the postgres user)"
    if not (BIN / "initdb").exists():
        return f"no initdb in {BIN}"
    if shutil.which("runuser") is None:
        return "no runuser"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True, check=True,
                          timeout=120)


class Cluster:
    def __init__(self, listen: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tenure-pg-", dir="/tmp"))
        self.data, self.socket_dir, self.log = self.root / "data", self.root / "sock", self.root / "server.log"
        self.socket_dir.mkdir()
        shutil.chown(self.root, "postgres")
        shutil.chown(self.socket_dir, "postgres")
        self.root.chmod(0o755)
        self.port = _free_port()
        self.listen = listen
        _as_postgres(str(BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        with open(self.data / "pg_hba.conf", "a") as hba:
            for address in listen:
                if address != "127.0.0.1":
                    hba.write(f"host all all {address.rsplit('.', 1)[0]}.0/24 trust\n")

    def url(self, host: str = "127.0.0.1") -> str:
        return f"postgresql+psycopg://postgres@{host}:{self.port}/postgres"

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses={','.join(self.listen)} "
                   "-c fsync=off -c synchronous_commit=off")
        _as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        _as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # not running
        shutil.rmtree(self.root, ignore_errors=True)
