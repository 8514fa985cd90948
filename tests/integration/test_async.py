"""Async tasks (``async def run()``) run on their host's event loop, many to one process, and
end, report, time out, cancel and lose their lease as every other task does.

Real processes, tiny durations; an embedded supervisor on each backend.
"""

from __future__ import annotations

import json
from pathlib import Path

import service
from service.storage.leases import Leases
from tests import kinds_for_tests as k
from tests.conftest import wait_for
from tests.integration.test_supervisor import _alive


def _checkpoint(t: service.Tenure, task_id: int) -> object:
    with t.engine.connect() as conn:
        raw = conn.exec_driver_sql(f"SELECT checkpoint FROM tasks WHERE id = {int(task_id)}").scalar()
    return json.loads(raw) if isinstance(raw, str) else raw


def test_async_tasks_end_with_their_value_or_their_traceback(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    ok = [t.submit_task("t_async", {"value": v, "steps": 2}) for v in range(5)]
    bad = t.submit_task("t_async", {"fail": True}, max_attempts=1)
    polling = t.submit_task("t_async_poll", {"value": 4, "seconds": 0.05})
    supervise()
    for v, task_id in enumerate(ok):
        task = t.wait_task(task_id, 10)
        assert (task.status, task.result["out"], task.progress) == ("succeeded", 2 * v, 1.0)
        assert "hello from an async task" in (t.attempts(task_id)[0].logs or "")
    task = t.wait_task(bad, 10)
    assert (task.status, task.error) == ("failed", "ValueError: the async task failed on purpose")
    (attempt,) = t.attempts(bad)
    assert attempt.traceback is not None and "in run" in attempt.traceback and "failed on purpose" in attempt.traceback
    assert t.wait_task(polling, 10).result == 8


def test_progress_and_checkpoints_of_an_async_task_reach_the_database(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    task_id = t.submit_task("t_async", {"seconds": 3.0, "steps": 60})
    supervise()
    wait_for(lambda: t.task(task_id).progress > 0.05, 5, "progress written by a heartbeat")
    wait_for(lambda: isinstance(_checkpoint(t, task_id), dict), 5, "a checkpoint written by a heartbeat")
    assert t.task(task_id).status == "running"


def test_many_async_tasks_share_one_process(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    run_id = t.submit_run(300, "t_async", {"seconds": 0.3})
    sup = supervise(concurrency=300)
    most = [0]

    def all_succeeded() -> bool:  # and the most task processes seen meanwhile
        most[0] = max(most[0], sup.pool.process_count)
        return bool(t.run(run_id).counts["succeeded"] == 300)

    wait_for(all_succeeded, 15, "every task to succeed")
    _, tasks = t.run_with_tasks(run_id)
    assert len({task.result["pid"] for task in tasks}) == 1, "one process hosted them all"
    assert most[0] <= 3, most  # the spares kept warm, and no process per task


def test_a_timeout_cancels_an_async_task_and_spares_its_process(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, tmp_path: Path) -> None:
    log = tmp_path / "journal"
    neighbour = t.submit_task("t_async", {"seconds": 1.0, "value": 1, "journal": str(log)})
    slow = t.submit_task("t_async", {"seconds": 30, "journal": str(log)}, timeout_s=0.5, max_attempts=1)
    supervise()
    task = t.wait_task(slow, 5)
    assert (task.status, [a.outcome for a in t.attempts(slow)]) == ("failed", ["timed_out"])
    wait_for(lambda: [row for row in k.events(log, "async.ended") if row[1] == slow], 2,
             "the timed-out coroutine to be cancelled (its finally ran)")
    done = t.wait_task(neighbour, 5)
    assert (done.status, done.attempts, done.lost) == ("succeeded", 1, 0)
    pids = {pid for *_, pid in k.events(log, "async.start")}
    assert len(pids) == 1 and all(_alive(pid) for pid in pids), "a responsive task's timeout ends no process"


def test_cancelling_a_run_cancels_its_async_tasks(t: service.Tenure, supervise, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "journal"
    run_id = t.submit_run(3, "t_async", {"seconds": 30, "journal": str(log)})
    sup = supervise()
    wait_for(lambda: len(k.events(log, "async.start")) == 3, 5, "all three running")
    t.cancel_run(run_id)
    wait_for(lambda: len(k.events(log, "async.ended")) == 3, 3, "their coroutines to be cancelled")
    wait_for(lambda: sup.inflight == 0, 5, "the supervisor to drop the attempts")
    assert t.run(run_id).counts["cancelled"] == 3
    assert all(_alive(pid) for *_, pid in k.events(log, "async.start"))


def test_an_async_task_whose_lease_was_taken_is_cancelled(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, tmp_path: Path) -> None:
    log = tmp_path / "journal"
    task_id = t.submit_task("t_async", {"seconds": 30, "journal": str(log)})
    sup = supervise()
    wait_for(lambda: k.events(log, "async.start"), 5, "the task to start")
    assert sup.supervisor_id is not None
    Leases(t.engine).reclaim_supervisor(sup.supervisor_id, "judged dead by another supervisor")
    wait_for(lambda: k.events(log, "async.ended"), 3, "the stale execution's coroutine to be cancelled")
    wait_for(lambda: t.task(task_id).attempts == 2, 5, "the task to run again")
    assert [a.outcome for a in t.attempts(task_id)][:1] == ["lost"]


def test_a_task_blocking_the_loop_ends_its_process_past_its_timeout_and_charges_no_neighbour(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, tmp_path: Path) -> None:
    log = tmp_path / "journal"
    neighbours = [t.submit_task("t_async", {"seconds": 1.0, "value": v, "journal": str(log)}, max_attempts=1)
                  for v in range(4)]
    supervise()
    wait_for(lambda: len(k.events(log, "async.start")) == 4, 5, "the neighbours to wait on one loop")
    (host_pid,) = {pid for *_, pid in k.events(log, "async.start")}
    # Its first task teaches the pool that the kind is async (in a process of its own); the next
    # then goes to the fullest event loop: the neighbours'.
    assert t.wait_task(t.submit_task("t_async_block", {"seconds": 0}), 5).status == "succeeded"
    blocker = t.submit_task("t_async_block", {"seconds": 30, "journal": str(log)}, timeout_s=0.5, max_attempts=1)
    wait_for(lambda: k.events(log, "async.block"), 5, "the blocker to start")
    assert k.events(log, "async.block")[0][3] == host_pid, "it shares the neighbours' loop"
    task = t.wait_task(blocker, 5)
    assert [a.outcome for a in t.attempts(blocker)] == ["timed_out"]
    wait_for(lambda: not _alive(host_pid), 3, "the blocked process to be ended")
    for v, n in enumerate(neighbours):
        done = t.wait_task(n, 10)
        # Lost for the blocker's sake, on purpose: neither charged nor counted toward the loss cap.
        assert (done.status, done.result["out"], done.charged, done.lost) == ("succeeded", 2 * v, 0, 0), done
        assert [a.outcome for a in t.attempts(n)] == ["lost", "succeeded"]
        assert "blocked its event loop" in (t.attempts(n)[0].error or "")
    assert task.status == "failed"


def test_a_kind_of_two_shapes_runs_each_task_as_what_it_is(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    first = t.submit_task("t_shape_shifter", {"async": True, "value": 1})
    sup = supervise()
    assert t.wait_task(first, 5).result["out"] == 2  # the pool now takes the kind for async
    blocking = t.submit_task("t_shape_shifter", {"value": 3})
    asynchronous = t.submit_task("t_shape_shifter", {"async": True, "value": 4})
    assert t.wait_task(blocking, 5).result == {"out": 6}
    assert t.wait_task(asynchronous, 5).result["out"] == 8
    assert sup.fatal is None
