"""`tenure worker --metrics-port` as real processes, scraped over HTTP: each worker's own counters
add up to the database's figures, which one worker (`--metrics-db`) exposes; bad and busy ports
are one line and a non-zero exit, before anything is written."""

from __future__ import annotations

import socket
import sqlite3
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.procs import free_port, start_worker, stop_all, tenure
from tests.conftest import wait_for

pytestmark = pytest.mark.acceptance
TASKS = 30
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = answer.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls)


def answers(port: int) -> Samples | None:
    try:
        return scrape(port)
    except OSError:
        return None


def test_each_worker_s_metrics_add_up_to_the_database_s(tmp_path: Path) -> None:
    db = tmp_path / "tenure.db"
    tenure("submit", "--tasks", str(TASKS), "--min-seconds", "0", "--max-seconds", "0.05", "--failure-rate", "0",
           "--transient-rate", "0", db=db)
    ports = [free_port(), free_port()]
    env = {"TENURE_HEARTBEAT_S": "0.2"}
    workers = [start_worker(db, tmp_path / "a.log", env, "--metrics-port", str(ports[0]), "--metrics-db"),
               start_worker(db, tmp_path / "b.log", env, "--metrics-port", str(ports[1]), "--concurrency", "4")]
    try:
        def drained() -> list[Samples] | None:
            scraped = [answers(port) for port in ports]
            # A worker serves its port before its supervisor's counters are attached: not yet ready.
            if any(s is None or not total(s, "tenure_concurrency") for s in scraped):
                return None
            done = sum(total(s, "tenure_attempts_finished_total", outcome="succeeded") for s in scraped if s)
            return [s for s in scraped if s] if done == TASKS else None

        scraped = wait_for(drained, 60, "both workers to answer and the run to drain")
        assert isinstance(scraped, list)
        b = scraped[1]
        # The database's figures, from the one worker asked for them: right across both, once the
        # read that scrapes share (for 5 s) is a fresh one.
        def fresh() -> Samples | None:
            s = scrape(ports[0])
            # Both supervisors too: a worker answers its port (counters attached) a moment before it
            # registers, and a read taken then is shared for 5 s.
            both = total(s, "tenure_supervisors_alive") == 2
            return s if total(s, "tenure_tasks", status="succeeded") == TASKS and both else None

        a = wait_for(fresh, 15, "the database's figures to show the drained run and both workers alive")
        assert isinstance(a, dict)
        assert total(a, "tenure_tasks", status="succeeded", kind="sleep") == TASKS
        assert total(a, "tenure_attempts", outcome="succeeded") == TASKS
        assert total(a, "tenure_supervisors_alive") == 2
        assert total(a, "tenure_runs", status="completed") == 1
        assert not [name for name, _ in b if name.startswith(("tenure_tasks", "tenure_database"))]
        # Each worker's own: summed, they are the run's attempts and its tasks' first claims.
        assert (total(a, "tenure_attempt_duration_seconds_count") + total(b, "tenure_attempt_duration_seconds_count")
                == TASKS)
        assert total(a, "tenure_queue_wait_seconds_count") + total(b, "tenure_queue_wait_seconds_count") == TASKS
        assert total(b, "tenure_concurrency") == 4
        assert total(a, "process_resident_memory_bytes") > 0
        wait_for(lambda: total(scrape(ports[1]), "tenure_heartbeat_lag_seconds_count") >= 2, 10, "two heartbeats")
    finally:
        codes = stop_all(workers)
    assert codes == [0, 0], (tmp_path / "a.log").read_text()[-2000:]


def supervisors(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM supervisors").fetchone()[0])


def test_a_busy_or_bad_metrics_port_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "tenure.db"
    tenure("migrate", db=db)
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        busy = tenure("worker", "--metrics-port", str(port), db=db, check=False)
    assert busy.returncode == 2
    assert busy.stderr.strip() == (f"tenure: error: cannot serve metrics on 127.0.0.1:{port}: Address already in use; "
                                   "choose another --metrics-port"), busy.stderr
    bad = tenure("worker", "--metrics-port", "70000", db=db, check=False)
    assert (bad.returncode, bad.stderr.strip()) == (
        2, "tenure: error: --metrics-port must be between 1 and 65535, got 70000")
    alone = tenure("worker", "--metrics-db", db=db, check=False)
    assert (alone.returncode, alone.stderr.strip()) == (
        2, "tenure: error: --metrics-db goes with --metrics-port, which serves the figures")
    assert supervisors(db) == 0  # none of them started a supervisor
