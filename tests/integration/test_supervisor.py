"""An embedded supervisor running real tasks at tiny durations."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import service
from tests import kinds_for_tests as k
from tests.conftest import wait_for
from tests.integration.conftest import FAST


def test_blocking_and_polling_tasks_both_complete(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    blocking = [t.submit_task("t_blocking", {"value": v}) for v in range(5)]
    polling = [t.submit_task("t_polling", {"value": v, "seconds": 0.05}) for v in range(5)]
    supervise()
    for v, task_id in enumerate(blocking):
        assert t.wait_task(task_id, 5).result == {"out": 2 * v}
    for v, task_id in enumerate(polling):
        task = t.wait_task(task_id, 5)
        assert (task.status, task.result) == ("succeeded", 2 * v)
        assert t.check_output(task_id) == 2 * v


def test_a_waiting_polling_task_holds_no_thread_and_no_process(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, tmp_path: Path) -> None:
    log = tmp_path / "journal"
    # Checks right after run() returns, then every 2 s: quiet hosts for what follows.
    ids = [t.submit_task("t_polling", {"value": 1, "seconds": 2.5, "interval": 2.0, "journal": str(log)})
           for _ in range(8)]
    sup = supervise()
    wait_for(lambda: len(k.events(log, "polling.check")) >= 8, 5, "every run() to return, and a first check")
    hosts = {pid for *_, pid in k.events(log, "polling.run")}
    # Between checks a host runs no thread for its waiting tasks: main, reader, flusher, output pump only
    # (a check_output() call has a thread while it runs, so take the fewest seen over a while).
    fewest = {pid: _threads(pid) for pid in hosts}
    for _ in range(20):
        threading.Event().wait(0.02)  # sampling pace, not a synchronization
        fewest = {pid: min(n, _threads(pid)) for pid, n in fewest.items()}
    assert all(n == 4 for n in fewest.values()), fewest
    # ... and new work runs at once, elsewhere: a run() of a kind that never parks is kept out of
    # processes holding parked tasks (stopping it, a timeout or a cancel, would interrupt them all).
    quick = [t.submit_task("t_blocking", {"value": v, "journal": str(log)}) for v in range(4)]
    for q in quick:
        assert t.wait_task(q, 5).status == "succeeded"
    assert not {pid for *_, pid in k.events(log, "blocking")} & hosts
    assert all(t.task(i).status == "running" for i in ids)
    for i in ids:
        assert t.wait_task(i, 5).result == 2
    assert sup.pool.process_count <= 8 + 2 + 4  # never a process per task beyond one per claim


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


def test_gen_task_run_returns_twice_each_value(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    run_id = t.submit_run(12, "gen_task", {"time_scale": 0.002, "seed": 11})
    supervise()
    run = t.wait_run(run_id, 10)
    _, tasks = t.run_with_tasks(run_id)
    assert run.counts["succeeded"] == 12
    assert [task.result for task in tasks] == [2 * i for i in range(12)]


def test_transient_errors_retry_and_permanent_ones_fail_at_once(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    flaky = t.submit_task("t_flaky", {"fail_times": 2}, max_attempts=3)
    too_flaky = t.submit_task("t_flaky", {"fail_times": 5}, max_attempts=2)
    doomed = t.submit_task("t_doomed", max_attempts=3)
    supervise()
    assert t.wait_task(flaky, 5).result == "ok"
    assert [a.outcome for a in t.attempts(flaky)] == ["failed", "failed", "succeeded"]
    assert [a.charged for a in t.attempts(flaky)] == [True, True, False]
    task = t.wait_task(too_flaky, 5)
    assert task.status == "failed" and task.error == "ConnectionError: attempt 2 hit a reset"
    assert (task.attempts, task.charged, task.lost) == (2, 2, 0)
    task = t.wait_task(doomed, 5)
    assert (task.status, task.attempts) == ("failed", 1)
    assert task.error == "PermanentError: the input can never work"


def test_a_task_past_its_timeout_is_stopped_for_real(t: service.Tenure, supervise, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "journal"
    hung = t.submit_task("t_hang", {"journal": str(log)}, timeout_s=0.3)
    supervise()
    task = t.wait_task(hung, 5)
    assert task.status == "failed" and "timeout of 0.3 s" in (task.error or "")
    assert [(a.outcome, a.charged) for a in t.attempts(hung)] == [("timed_out", True)]
    ((_, _, _, pid),) = k.events(log, "hang")
    wait_for(lambda: not _alive(pid), 2, "the hung task's process to end")
    after = t.submit_task("t_blocking", {"value": 4})
    assert t.wait_task(after, 5).result == {"out": 8}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_progress_rides_along_with_the_heartbeat(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    task_id = t.submit_task("t_long")
    supervise()
    wait_for(lambda: t.task(task_id).progress > 0.05, 5, "progress written by a heartbeat")
    assert t.task(task_id).status == "running"


def test_cancelling_a_run_ends_the_processes_of_its_running_tasks(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, tmp_path: Path) -> None:
    log = tmp_path / "journal"
    run_id = t.submit_run(2, "t_long", {"journal": str(log)})
    sup = supervise()
    wait_for(lambda: len(k.events(log, "long.start")) == 2, 5, "both tasks running")
    pids = [pid for *_, pid in k.events(log, "long.start")]
    t.cancel_run(run_id)
    cancelled = time.monotonic()
    wait_for(lambda: not any(_alive(pid) for pid in pids), 2, "their processes to end")
    assert time.monotonic() - cancelled < 1.0
    wait_for(lambda: sup.inflight == 0, 5, "the supervisor to drop the attempts")
    run = t.run(run_id)
    assert (run.status, run.counts["cancelled"]) == ("cancelled", 2)


def test_completion_hook_runs_exactly_once(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    run_id = t.submit_run(5, "t_blocking", on_complete="t_hook")
    supervise()
    run = t.wait_run(run_id, 5)
    assert run.hook_task_id is not None
    assert t.task(run.hook_task_id).args == {"run_id": run_id}
    assert t.wait_task(run.hook_task_id, 5).result == "hooked"
    with t.engine.connect() as conn:
        hooks = conn.exec_driver_sql("SELECT count(*) FROM tasks WHERE kind = 't_hook'").scalar()
    assert hooks == 1
    assert [a.outcome for a in t.attempts(run.hook_task_id)] == ["succeeded"]


def test_graceful_stop_releases_leases_for_the_next_supervisor(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    run_id = t.submit_run(3, "t_long", max_attempts=1)
    first = supervise(heartbeat_s=0.5)
    wait_for(lambda: t.run(run_id).counts["running"] == 3, 5, "all three running")
    wait_for(lambda: all(ex.snapshot()[2] for ex in first._inflight.values()), 5, "checkpoints reported")
    assert first.stop(grace_s=0.05, timeout_s=5)
    _, tasks = t.run_with_tasks(run_id)
    assert [task.status for task in tasks] == ["queued"] * 3
    assert all([a.outcome for a in t.attempts(task.id)] == ["released"] for task in tasks)
    # The release carries the last checkpoint: the next attempt resumes from it.
    assert all(t.task(task.id).progress > 0 for task in tasks)
    supervise()
    # max_attempts is 1, yet the released attempt did not use it up: all three run again.
    wait_for(lambda: t.run(run_id).counts["running"] == 3, 5, "the next supervisor to take them")


def test_leases_of_a_dead_supervisor_on_this_host_are_reclaimed_at_start(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    import socket
    import subprocess
    import sys

    from service.storage.leases import Leases
    from service.supervisor.liveness import process_identity

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    leases = Leases(t.engine)
    boot, ticks = process_identity(os.getpid())
    ghost = leases.register(socket.gethostname(), int(dead.stdout), boot, ticks)
    # A ghost with our very pid but another start: a pid reused after a restart, so dead too.
    reused = leases.register(socket.gethostname(), os.getpid(), boot, (ticks or 0) - 1)
    run_id = t.submit_run(4, "t_blocking")
    assert len(leases.claim(ghost, 3)) == 3 and len(leases.claim(reused, 1)) == 1
    # A lease TTL of a minute: only noticing the dead processes can recover these in time.
    supervise(lease_ttl_s=60.0)
    run = t.wait_run(run_id, 3)
    assert run.counts["succeeded"] == 4
    _, tasks = t.run_with_tasks(run_id)
    assert all([(a.outcome, a.charged) for a in t.attempts(task.id)] == [("lost", False), ("succeeded", False)]
               for task in tasks)


def test_a_result_that_is_not_json_fails_the_task_readably(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    task_id = t.submit_task("t_not_json")
    supervise()
    task = t.wait_task(task_id, 5)
    assert task.status == "failed" and "cannot be stored as JSON" in (task.error or "")
    assert task.attempts == 1  # permanent: a retry cannot fix it


def test_a_kind_its_task_processes_cannot_import_fails_with_a_clear_reason(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise) -> None:
    @service.register("t_closure")
    class Closure:
        def __init__(self, args: dict, ctx: service.TaskContext) -> None:
            pass

        def run(self) -> str:
            return "unreachable"

    task_id = t.submit_task("t_closure")
    supervise()
    task = t.wait_task(task_id, 5)
    assert task.status == "failed" and task.attempts == 1
    assert "register kinds at the top level of an importable module" in (task.error or "")


def test_unruly_tasks_end_terminal_with_readable_errors(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    unprintable = t.submit_task("t_unprintable", max_attempts=1)
    flaky_check = t.submit_task("t_flaky_check")
    supervise()
    task = t.wait_task(unprintable, 5)
    assert task.status == "failed" and task.error == "Unprintable: (its message could not be printed)"
    # check_output() raising now and then is logged and checked again, not fatal.
    task = t.wait_task(flaky_check, 5)
    assert (task.status, task.result, task.attempts) == ("succeeded", "ok", 1)


def test_tasks_holding_the_gil_do_not_starve_heartbeats(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    neighbour = t.submit_task("t_long")
    hogs = [t.submit_task("t_gil", {"seconds": 2}) for _ in range(2)]
    # Leases of 0.5 s beaten every 0.05 s, and a second supervisor watching them.
    supervise(lease_ttl_s=0.5, heartbeat_s=0.05)
    supervise(lease_ttl_s=0.5, heartbeat_s=0.05, concurrency=1)
    for hog in hogs:
        assert t.wait_task(hog, 10).result == "held"
    assert t.task(neighbour).status == "running"
    for task_id in (neighbour, *hogs):
        assert [a.outcome for a in t.attempts(task_id)] in (["running"], ["succeeded"]), "a live lease was reaped"


def test_an_idle_supervisor_sleeps_even_once_its_spare_processes_are_old(t: service.Tenure) -> None:
    """The spares kept warm never expire: their idle time must not become a deadline the loop spins on."""
    from service.clock import FakeClock

    clock = FakeClock()
    sup = service.Supervisor(t.engine, service.Settings(**FAST), clock=clock).start()
    try:
        wait_for(lambda: sup.pool.process_count == 2, 5, "the spare task processes")
        clock.advance(3600)  # an hour idle, for every deadline the pool keeps
        sup._post(("wake",))
        before = sup.loop_turns
        threading.Event().wait(0.5)  # half a second of idleness, measured in loop turns
        turns = sup.loop_turns - before
    finally:
        assert sup.stop(grace_s=0.0, timeout_s=5)
    # FAST polls every 0.02 s: ~25 turns in 0.5 s. A spinning loop turns thousands of times.
    assert turns < 100, turns


def test_a_stop_asked_before_start_ends_cleanly_even_before_every_thread_has_started(  # type: ignore[no-untyped-def]
        t: service.Tenure, monkeypatch) -> None:
    """A SIGTERM right after `tenure worker` started (seen in the schedule chaos test): the loop, first to
    start, stopped at once and joined a side thread that was listed but not yet started, which raised
    and made a graceful stop exit 1. Here the heartbeat thread starts only after the loop has ended."""
    from service.supervisor import loop as loop_module

    sup = service.Supervisor(t.engine, service.Settings(**FAST))
    real = threading.Thread

    class LateHeartbeat(real):  # type: ignore[misc, valid-type]
        def start(self) -> None:
            if self.name == "tenure-heartbeat":
                sup.stopped.wait(10)
            super().start()

    monkeypatch.setattr(loop_module.threading, "Thread", LateHeartbeat)
    sup.request_stop(grace_s=0.0)
    sup.start()
    assert sup.stopped.wait(10)
    assert sup.fatal is None, sup.fatal
