"""Web benchmark: how long other requests wait while `tenure serve` takes a 100,000-task POST.

    .venv/bin/python bench/loop_stall.py

Runs `tenure serve --no-worker` on a scratch SQLite database, then posts a run of 100,000
explicit tasks (4.6 MB of JSON) to /api/runs, once valid (201) and once refused by the planning
of its last entry (args over 64 KiB: 422, nothing written), while another connection asks
GET /healthz over and over; first, 2 s of /healthz alone show the machine's own noise. Prints
the POST's own time and the median and slowest /healthz answer meanwhile: the slowest is the
longest the server kept everyone else waiting. Asserts nothing about speed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2 as httpx

REPO = Path(__file__).resolve().parents[1]
TASKS = 100_000


def probe(url: str, stop: threading.Event, waits: list[float]) -> None:
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            start = time.perf_counter()
            assert client.get(url).status_code == 200
            waits.append(time.perf_counter() - start)


def measure(base: str, body: bytes | None, expect: int) -> tuple[float, list[float]]:
    """The POST's time and every /healthz wait meanwhile (no body: 2 s of /healthz alone)."""
    stop, waits = threading.Event(), []
    prober = threading.Thread(target=probe, args=(f"{base}/healthz", stop, waits))
    with httpx.Client(timeout=120) as client:
        prober.start()
        while not waits:  # the prober is answering before the POST starts
            stop.wait(0.001)
        waits.clear()
        start = time.perf_counter()
        if body is None:
            stop.wait(2.0)
        else:
            answer = client.post(f"{base}/api/runs", content=body, headers={"content-type": "application/json"})
            assert answer.status_code == expect, (answer.status_code, answer.text[:200])
        took = time.perf_counter() - start
    stop.set()
    prober.join()
    return took, sorted(waits)


def main() -> None:
    tasks = [{"path": f"/data/2026-12-01/part-{i:06d}.csv"} for i in range(TASKS)]
    good = json.dumps({"kind": "echo", "tasks": tasks}).encode()
    bad = json.dumps({"kind": "echo", "tasks": [*tasks[:-1], {"blob": "x" * 70_000}]}).encode()  # args too big
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        proc = subprocess.Popen([sys.executable, "-m", "web", "serve", "--no-worker", "--db", f"{tmp}/bench.db",
                                 "--port", str(port), "--log-level", "WARNING"], cwd=REPO, env=dict(os.environ))
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                threading.Event().wait(0.05)
            print(f"POST /api/runs with {TASKS:,} tasks ({len(good) / 1e6:.1f} MB), GET /healthz meanwhile:")
            for what, body, expect in (("no POST", None, 0), ("valid", good, 201), ("refused", bad, 422),
                                       ("valid", good, 201)):
                took, waits = measure(base, body, expect)
                label = f"{what} ({expect})" if body is not None else what
                print(f"  {label:13}: {took:5.2f} s; /healthz answered {len(waits):4} times, median "
                      f"{waits[len(waits) // 2] * 1000:6.1f} ms, slowest {waits[-1] * 1000:7.1f} ms")
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
