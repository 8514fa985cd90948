"""Under fire: repeated kill -9 of `tenure serve`, a poison task, graceful stops, two supervisors.

Acceptance tests with real processes. Fault timings are drawn from a seeded RNG whose seed is
printed (TENURE_CHAOS_SEED replays a failure).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import sqlite3
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import service
from tests.acceptance.procs import JSON, Server, start_worker, tenure
from tests.conftest import report, wait_for

pytestmark = pytest.mark.acceptance

CHAOS_SEED = int(os.environ.get("TENURE_CHAOS_SEED", random.SystemRandom().randrange(10**6)))
PLUGIN = {"TENURE_IMPORT": "tests.kinds_for_tests"}
STATS: dict[str, float] = {}


def integrity(db: Path) -> str:
    with sqlite3.connect(db, timeout=10) as conn:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
    conn.close()
    return str(result)


def open_attempts(db: Path) -> set[tuple[int, int]]:
    with sqlite3.connect(db, timeout=10) as conn:
        rows = conn.execute("SELECT task_id, attempt FROM task_attempts WHERE outcome = 'running'").fetchall()
    conn.close()
    return {(r[0], r[1]) for r in rows}


def pause(seconds: float) -> None:
    """The fault schedule's wait before the next kill (a chosen moment, not a synchronization)."""
    threading.Event().wait(seconds)


def kill_storm(tmp_path: Path, rng: random.Random, *, tasks: int, kills: int, min_s: float, max_s: float,
               pause_s: tuple[float, float], transient: float, deadline_s: float) -> dict[str, int]:
    """``kills`` kill -9s of `tenure serve` at seeded moments of one run; returns what a user sees."""
    db = tmp_path / "tenure.db"
    server = Server(db, tmp_path / "serve.log", {"TENURE_HEARTBEAT_S": "0.2"})
    server.start()
    body = json.dumps({"tasks": tasks, "min_seconds": min_s, "max_seconds": max_s, "failure_rate": 0,
                       "transient_rate": transient, "seed": rng.randrange(10**6)}).encode()
    request = urllib.request.Request(server.url + "/api/runs", data=body, method="POST", headers=JSON)
    with urllib.request.urlopen(request) as r:
        run_id = json.load(r)["id"]
    interrupted: set[tuple[int, int]] = set()
    for i in range(kills):
        during_startup = i % 3 == 2
        if during_startup:
            server.kill9()
            server.start(wait=False)
            pause(rng.uniform(0.05, 0.4))  # mid start-up: recovery may be half done
        else:
            pause(rng.uniform(*pause_s))
        server.kill9()
        interrupted |= open_attempts(db)
        assert integrity(db) == "ok"
        server.start()
        assert integrity(db) == "ok"
    t = service.open(str(db), migrate=False)
    try:
        run = t.wait_run(run_id, deadline_s)
        _, tasks_ = t.run_with_tasks(run_id)
        attempts = {(task.id, a.attempt): a for task in tasks_ for a in t.attempts(task.id)}
    finally:
        t.close()
        server.stop()
    assert integrity(db) == "ok"
    assert run.status == "completed" and sum(run.counts.values()) == tasks == run.total
    successes: dict[int, int] = {}
    for (task_id, _), a in attempts.items():
        successes[task_id] = successes.get(task_id, 0) + (a.outcome == "succeeded")
    assert all(successes[task.id] == (task.status == "succeeded") for task in tasks_), "a task succeeded twice"
    assert "running" not in {a.outcome for a in attempts.values()}, "an attempt was left open"
    assert interrupted, "no kill caught an attempt running"
    assert all(attempts[key].outcome == "lost" and not attempts[key].charged for key in interrupted), \
        "an interrupted attempt was not recorded as lost, uncharged"
    failed = [(task.position, task.error) for task in tasks_ if task.status == "failed"]
    assert run.counts["succeeded"] == tasks, f"healthy tasks failed: {failed}"
    return {"kills": kills, "interrupted": len(interrupted), "succeeded": run.counts["succeeded"],
            "failed": run.counts["failed"], "charged": sum(a.charged for a in attempts.values()),
            "retried": sum(a.outcome == "failed" for a in attempts.values())}


def test_ten_kill_9s_of_serve_during_one_run_fail_no_task(tmp_path: Path) -> None:
    report(f"chaos seed {CHAOS_SEED} (TENURE_CHAOS_SEED={CHAOS_SEED} replays it)")
    rng = random.Random(CHAOS_SEED)
    # Tasks of a few seconds, none failing for good, some failing once; the default 3 attempts.
    got = kill_storm(tmp_path, rng, tasks=50, kills=10, min_s=1.0, max_s=4.0, pause_s=(0.3, 1.5),
                     transient=0.2, deadline_s=120)
    STATS.update(got)
    report(f"chaos: {got['kills']} kill -9s of tenure serve in one 50-task run: {got['succeeded']} of 50 succeeded, "
           f"{got['failed']} failed, 0 never finished; {got['interrupted']} interrupted attempts recorded as lost, "
           f"none charged; {got['retried']} transient failures retried; 0 succeeded twice")


@pytest.mark.long_and_idle
def test_three_kill_9s_during_ten_tasks_of_30_to_60_s_fail_no_task(tmp_path: Path) -> None:
    """The issue's case: three restarts used to fail every one of ten long tasks. About 75 s."""
    rng = random.Random(CHAOS_SEED + 1)
    got = kill_storm(tmp_path, rng, tasks=10, kills=3, min_s=30.0, max_s=60.0, pause_s=(4.0, 12.0),
                     transient=0.0, deadline_s=150)
    report(f"chaos: 3 kill -9s during 10 tasks of 30-60 s: {got['succeeded']} of 10 succeeded, "
           f"{got['failed']} failed; {got['interrupted']} interrupted attempts lost, none charged")


def test_a_task_that_kills_its_process_fails_alone_and_serve_keeps_serving(tmp_path: Path) -> None:
    """One poison task of each kind among 49 healthy neighbours, all in one `tenure serve`."""
    db = tmp_path / "tenure.db"
    server = Server(db, tmp_path / "serve.log", {**PLUGIN, "TENURE_MEMORY_LIMIT": "256M"})
    server.start()
    t = service.open(str(db), migrate=False)
    import tests.kinds_for_tests  # noqa: F401  (the kinds exist here too, for validation)

    hows = ["exit", "segv", "sigkill", "memory"]
    runs = {how: t.submit_run(50, "t_mixed", {"poison_at": 17, "how": how, "seconds": 0.5}, max_attempts=3)
            for how in hows}
    slowest = 0.0
    try:
        def all_done() -> bool:
            nonlocal slowest
            started = time.monotonic()
            with urllib.request.urlopen(server.url + "/healthz", timeout=5) as r:
                assert r.status == 200
            with urllib.request.urlopen(server.url + f"/runs/{runs['segv']}", timeout=5) as r:
                assert r.status == 200
            slowest = max(slowest, time.monotonic() - started)
            return all(not t.run(r).live for r in runs.values())
        wait_for(all_done, 90, "the four runs to end")
        assert server.proc is not None and server.proc.poll() is None, "tenure serve died"
        for how, run_id in runs.items():
            _, tasks = t.run_with_tasks(run_id)
            poison, neighbours = tasks[17], tasks[:17] + tasks[18:]
            assert poison.status == "failed" and poison.charged == 3, (how, poison)
            attempts = t.attempts(poison.id)
            assert [a.outcome for a in attempts if a.charged] == ["crashed"] * 3, how
            # A crash in a process that earlier tasks had run in is nobody's for sure: lost, uncharged, and
            # the task goes on alone in fresh processes, where its crashes are its own.
            assert all(a.outcome == "lost" for a in attempts if not a.charged), (how, attempts)
            assert all(n.status == "succeeded" and n.charged == 0 and n.attempts == 1 for n in neighbours), how
            report(f"poison ({how}): failed after 3 charged attempts, \"{poison.error}\"; "
                   f"its 49 neighbours succeeded, 0 attempts charged")
    finally:
        t.close()
        server.stop()
    report(f"poison: tenure serve stayed up; slowest page/health answer during the four runs {slowest * 1000:.0f} ms")
    assert slowest < 2.0


def test_kill_9_of_the_supervisor_alone_ends_its_task_processes(tmp_path: Path) -> None:
    db = tmp_path / "tenure.db"
    import tests.kinds_for_tests as k

    log = tmp_path / "journal"
    t = service.open(str(db))
    run_id = t.submit_run(8, "t_pid", {"seconds": 60, "journal": str(log)})
    worker = start_worker(db, tmp_path / "worker.log", PLUGIN)
    try:
        wait_for(lambda: len(k.events(log, "pid")) == 8, 20, "eight tasks running")
        pids = {pid for *_, pid in k.events(log, "pid")}
        worker.send_signal(signal.SIGKILL)
        worker.wait(5)
        killed = time.monotonic()
        wait_for(lambda: not any(alive(pid) for pid in pids), 2, "the dead supervisor's task processes to end")
        gone_s = time.monotonic() - killed
    finally:
        if worker.poll() is None:
            worker.kill()
    assert gone_s < 1.0
    assert t.run(run_id).counts["running"] == 8  # still leased to the dead worker: the next start reclaims
    t.close()
    report(f"kill -9 of the supervisor alone: its 8 task processes gone {gone_s * 1000:.0f} ms later")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_releases_leases_and_the_next_start_takes_them_at_once(tmp_path: Path) -> None:
    db = tmp_path / "tenure.db"
    run_id = int(tenure("submit", "--tasks", "5", "--min-seconds", "30", "--max-seconds", "30",
                        "--max-attempts", "1", db=db).stdout.split()[-1])
    log = tmp_path / "worker.log"
    first = start_worker(db, log, {}, "--grace", "0.3")
    t = service.open(str(db), migrate=False)
    try:
        wait_for(lambda: t.run(run_id).counts["running"] == 5, 15, "five running")
        first.send_signal(signal.SIGTERM)
        assert first.wait(10) == 0
        assert t.run(run_id).counts["queued"] == 5
        second = start_worker(db, log, {})
        # At once: long before their 15 s lease TTL (the new worker's start-up is most of the wait).
        wait_for(lambda: t.run(run_id).counts["running"] == 5, 8, "the released tasks taken at once")
        second.send_signal(signal.SIGTERM)
        second.send_signal(signal.SIGTERM)  # a second signal: stop without waiting
        assert second.wait(10) == 0
    finally:
        t.close()


def test_two_supervisors_on_one_sqlite_file_never_run_a_task_twice_at_once(tmp_path: Path) -> None:
    db = tmp_path / "tenure.db"
    run_id = int(tenure("submit", "--tasks", "120", "--min-seconds", "0.02", "--max-seconds", "0.3",
                        "--failure-rate", "0", "--transient-rate", "0.3", db=db).stdout.split()[-1])
    log = tmp_path / "workers.log"
    workers = [start_worker(db, log, {}, "--concurrency", "16") for _ in range(2)]
    t = service.open(str(db), migrate=False)
    try:
        run = t.wait_run(run_id, 60)
        with t.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT a.task_id, a.supervisor_id, a.started_at, a.finished_at, a.outcome FROM task_attempts a "
                "JOIN tasks t ON t.id = a.task_id WHERE t.run_id = ? ORDER BY a.task_id, a.started_at",
                (run_id,)).all()
    finally:
        t.close()
        for w in workers:
            w.send_signal(signal.SIGTERM)
        assert [w.wait(10) for w in workers] == [0, 0]
    assert run.counts["succeeded"] == 120
    by_task: dict[int, list[tuple[str, str, str]]] = {}
    for task_id, _, started, finished, outcome in rows:
        by_task.setdefault(task_id, []).append((str(started), str(finished), outcome))
    for task_id, spans in by_task.items():
        assert [o for *_, o in spans].count("succeeded") == 1, task_id
        for (_, end, _), (start, _, _) in itertools.pairwise(spans):
            assert end <= start, f"task {task_id} ran in two places at once"
    assert len({worker for _, worker, *_ in rows}) == 2, "both supervisors took work"
