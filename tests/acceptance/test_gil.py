"""Four tasks hold the GIL in C code for a minute beside 46 sleeping ones, in `tenure serve`.

Heartbeats stay on schedule (measured from the database, where they land), a second
supervisor watching the same database reaps nothing, no attempt of the 46 is lost, and the
API answers promptly throughout. An acceptance test: about 65 s (TENURE_GIL_HOG_S shortens it).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text

import service
from tests.acceptance.procs import Server, start_worker, stop_all
from tests.conftest import report, wait_for

pytestmark = [pytest.mark.acceptance, pytest.mark.long_and_idle]
HOG_S = int(os.environ.get("TENURE_GIL_HOG_S", "60"))
PLUGIN = {"TENURE_IMPORT": "tests.kinds_for_tests"}


def test_gil_hogs_starve_no_heartbeat_and_no_page(tmp_path: Path) -> None:
    import tests.kinds_for_tests  # noqa: F401  (the kind exists here too, for validation)

    db = tmp_path / "tenure.db"
    # A 3 s lease beaten every 0.5 s: a heartbeat starved for 3 s would lose every lease.
    env = {**PLUGIN, "TENURE_HEARTBEAT_S": "0.5", "TENURE_LEASE_TTL_S": "3"}
    server = Server(db, tmp_path / "serve.log", env)
    server.start()
    t = service.open(str(db), migrate=False)
    run_id = t.submit_run(50, "t_mixed", {"hog_at": [3, 19, 28, 41], "hog_s": HOG_S, "seconds": HOG_S + 2})
    watcher = None
    beats: list[datetime] = []
    slowest_api = 0.0
    try:
        wait_for(lambda: t.run(run_id).counts["running"] == 50, 15, "all 50 running")
        watcher = start_worker(db, tmp_path / "watcher.log", env, "--concurrency", "1")
        with t.engine.connect() as conn:
            serve_worker = conn.execute(text("SELECT min(id) FROM supervisors")).scalar()

        done = threading.Event()

        def watch_beats() -> None:
            # Its own pace, so a slow API answer below never hides a heartbeat.
            with t.engine.connect() as conn:
                while not done.wait(0.05):
                    beat = conn.execute(text("SELECT heartbeat_at FROM supervisors WHERE id = :w"),
                                        {"w": serve_worker}).scalar()
                    conn.rollback()
                    beat = beat if isinstance(beat, datetime) else datetime.fromisoformat(str(beat))
                    if not beats or beats[-1] != beat:
                        beats.append(beat)

        beat_watch = threading.Thread(target=watch_beats, daemon=True)
        beat_watch.start()

        def sample() -> bool:
            nonlocal slowest_api
            started = time.monotonic()
            with urllib.request.urlopen(server.url + f"/api/runs/{run_id}", timeout=10) as r:
                assert r.status == 200
            slowest_api = max(slowest_api, time.monotonic() - started)
            return not t.run(run_id).live
        try:
            wait_for(sample, HOG_S + 60, "the run to end")
        finally:
            done.set()
            beat_watch.join(timeout=5)
        _, tasks = t.run_with_tasks(run_id)
        outcomes = [a.outcome for task in tasks for a in t.attempts(task.id)]
    finally:
        t.close()
        if watcher is not None:
            stop_all([watcher])
        server.stop()
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(beats)]
    largest = max(gaps)
    report(f"gil: 4 tasks held the GIL {HOG_S} s beside 46 sleepers: {outcomes.count('succeeded')} of 50 succeeded, "
           f"{outcomes.count('lost')} attempts lost; {len(beats)} heartbeats, largest gap {largest:.2f} s "
           f"(interval 0.5 s); slowest API answer {slowest_api * 1000:.0f} ms")
    assert outcomes == ["succeeded"] * 50, "an attempt was reaped or lost"
    assert largest < 1.5, gaps
    assert slowest_api < 1.0
