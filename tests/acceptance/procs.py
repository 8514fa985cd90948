"""Running the real `tenure` command as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def tenure(
    *args: str, db: Path, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service", *args, "--db", str(db)], capture_output=True,
                          text=True, check=check, env={**os.environ, **(env or {})}, cwd=REPO, timeout=60)


def start_worker(db: Path, log: Path, env: dict[str, str] | None = None, *extra: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "service", "worker", "--db", str(db), *extra],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=REPO)
