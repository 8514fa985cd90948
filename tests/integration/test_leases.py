"""The lease protocol against a real database and a clock moved by hand."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

import service
from service.clock import FakeClock
from service.leases import Leases
from service.models import Outcome

TTL = 15.0


@pytest.fixture
def env(open_tenure, fake_clock: FakeClock):  # type: ignore[no-untyped-def]
    t = open_tenure(clock=fake_clock)
    leases = Leases(t.engine)
    a = leases.register_worker("host-a", 1001, fake_clock.now())
    b = leases.register_worker("host-b", 1002, fake_clock.now())
    return t, leases, fake_clock, a, b


def statuses(t: service.Tenure, run_id: int) -> list[str]:
    _, tasks = t.run_with_tasks(run_id)
    return [task.status for task in tasks]


def outcomes(t: service.Tenure, task_id: int) -> list[str]:
    return [a.outcome for a in t.attempts(task_id)]


def test_claim_takes_due_tasks_oldest_first_up_to_the_limit(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, clock, a, b = env
    run_id = t.submit_run(5, "echo")
    got_a = leases.claim(a, 3, clock.now(), TTL)
    got_b = leases.claim(b, 10, clock.now(), TTL)
    assert [lease.position for lease in got_a] == [0, 1, 2]
    assert [lease.position for lease in got_b] == [3, 4]
    assert leases.claim(a, 10, clock.now(), TTL) == []
    assert statuses(t, run_id) == ["running"] * 5
    assert all(lease.attempt == 1 for lease in got_a + got_b)
    assert outcomes(t, got_a[0].task_id) == ["running"]
    assert t.task(got_b[0].task_id).lease_owner == b


def test_a_write_from_a_lost_lease_changes_nothing(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, clock, a, b = env
    t.submit_run(1, "echo")
    (old,) = leases.claim(a, 1, clock.now(), TTL)
    clock.advance(TTL + 1)  # a stops heartbeating: its lease expires and is reaped
    assert leases.reap_expired(clock.now()) == [(old.task_id, 1)]
    (new,) = leases.claim(b, 1, clock.now(), TTL)
    assert new.attempt == 2
    # The old holder wakes up and tries to finish: fenced off.
    assert not leases.finish(old, a, clock.now(), outcome=Outcome.SUCCEEDED, result="stale")
    assert leases.heartbeat(a, clock.now(), TTL, [(old.task_id, old.attempt, 0.9, {"x": 1})]) == set()
    task = t.task(old.task_id)
    assert (task.status, task.result, task.progress, task.lease_owner) == ("running", None, 0.0, b)
    # The new holder finishes once; a second finish of the same attempt is fenced too.
    assert leases.finish(new, b, clock.now(), outcome=Outcome.SUCCEEDED, result="fresh")
    assert not leases.finish(new, b, clock.now(), outcome=Outcome.SUCCEEDED, result="twice")
    assert t.task(old.task_id).result == "fresh"
    assert outcomes(t, old.task_id) == ["lost", "succeeded"]


def test_heartbeat_extends_leases_and_carries_progress(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, clock, a, _ = env
    t.submit_run(2, "echo")
    one, two = leases.claim(a, 2, clock.now(), TTL)
    clock.advance(10)
    held = leases.heartbeat(a, clock.now(), TTL, [(one.task_id, 1, 0.8, {"elapsed_s": 8})])
    assert held == {(one.task_id, 1), (two.task_id, 1)}
    clock.advance(10)  # 20 s after the claim, 10 s after the beat: still alive
    assert leases.reap_expired(clock.now()) == []
    task = t.task(one.task_id)
    assert task.progress == 0.8
    clock.advance(TTL)
    assert len(leases.reap_expired(clock.now())) == 2
    # The next attempt receives the checkpoint the heartbeat stored.
    again = {lease.task_id: lease for lease in leases.claim(a, 2, clock.now(), TTL)}
    assert again[one.task_id].checkpoint == {"elapsed_s": 8}


def test_failure_waits_out_its_backoff_before_it_is_claimed_again(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, clock, a, _ = env
    t.submit_run(1, "echo")
    (lease,) = leases.claim(a, 1, clock.now(), TTL)
    retry_at = clock.now() + timedelta(seconds=4)
    assert leases.finish(lease, a, clock.now(), outcome=Outcome.FAILED, error="boom", retry_at=retry_at)
    task = t.task(lease.task_id)
    assert (task.status, task.error, task.next_attempt_at) == ("retrying", "boom", retry_at)
    clock.advance(3.9)
    assert leases.claim(a, 1, clock.now(), TTL) == []
    clock.advance(0.2)
    (again,) = leases.claim(a, 1, clock.now(), TTL)
    assert (again.attempt, again.charged) == (2, 1)


def test_attempts_lost_with_their_supervisor_are_never_charged(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, clock, a, b = env
    run_id = t.submit_run(1, "echo", max_attempts=1)
    for _ in range(3):  # three supervisor deaths in a row, with a budget of one attempt
        leases.claim(a, 1, clock.now(), TTL)
        assert len(leases.reclaim_worker(a, clock.now(), "its supervisor died")) == 1
    (task,) = t.run_with_tasks(run_id)[1]
    assert (task.status, task.charged, task.lost) == ("queued", 0, 3)
    assert [(x.outcome, x.charged) for x in t.attempts(task.id)] == [("lost", False)] * 3
    (lease,) = leases.claim(b, 1, clock.now(), TTL)
    assert (lease.attempt, lease.charged, lease.lost) == (4, 0, 3)
    assert leases.finish(lease, b, clock.now(), outcome=Outcome.SUCCEEDED, result="ok")
    assert t.run(run_id).counts["succeeded"] == 1


def test_a_task_lost_too_often_fails_instead_of_looping(env) -> None:  # type: ignore[no-untyped-def]
    from service.leases import MAX_LOST

    t, leases, clock, a, _ = env
    run_id = t.submit_run(1, "echo", max_attempts=3)
    for _ in range(MAX_LOST):
        leases.claim(a, 1, clock.now(), TTL)
        clock.advance(TTL + 1)
        leases.reap_expired(clock.now())
    (task,) = t.run_with_tasks(run_id)[1]
    assert (task.status, task.charged, task.lost) == ("failed", 0, MAX_LOST)
    assert task.error is not None and task.error.startswith(f"lost {MAX_LOST} times without finishing")
    assert outcomes(t, task.id) == ["lost"] * MAX_LOST
    assert t.run(run_id).status == "completed"


def test_a_loss_in_a_shared_process_isolates_the_task_uncharged(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, clock, a, _ = env
    t.submit_run(1, "echo", max_attempts=1)
    (lease,) = leases.claim(a, 1, clock.now(), TTL)
    assert not lease.isolated
    assert leases.lose(lease, a, clock.now(), "its process died with others in it", isolate=True,
                       progress=0.5, checkpoint={"at": 5})
    assert not leases.lose(lease, a, clock.now(), "again", isolate=True)  # fenced: once only
    (again,) = leases.claim(a, 1, clock.now(), TTL)
    assert again.isolated and again.checkpoint == {"at": 5} and again.charged == 0
    task = t.task(lease.task_id)
    assert (task.lost, task.isolated, task.progress) == (1, True, 0.5)


def test_crashes_and_timeouts_are_charged(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, clock, a, _ = env
    t.submit_run(2, "echo", max_attempts=2)
    one, two = leases.claim(a, 2, clock.now(), TTL)
    assert leases.finish(one, a, clock.now(), outcome=Outcome.CRASHED, error="crashed: killed by SIGSEGV",
                         retry_at=clock.now())
    assert leases.finish(two, a, clock.now(), outcome=Outcome.TIMED_OUT, error="timeout")
    assert [(x.outcome, x.charged) for x in t.attempts(one.task_id)] == [("crashed", True)]
    assert (t.task(one.task_id).status, t.task(one.task_id).charged) == ("retrying", 1)
    assert (t.task(two.task_id).status, t.task(two.task_id).charged) == ("failed", 1)


def test_release_hands_tasks_back_without_spending_attempts(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, clock, a, b = env
    t.submit_run(1, "echo", max_attempts=1)
    (lease,) = leases.claim(a, 1, clock.now(), TTL)
    assert leases.release(a, [(lease, 0.4, {"step": 4})], clock.now()) == 1
    assert t.task(lease.task_id).status == "queued"
    (again,) = leases.claim(b, 1, clock.now(), TTL)
    assert (again.attempt, again.charged, again.checkpoint) == (2, 0, {"step": 4})
    assert outcomes(t, lease.task_id) == ["released", "running"]


def test_reclaiming_a_dead_worker_needs_no_ttl(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, clock, a, b = env
    t.submit_run(3, "echo")
    claimed = leases.claim(a, 3, clock.now(), TTL)
    lost = leases.reclaim_worker(a, clock.now(), "its supervisor died")
    assert sorted(lost) == sorted((lease.task_id, 1) for lease in claimed)
    assert len(leases.claim(b, 5, clock.now(), TTL)) == 3
    assert [w.id for w in leases.live_workers_on("host-a", except_id=b)] == []


def test_counts_always_add_up_and_the_hook_is_created_once(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, clock, a, _ = env
    run_id = t.submit_run(4, "echo", on_complete="echo")
    claimed = leases.claim(a, 4, clock.now(), TTL)
    for i, lease in enumerate(claimed):
        run = t.run(run_id)
        assert sum(run.counts.values()) == run.total == 4
        ok = i % 2 == 0
        leases.finish(lease, a, clock.now(), outcome=Outcome.SUCCEEDED if ok else Outcome.FAILED,
                      result=i if ok else None, error=None if ok else "no")
    run = t.run(run_id)
    assert run.status == "completed" and run.counts["succeeded"] == 2 and run.counts["failed"] == 2
    assert run.hook_task_id is not None
    assert not t.store.settle(run_id, clock.now())  # settling again creates no second hook
    with t.engine.connect() as conn:
        hooks = conn.execute(text("SELECT count(*) FROM tasks WHERE kind = 'echo' AND run_id IS NULL")).scalar()
    assert hooks == 1
    assert t.task(run.hook_task_id).args == {"run_id": run_id}


def test_cancel_fences_off_the_running_attempt(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, clock, a, _ = env
    run_id = t.submit_run(3, "echo")
    (lease,) = leases.claim(a, 1, clock.now(), TTL)
    assert t.cancel_run(run_id) == 3
    assert leases.heartbeat(a, clock.now(), TTL) == set()
    assert not leases.finish(lease, a, clock.now(), outcome=Outcome.SUCCEEDED, result=1)
    assert statuses(t, run_id) == ["cancelled"] * 3
    assert outcomes(t, lease.task_id) == ["cancelled"]
    with pytest.raises(service.Conflict):
        t.cancel_run(run_id)


def test_retry_requeues_failed_tasks_with_a_fresh_budget(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, clock, a, _ = env
    run_id = t.submit_run(2, "echo", max_attempts=1)
    first, second = leases.claim(a, 2, clock.now(), TTL)
    with pytest.raises(service.Conflict, match="still running"):
        t.retry_run(run_id)
    leases.finish(first, a, clock.now(), outcome=Outcome.SUCCEEDED, result=1)
    leases.finish(second, a, clock.now(), outcome=Outcome.FAILED, error="no")
    assert t.run(run_id).status == "completed"
    assert t.retry_run(run_id) == 1
    assert t.run(run_id).status == "running"
    (again,) = leases.claim(a, 2, clock.now(), TTL)
    assert again.task_id == second.task_id and again.attempt == 2
    with pytest.raises(service.NotFound):
        t.retry_run(999)


def test_claiming_and_counting_are_index_lookups(env) -> None:  # type: ignore[no-untyped-def]
    t, *_ = env
    if t.engine.dialect.name != "sqlite":
        pytest.skip("reads SQLite's EXPLAIN QUERY PLAN; PostgreSQL's planner prefers scans on tiny tables")
    t.submit_run(50, "echo")
    with t.engine.connect() as conn:
        claim_plan = " ".join(row[-1] for row in conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT id FROM tasks WHERE status IN ('queued', 'retrying') "
            "AND next_attempt_at <= '2030-01-01' ORDER BY next_attempt_at, id LIMIT 10"))
        count_plan = " ".join(row[-1] for row in conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT status, count(*) FROM tasks WHERE run_id = 1 GROUP BY status"))
        reap_plan = " ".join(row[-1] for row in conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT id FROM tasks WHERE status = 'running' AND lease_expires_at < '2030-01-01'"))
    assert "USING INDEX ix_tasks_due" in claim_plan, claim_plan
    assert "ix_tasks_run_status" in count_plan, count_plan
    assert "ix_tasks_lease_expiry" in reap_plan, reap_plan
