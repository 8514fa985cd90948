"""Each supervisor is judged by its own promise, and learns when others judged it dead.

A supervisor's heartbeat interval and lease TTL are kept in its ``supervisors`` row; a watcher
declares it dead only when its heartbeat has not changed for *that* TTL, on the watcher's own
monotonic clock. A supervisor found stopped (judged dead, or its row pruned) at its heartbeat
says so in its log and registers again, so that it is rung, shown and counted as alive.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import delete, select

import service
from service.clock import FakeClock
from service.config import Settings
from service.storage.leases import Leases
from service.storage.models import SupervisorRow
from service.supervisor.upkeep import Upkeep
from tests import kinds_for_tests as k
from tests.conftest import wait_for


def test_a_watcher_with_a_short_ttl_leaves_a_slow_supervisor_s_healthy_leases_alone(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, tmp_path: Path) -> None:
    """A beats every 0.6 s and promised a 3 s TTL; B, with a 0.3 s TTL of its own, looks every 50 ms.

    Judged by B's TTL, A would be dead 0.3 s after each beat: B would reclaim its task within a
    second. Judged by A's own, A is alive throughout, and its task ends in one attempt.
    """
    log = tmp_path / "journal"
    task_id = t.submit_task("t_long", {"journal": str(log), "steps": 100, "step_s": 0.025}, max_attempts=1)
    slow = supervise(heartbeat_s=0.6, lease_ttl_s=3.0)
    wait_for(lambda: k.events(log, "long.start"), 5, "the slow supervisor to start the task")
    supervise(heartbeat_s=0.05, lease_ttl_s=0.3, reclaim_every_s=0.05)
    done = t.wait_task(task_id, 15)
    assert (done.status, done.attempts, done.lost) == ("succeeded", 1, 0), [a.error for a in t.attempts(task_id)]
    assert [a.supervisor_id for a in t.attempts(task_id)] == [slow.supervisor_id]
    with t.engine.connect() as conn:
        promised = conn.execute(select(SupervisorRow.heartbeat_s, SupervisorRow.lease_ttl_s)
                                .where(SupervisorRow.id == slow.supervisor_id)).one()
    assert tuple(promised) == (0.6, 3.0)


def test_a_silent_supervisor_is_still_reclaimed_after_its_own_ttl(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise) -> None:
    """The other direction: a holder that promised a short TTL is reclaimed by a watcher whose own is long."""
    leases = Leases(t.engine)
    silent = leases.register("elsewhere", 1, None, None, heartbeat_s=0.1, lease_ttl_s=0.5)
    t.submit_run(1, "echo")
    (lease,) = leases.claim(silent, 1)
    supervise(heartbeat_s=1.0, lease_ttl_s=60.0, reclaim_every_s=0.05)
    done = t.wait_task(lease.task_id, 10)  # reclaimed after ~0.5 s of silence, not 60 s, and run again
    assert done.status == "succeeded" and [a.outcome for a in t.attempts(lease.task_id)] == ["lost", "succeeded"]


def _stopped_at(t: service.Tenure, supervisor_id: int) -> object:
    with t.engine.connect() as conn:
        return conn.execute(select(SupervisorRow.stopped_at).where(SupervisorRow.id == supervisor_id)).one()[0]


@pytest.mark.parametrize("how", ["judged dead", "row pruned"])
def test_a_supervisor_judged_dead_learns_it_at_its_next_heartbeat_and_is_alive_again(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, caplog: pytest.LogCaptureFixture, how: str) -> None:
    caplog.set_level(logging.WARNING, logger="tenure")
    # It polls for work once a minute: only a ring (a doorbell, a NOTIFY) can bring it new work in time.
    sup = supervise(heartbeat_s=0.1, idle_poll_s=60.0)
    assert sup.supervisor_id is not None
    leases = Leases(t.engine)
    if how == "judged dead":
        leases.reclaim_supervisor(sup.supervisor_id, "judged dead by another supervisor")
        assert _stopped_at(t, sup.supervisor_id) is not None
    else:
        with t.engine.begin() as conn:
            conn.execute(delete(SupervisorRow).where(SupervisorRow.id == sup.supervisor_id))
    wait_for(lambda: "supervisor.judged_dead" in caplog.text, 5, "the supervisor to learn it was judged dead")
    wait_for(lambda: leases.live_supervisors_on(sup.host, except_id=-1), 5, "its row to be alive again")
    ((alive,),) = [(s.id,) for s in leases.live_supervisors_on(sup.host, except_id=-1)]
    assert alive == sup.supervisor_id
    assert t.wait_task(t.submit_task("echo", {"x": 1}), 5).status == "succeeded", "it was not rung"


def test_a_supervisor_that_stops_stays_stopped(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its own stop is no judgment: a heartbeat between marking itself stopped and its heartbeat
    thread ending must not register it again. That window is short, so the stop holds it open
    until the heartbeat thread (every 10 ms here) has beaten in it at least once."""
    sup = supervise(heartbeat_s=0.01)
    assert sup.supervisor_id is not None

    def beats() -> float:
        return sup.metrics.registry.get_sample_value("tenure_heartbeat_lag_seconds_count") or 0

    wait_for(lambda: beats() > 5, 5, "a few heartbeats")
    mark_stopped = sup.leases.stop_supervisor
    beats_in_window: list[float] = []

    def mark_stopped_then_let_it_beat(supervisor_id: int) -> None:
        mark_stopped(supervisor_id)
        before = beats()  # a beat counted from here on began no earlier than the one in flight now
        wait_for(lambda: beats() >= before + 2, 5, "a heartbeat after the supervisor marked itself stopped")
        beats_in_window.append(beats() - before)

    monkeypatch.setattr(sup.leases, "stop_supervisor", mark_stopped_then_let_it_beat)
    assert sup.stop(grace_s=0.0, timeout_s=10)
    assert beats_in_window and beats_in_window[0] >= 2
    assert _stopped_at(t, sup.supervisor_id) is not None


def _watching(t: service.Tenure, clock: FakeClock) -> tuple[Leases, Upkeep, int, int]:
    leases = Leases(t.engine)
    watcher = Upkeep(leases, Settings(heartbeat_s=5.0, lease_ttl_s=15.0), clock)
    watcher_id = watcher.register("host-w")
    holder = leases.register("host-s", 4242, None, None, heartbeat_s=5.0, lease_ttl_s=15.0)
    return leases, watcher, watcher_id, holder


def test_a_supervisor_judged_dead_claims_nothing_until_it_lives_again_and_then_gets_a_full_ttl(
        t: service.Tenure, fake_clock: FakeClock) -> None:
    """After a stall its loop may claim before its heartbeat learns it was judged dead: such leases
    were judged by the old silence and reclaimed at the watcher's next look, each a counted loss."""
    leases, watcher, watcher_id, stalled = _watching(t, fake_clock)
    task_id = t.submit_task("echo", {"x": 1})
    leases.claim(stalled, 1)
    watcher.reclaim_silent(watcher_id)
    while t.task(task_id).status == "running":  # a look a second sees its heartbeat unchanged, for 15 s
        fake_clock.advance(1.0)
        watcher.reclaim_silent(watcher_id)
    assert [a.outcome for a in t.attempts(task_id)] == ["lost"]
    assert leases.claim(stalled, 1) == [], "a supervisor judged dead claimed before it knew"
    leases.register_again(stalled, "host-s", 4242, None, None, heartbeat_s=5.0, lease_ttl_s=15.0)
    assert [lease.attempt for lease in leases.claim(stalled, 1)] == [2]
    for _ in range(14):  # 14 s of silence of the living again: within its TTL
        fake_clock.advance(1.0)
        watcher.reclaim_silent(watcher_id)
    task = t.task(task_id)
    assert (task.status, task.attempts, task.lost) == ("running", 2, 1), "a fresh lease judged by an old silence"


def test_a_holder_that_beats_after_it_was_judged_keeps_its_leases(t: service.Tenure, fake_clock: FakeClock) -> None:
    """The reclaim is a compare-and-set on the heartbeat value it judged: a beat between the watcher's
    read and its reclaim (a wait for SQLite's write lock, say) keeps every lease."""
    leases, watcher, watcher_id, holder = _watching(t, fake_clock)
    task_id = t.submit_task("echo", {"x": 1})
    leases.claim(holder, 1)
    for _ in range(15):  # 14 s of silence seen: alive still
        watcher.reclaim_silent(watcher_id)
        fake_clock.advance(1.0)
    real = leases.reclaim_supervisor

    def after_a_beat(dead: int, reason: str, **kwargs: object) -> list[tuple[int, int]]:
        assert leases.heartbeat(holder).alive  # it beats now, after the read, before the reclaim
        return real(dead, reason, **kwargs)  # type: ignore[arg-type]

    leases.reclaim_supervisor = after_a_beat  # type: ignore[method-assign]
    watcher.reclaim_silent(watcher_id)  # the 15th second: judged dead by what it read
    assert t.task(task_id).status == "running", "a supervisor whose heartbeat had just changed lost its lease"
    assert _stopped_at(t, holder) is None
