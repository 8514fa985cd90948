"""Task code runs in processes the supervisor owns: a task that kills, hangs or bloats its
process fails alone, with a reason a person understands, and only it is charged.

Real processes and real signals, with tiny durations; an embedded supervisor on each backend.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import service
from service.storage.leases import Leases
from tests import kinds_for_tests as k
from tests.conftest import wait_for
from tests.integration.conftest import FAST
from tests.integration.test_supervisor import _alive

POISONS = {
    "exit": "crashed: its process exited with code 70",
    "segv": "crashed: its process was killed by signal 11 (SIGSEGV: Segmentation fault)",
    "sigkill": "crashed: its process was killed by signal 9 (SIGKILL: Killed)",
    "memory": "crashed: it exceeded its memory limit of 256 MiB",
}


@pytest.fixture
def supervisor_defaults() -> dict[str, object]:
    return {"memory_limit_mb": 256}  # the poison tests' memory limit


@pytest.mark.parametrize("how", sorted(POISONS))
def test_a_task_that_kills_its_process_is_charged_alone(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, how: str) -> None:
    poison = t.submit_task("t_poison", {"how": how}, max_attempts=2)
    neighbours = [t.submit_task("t_blocking", {"value": v, "seconds": 0.3}) for v in range(6)]
    sup = supervise()
    task = t.wait_task(poison, 10)
    assert task.status == "failed"
    assert task.error is not None and task.error.startswith(POISONS[how]), task.error
    assert [(a.outcome, a.charged) for a in t.attempts(poison)] == [("crashed", True)] * 2
    for v, n in enumerate(neighbours):
        done = t.wait_task(n, 10)
        assert (done.status, done.result, done.attempts, done.charged) == ("succeeded", {"out": 2 * v}, 1, 0)
    assert sup.fatal is None and not sup.stopped.is_set()  # no crash loop: the supervisor carries on


@pytest.mark.parametrize("kind", ["t_hang", "t_spin", "t_regex"])
def test_a_task_past_its_timeout_burns_nothing_after_it(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, tmp_path: Path, kind: str) -> None:
    log = tmp_path / "journal"
    stuck = t.submit_task(kind, {"journal": str(log)}, timeout_s=0.5, max_attempts=1)
    supervise()
    wait_for(lambda: k.events(log, kind.removeprefix("t_")), 5, "the task to start")
    ((_, _, _, pid),) = k.events(log, kind.removeprefix("t_"))
    task = t.wait_task(stuck, 5)
    timed_out = time.monotonic()
    assert (task.status, [a.outcome for a in t.attempts(stuck)]) == ("failed", ["timed_out"])
    wait_for(lambda: not _alive(pid), 2, f"the {kind} process to end")
    assert time.monotonic() - timed_out < 1.5


def test_a_task_that_ignores_sigterm_is_killed_after_the_grace(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, tmp_path: Path) -> None:
    """Every other stopped task dies of SIGTERM alone: this one shows that SIGKILL follows the grace."""
    log = tmp_path / "journal"
    stuck = t.submit_task("t_stubborn", {"journal": str(log)}, timeout_s=0.3, max_attempts=1)
    supervise(kill_grace_s=0.5)
    wait_for(lambda: k.events(log, "stubborn"), 5, "the task to start")
    ((_, _, _, pid),) = k.events(log, "stubborn")
    assert [a.outcome for a in t.attempts(t.wait_task(stuck, 5).id)] == ["timed_out"]
    timed_out = time.monotonic()
    wait_for(lambda: not _alive(pid), 3, "the process that ignores SIGTERM to be killed")
    assert time.monotonic() - timed_out < 2.0


def test_cancel_then_retry_stops_the_old_attempt_and_runs_the_new_one(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, tmp_path: Path) -> None:
    log = tmp_path / "journal"
    run_id = t.submit_run(1, "t_long", {"journal": str(log), "steps": 40, "step_s": 0.02})
    supervise(lease_check_s=5.0)  # the retry is claimed before the cancel is noticed
    wait_for(lambda: k.events(log, "long.start"), 5, "attempt 1 to start")
    t.cancel_run(run_id)
    t.retry_run(run_id)
    run = t.wait_run(run_id, 10)
    starts = k.events(log, "long.start")
    assert [attempt for _, _, attempt, _ in starts] == [1, 2]
    (task,) = t.run_with_tasks(run_id)[1]
    assert run.counts["succeeded"] == 1 and task.result == "done"
    assert [a.outcome for a in t.attempts(task.id)] == ["cancelled", "succeeded"]
    assert not _alive(starts[0][3]), "the cancelled attempt's process runs on"


def test_an_execution_whose_lease_was_taken_stops_at_once(t: service.Tenure, supervise, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "journal"
    task_id = t.submit_task("t_long", {"journal": str(log), "steps": 500, "step_s": 0.02})
    sup = supervise()
    wait_for(lambda: k.events(log, "long.start"), 5, "the task to start")
    ((_, _, _, pid),) = k.events(log, "long.start")
    # Another supervisor decides this one is dead (a long stall, a partition) and takes the task.
    assert sup.supervisor_id is not None
    Leases(t.engine).reclaim_supervisor(sup.supervisor_id, "judged dead by another supervisor")
    wait_for(lambda: not _alive(pid), 2, "the stale execution's process to end")
    wait_for(lambda: t.task(task_id).attempts == 2, 5, "the task to run again")
    assert [a.outcome for a in t.attempts(task_id)][:1] == ["lost"]


def test_a_crash_in_a_shared_process_isolates_everyone_and_charges_no_one(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, tmp_path: Path) -> None:
    log = tmp_path / "journal"
    # It checks right after run() returns, then every 2 s. Its kind parks, so the next run() of that
    # kind goes to its process (the kind's tasks gather there), and that one kills it.
    waiting = t.submit_task("t_two_faced", {"value": 3, "seconds": 2.0, "interval": 2.0, "journal": str(log)})
    sup = supervise()
    wait_for(lambda: any(h.parked and not h.checks for h in list(sup.pool.processes.values())), 5,
             "the polling task to wait in its process")
    poison = t.submit_task("t_two_faced", {"poison": "segv", "journal": str(log)}, max_attempts=2)
    first = t.wait_task(poison, 10)
    assert first.status == "failed"
    assert [(a.outcome, a.charged) for a in t.attempts(poison)] == [("lost", False), ("crashed", True),
                                                                   ("crashed", True)]
    assert k.events(log, "poison")[0][3] == k.events(log, "polling.run")[0][3], "they shared a process"
    done = t.wait_task(waiting, 10)
    assert (done.status, done.result, done.charged, done.lost, done.isolated) == ("succeeded", 6, 0, 1, True)
    assert [a.outcome for a in t.attempts(waiting)] == ["lost", "succeeded"]
    assert sup.fatal is None


def test_a_waiting_polling_task_past_its_timeout_leaves_its_neighbours_alone(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, tmp_path: Path) -> None:
    log = tmp_path / "journal"
    # It checks right after run() returns, then only every 60 s: a quiet host for what follows.
    slow = t.submit_task("t_polling", {"value": 1, "seconds": 60, "interval": 60, "journal": str(log)},
                         timeout_s=1.5)
    sup = supervise()
    wait_for(lambda: any(h.parked and not h.checks for h in list(sup.pool.processes.values())), 5, "it to wait")
    quick = t.submit_task("t_polling", {"value": 2, "seconds": 0.5, "journal": str(log)})
    wait_for(lambda: len(k.events(log, "polling.run")) == 2, 5, "both to wait")
    assert len({pid for *_, pid in k.events(log, "polling.run")}) == 1, "they wait in one host"
    assert t.wait_task(slow, 5).status == "failed"
    assert [a.outcome for a in t.attempts(slow)] == ["timed_out"]
    done = t.wait_task(quick, 5)
    assert (done.status, done.result, done.attempts) == ("succeeded", 4, 1)


def test_a_run_can_set_its_own_memory_limit(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    run_id = t.submit_run(1, "t_poison", {"how": "memory"}, max_attempts=1, memory_limit_mb=128)
    supervise(memory_limit_mb=1024)
    t.wait_run(run_id, 10)
    (task,) = t.run_with_tasks(run_id)[1]
    assert task.error == "crashed: it exceeded its memory limit of 128 MiB"


def test_a_dead_zygote_is_replaced_and_its_tasks_run_again_uncharged(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, tmp_path: Path) -> None:
    import os
    import signal

    log = tmp_path / "journal"
    ids = [t.submit_task("t_long", {"journal": str(log), "steps": 60, "step_s": 0.02}, max_attempts=1)
           for _ in range(3)]
    sup = supervise()
    wait_for(lambda: len(k.events(log, "long.start")) == 3, 5, "three tasks running")
    assert sup.pool.spawner.process is not None
    os.kill(sup.pool.spawner.process.pid, signal.SIGKILL)
    for task_id in ids:
        task = t.wait_task(task_id, 15)
        assert (task.status, task.charged, task.lost) == ("succeeded", 0, 1), task
    assert sup.fatal is None


def test_a_zygote_that_keeps_dying_stops_the_supervisor_loudly(t: service.Tenure, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import os
    import signal

    from service.supervisor import spawner

    sup = t.start_supervisor(**FAST)
    for _ in range(spawner.DEATHS):
        wait_for(lambda: (sup.pool.spawner.process is not None and sup.pool.spawner.process.poll() is None
                          and sup.pool.spawner.up), 5, "a zygote to run")
        assert sup.pool.spawner.process is not None
        os.kill(sup.pool.spawner.process.pid, signal.SIGKILL)
        pid = sup.pool.spawner.process.pid
        wait_for(lambda pid=pid: sup.stopped.is_set() or (sup.pool.spawner.process is not None
                                                          and sup.pool.spawner.process.pid != pid),
                 5, "the zygote to be replaced")
    assert sup.stopped.wait(5)
    assert sup.fatal is not None and "died 3 times within 60 s" in str(sup.fatal)


def _children(log: Path) -> list[int]:
    return [int(event.split(":")[1]) for event, *_ in k.journal(log) if event.startswith("child:")]


def test_a_crash_is_seen_even_when_a_child_keeps_the_task_process_socket_open(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, tmp_path: Path) -> None:
    log = tmp_path / "journal"
    task_id = t.submit_task("t_spawner", {"how": "exit", "journal": str(log)}, max_attempts=1, timeout_s=30)
    supervise()
    task = t.wait_task(task_id, 10)
    assert (task.status, task.error) == ("failed", "crashed: its process exited with code 70")
    (child,) = _children(log)
    wait_for(lambda: not _alive(child), 2, "the task's child to die with its process group")


def test_a_timeout_ends_what_the_task_started_even_if_it_ignores_sigterm(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, tmp_path: Path) -> None:
    log = tmp_path / "journal"
    task_id = t.submit_task("t_spawner", {"how": "hang", "journal": str(log)}, max_attempts=1, timeout_s=1.0)
    supervise()
    assert [a.outcome for a in t.attempts(t.wait_task(task_id, 10).id)] == ["timed_out"]
    (child,) = _children(log)
    wait_for(lambda: not _alive(child), 3, "the child that ignores SIGTERM to be killed")


def test_a_task_that_kills_the_zygote_costs_no_one_an_attempt_and_stops_nothing(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, tmp_path: Path) -> None:
    log = tmp_path / "journal"
    killer = t.submit_task("t_zygote_killer", {"journal": str(log)}, max_attempts=1)
    neighbour = t.submit_task("t_long", {"journal": str(log), "steps": 50, "step_s": 0.02}, max_attempts=1)
    sup = supervise()
    for task_id, result in ((killer, "survived"), (neighbour, "done")):
        task = t.wait_task(task_id, 15)
        # Lost and counted (one of them may have killed it), not isolated: a process of its own would
        # still be the zygote's child, so isolation could tell nothing more.
        assert (task.status, task.result, task.charged, task.lost, task.isolated) == (
            "succeeded", result, 0, 1, False), task
    assert sup.fatal is None and not sup.stopped.is_set()


def test_no_run_is_placed_beside_a_check_that_holds_the_gil(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, tmp_path: Path) -> None:
    log = tmp_path / "journal"
    slow = t.submit_task("t_slow_check", {"journal": str(log), "hold_s": 2, "checks": 2})
    supervise()
    wait_for(lambda: k.events(log, "slowcheck.check"), 5, "the first slow check to begin")
    quick = t.submit_task("t_blocking", {"value": 1, "journal": str(log)}, timeout_s=1.5)
    assert t.wait_task(quick, 5).result == {"out": 2}
    assert k.events(log, "blocking")[0][3] != k.events(log, "slowcheck.run")[0][3]
    assert t.wait_task(slow, 10).result == "checked"


def test_a_loss_the_database_refused_is_handed_back_later(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, tmp_path: Path) -> None:
    from service.errors import StorageError
    from service.storage.endings import End
    from service.storage.models import Outcome

    log = tmp_path / "journal"
    task_id = t.submit_task("t_zygote_killer", {"journal": str(log), "after_s": 0.3}, max_attempts=1)
    sup = supervise()
    real, calls = sup.leases.end_attempts, []

    def flaky(holder: int, ends: list[End]) -> set[tuple[int, int]]:
        calls.append([e.outcome for e in ends])
        if len(calls) == 1:
            raise StorageError("the database is busy (simulated)")
        return real(holder, ends)

    sup.leases.end_attempts = flaky  # type: ignore[method-assign]
    task = t.wait_task(task_id, 15)
    assert (task.status, task.lost) == ("succeeded", 1)
    assert calls[:2] == [[Outcome.LOST], [Outcome.LOST]], calls


def test_a_checkpoint_over_its_limit_fails_the_task_with_the_reason(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    task_id = t.submit_task("t_big_checkpoint", max_attempts=1)
    supervise()
    task = t.wait_task(task_id, 5)
    assert task.status == "failed" and "over the limit of 1048576 bytes" in (task.error or "")


@pytest.mark.heavy
def test_hundreds_of_task_processes_at_once_do_not_jam_the_zygote(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    if t.engine.dialect.name != "sqlite":
        pytest.skip("a process-count test; the backend changes nothing")
    run_id = t.submit_run(700, "t_blocking", {"seconds": 0.5})
    supervise(concurrency=700, memory_limit_mb=None)
    assert t.wait_run(run_id, 60).counts["succeeded"] == 700


def test_task_processes_yield_the_cpu_to_their_supervisor(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    from service.task_process.zygote import TASK_NICE

    task = t.submit_task("t_nice")
    supervise()
    assert t.wait_task(task, 10).result == os.nice(0) + TASK_NICE
