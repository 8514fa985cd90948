"""An innocent task is never charged, and a stop its supervisor caused on purpose never counts against it.

Not for what an earlier occupant of its process left running there, nor for a state an earlier
occupant corrupted, nor for a neighbour's timeout that ended the process it waited in, nor for
waiting for a task process that took too long to start. Real task processes, tiny durations.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import service
from tests import kinds_for_tests as k
from tests import slow_kinds  # noqa: F401  (registers t_slow_import)
from tests.conftest import wait_for
from tests.integration.test_supervisor import _alive


@pytest.mark.parametrize("how", ["thread", "child", "alarm"])
def test_what_a_task_leaves_running_in_its_process_never_costs_the_next_one(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, tmp_path: Path, how: str) -> None:
    """Its run() returns, but leaves what kills the process 0.3 s later. The next task, running for a
    second, must not be in that process: it would be charged a crash (with one attempt, failed)."""
    log = tmp_path / "journal"
    supervise(concurrency=1)
    saboteur = t.submit_task("t_saboteur", {"how": how, "after_s": 0.3, "journal": str(log)}, max_attempts=1)
    assert t.wait_task(saboteur, 5).status == "succeeded"
    victim = t.submit_task("t_blocking", {"seconds": 1.0, "journal": str(log)}, max_attempts=1)
    done = t.wait_task(victim, 10)
    assert (done.status, done.attempts, done.charged, done.lost) == ("succeeded", 1, 0, 0), t.attempts(victim)
    ((*_, sabotaged),), ((*_, ran_in),) = k.events(log, "saboteur"), k.events(log, "blocking")
    assert ran_in != sabotaged, "the next task ran in the process the saboteur left something in"
    wait_for(lambda: not _alive(sabotaged), 5, "the retired process to exit")


def test_a_crash_in_a_process_an_earlier_task_used_is_nobody_s_for_sure(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, tmp_path: Path) -> None:
    """What no process can see (a corrupted state) kills the next occupant: lost, not charged, and it
    runs alone in a fresh process from then on, where it succeeds."""
    log = tmp_path / "journal"
    supervise(concurrency=1)
    assert t.wait_task(t.submit_task("t_corrupter", {"journal": str(log)}), 5).status == "succeeded"
    victim = t.submit_task("t_victim", {"journal": str(log)}, max_attempts=1)
    done = t.wait_task(victim, 10)
    assert (done.status, done.charged, done.isolated) == ("succeeded", 0, True), t.attempts(victim)
    (*_, corrupted), = k.events(log, "corrupter")
    first, second = k.events(log, "victim")
    assert first[3] == corrupted and second[3] != corrupted, "the scenario: its first attempt reused the process"
    assert [(a.outcome, a.charged) for a in t.attempts(victim)] == [("lost", False), ("succeeded", False)]
    assert "in a process that earlier tasks had run in" in (t.attempts(victim)[0].error or "")


def test_memory_an_earlier_task_left_in_its_process_is_not_charged_to_the_next(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, tmp_path: Path) -> None:
    """A task keeps 250 MiB alive in its process and succeeds; the next, allocating 200 MiB under a
    400 MiB limit (it succeeds alone), hits the limit there. Which attempt hit it says nothing of whose
    memory it was: lost, not charged, and it runs again alone in a fresh process, where it succeeds."""
    log = tmp_path / "journal"
    hog = t.submit_task("t_hog", {"mb": 250, "journal": str(log)}, max_attempts=1, memory_limit_mb=400)
    modest = t.submit_task("t_modest", {"mb": 200, "journal": str(log)}, max_attempts=1, memory_limit_mb=400)
    supervise(concurrency=1)
    assert t.wait_task(hog, 20).status == "succeeded"
    done = t.wait_task(modest, 20)
    assert (done.status, done.charged) == ("succeeded", 0), t.attempts(modest)
    assert [(a.outcome, a.charged) for a in t.attempts(modest)] == [("lost", False), ("succeeded", False)]
    assert k.events(log, "modest")[0][3] == k.events(log, "hog")[0][3], "the scenario: they shared a process"


def test_a_neighbour_s_timeout_that_ends_the_process_never_counts_against_a_waiting_task(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A polling task waits in a process (its kind parks, so the kind's next run() joins it); that
    run() hangs past its timeout, three times over. Each time its process is ended on purpose, and the
    waiting task is lost: never charged, and never counted toward the 20 losses that fail a task."""
    from service.supervisor import placement

    # On a loaded machine the waiting task's first check can take over 50 ms, and placement would
    # then keep run()s away from its process: that rule is not what this test is about.
    monkeypatch.setattr(placement, "SLOW_CHECK_S", 60.0)
    log = tmp_path / "journal"
    waiting = t.submit_task("t_two_faced", {"value": 1, "seconds": 60, "interval": 5.0, "journal": str(log)})
    sup = supervise()
    for round_ in range(1, 4):
        wait_for(lambda n=round_: len(k.events(log, "polling.check")) >= n, 10, f"it to wait (round {round_})")
        wait_for(lambda: any(p.parked and not p.checks for p in list(sup.pool.processes.values())), 5,
                 "its first check to end: it waits between checks")
        hang = t.submit_task("t_two_faced", {"hang": True, "journal": str(log)}, timeout_s=0.3, max_attempts=1)
        assert [a.outcome for a in t.attempts(t.wait_task(hang, 10).id)] == ["timed_out"]
        assert k.events(log, "hang")[-1][3] == k.events(log, "polling.run")[round_ - 1][3], "they shared a process"
        wait_for(lambda n=round_: t.task(waiting).attempts == n + 1, 10, "the waiting task to run again")
    task = t.task(waiting)
    lost = [a for a in t.attempts(waiting) if a.outcome == "lost"]
    assert len(lost) == 3 and not any(a.charged for a in lost)
    assert (task.charged, task.lost) == (0, 0), "a loss its supervisor caused on purpose was counted"
    t.cancel_task(waiting)


def test_waiting_for_a_task_process_is_never_charged(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, monkeypatch: pytest.MonkeyPatch) -> None:
    """The zygote spends 1.5 s importing a kind's module, and attempts may wait only 0.5 s for a
    process: each attempt that got none is lost (its code never ran), and the task runs once one starts."""
    monkeypatch.setenv("TENURE_TEST_SLOW_IMPORT_S", "1.5")
    task_id = t.submit_task("t_slow_import", max_attempts=1)
    supervise(process_start_s=0.5)
    done = t.wait_task(task_id, 20)
    attempts = t.attempts(task_id)
    assert (done.status, done.result, done.charged) == ("succeeded", "ran", 0), attempts
    assert [a.outcome for a in attempts[:-1]] and all(a.outcome == "lost" and not a.charged for a in attempts[:-1])
    assert "no task process started for it within 0.5 s" in (attempts[0].error or "")
