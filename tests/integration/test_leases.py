"""The lease protocol against a real database (both backends); due times aged with UPDATEs."""

from __future__ import annotations

import pytest
from sqlalchemy import text

import service
from service.storage.db import db_now
from service.storage.leases import MAX_LOST, Leases
from service.storage.models import Outcome


@pytest.fixture
def env(open_tenure):  # type: ignore[no-untyped-def]
    t = open_tenure()
    leases = Leases(t.engine)
    a = leases.register("host-a", 1001, None, None)
    b = leases.register("host-b", 1002, None, None)
    return t, leases, a, b


def statuses(t: service.Tenure, run_id: int) -> list[str]:
    _, tasks = t.run_with_tasks(run_id)
    return [task.status for task in tasks]


def outcomes(t: service.Tenure, task_id: int) -> list[str]:
    return [a.outcome for a in t.attempts(task_id)]


def make_due(t: service.Tenure, task_id: int) -> None:
    """Age a waiting task's due time into the past (instead of waiting out its backoff)."""
    with t.engine.begin() as conn:
        conn.execute(text("UPDATE tasks SET next_attempt_at = :due WHERE id = :id"),
                     {"due": conn.execute(db_now(-1.0).select()).scalar(), "id": task_id})


def test_claim_takes_due_tasks_oldest_first_up_to_the_limit(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, b = env
    run_id = t.submit_run(5, "echo")
    got_a = leases.claim(a, 3)
    got_b = leases.claim(b, 10)
    assert [lease.position for lease in got_a] == [0, 1, 2]
    assert [lease.position for lease in got_b] == [3, 4]
    assert leases.claim(a, 10) == []
    assert statuses(t, run_id) == ["running"] * 5
    assert all(lease.attempt == 1 for lease in got_a + got_b)
    assert outcomes(t, got_a[0].task_id) == ["running"]
    assert t.task(got_b[0].task_id).supervisor_id == b


def test_a_write_from_a_lost_lease_changes_nothing(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, b = env
    t.submit_run(1, "echo")
    (old,) = leases.claim(a, 1)
    assert leases.reclaim_supervisor(a, "judged dead") == [(old.task_id, 1)]
    (new,) = leases.claim(b, 1)
    assert new.attempt == 2
    # The old holder wakes up and tries to finish: fenced off.
    assert not leases.finish(old, a, outcome=Outcome.SUCCEEDED, result="stale")
    assert leases.heartbeat(a, [(old.task_id, old.attempt, 0.9, {"x": 1})]).held == set()
    task = t.task(old.task_id)
    assert (task.status, task.result, task.progress, task.supervisor_id) == ("running", None, 0.0, b)
    # The new holder finishes once; a second finish of the same attempt is fenced too.
    assert leases.finish(new, b, outcome=Outcome.SUCCEEDED, result="fresh")
    assert not leases.finish(new, b, outcome=Outcome.SUCCEEDED, result="twice")
    assert t.task(old.task_id).result == "fresh"
    assert outcomes(t, old.task_id) == ["lost", "succeeded"]


def test_the_same_supervisor_cannot_write_for_its_earlier_attempt(env) -> None:  # type: ignore[no-untyped-def]
    """The fence needs the attempt number: the owner alone would let attempt 1 overwrite attempt 2."""
    t, leases, a, _ = env
    t.submit_run(1, "echo")
    (first,) = leases.claim(a, 1)
    assert leases.finish(first, a, outcome=Outcome.LOST, error="lost track of it")
    (second,) = leases.claim(a, 1)
    assert (second.task_id, second.attempt) == (first.task_id, 2)
    assert leases.heartbeat(a, [(second.task_id, 2, 0.6, {"at": 6})]).held == {(second.task_id, 2)}
    # A stale progress write and a stale finish for attempt 1, from the very same supervisor.
    assert leases.heartbeat(a, [(first.task_id, 1, 0.1, {"at": 1})]).held == {(second.task_id, 2)}
    assert not leases.finish(first, a, outcome=Outcome.SUCCEEDED, result="stale")
    task = t.task(first.task_id)
    assert (task.status, task.progress, task.result) == ("running", 0.6, None)
    with t.engine.connect() as conn:
        assert conn.execute(text("SELECT checkpoint FROM tasks")).scalar() in ({"at": 6}, '{"at": 6}')


def test_the_fence_needs_the_owner_too(env) -> None:  # type: ignore[no-untyped-def]
    """Another supervisor with the right attempt number is refused: the attempt alone is not enough."""
    t, leases, a, b = env
    t.submit_run(1, "echo")
    (lease,) = leases.claim(a, 1)
    assert not leases.finish(lease, b, outcome=Outcome.SUCCEEDED, result="not mine")
    assert leases.heartbeat(b, [(lease.task_id, lease.attempt, 0.5, None)]).held == set()
    assert not leases.finish(lease, b, outcome=Outcome.LOST, error="not mine either", isolate=True, counted=True)
    task = t.task(lease.task_id)
    assert (task.status, task.progress, task.supervisor_id, task.isolated) == ("running", 0.0, a, False)
    assert leases.finish(lease, a, outcome=Outcome.SUCCEEDED, result="mine")


def test_heartbeat_carries_progress_and_the_next_attempt_gets_the_checkpoint(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, b = env
    t.submit_run(2, "echo")
    one, two = leases.claim(a, 2)
    held = leases.heartbeat(a, [(one.task_id, 1, 0.8, {"elapsed_s": 8})]).held
    assert held == {(one.task_id, 1), (two.task_id, 1)}
    assert t.task(one.task_id).progress == 0.8
    assert len(leases.reclaim_supervisor(a, "judged dead")) == 2
    again = {lease.task_id: lease for lease in leases.claim(b, 2)}
    assert again[one.task_id].checkpoint == {"elapsed_s": 8}


def test_a_failure_waits_out_its_backoff_by_the_database_clock(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, _ = env
    t.submit_run(1, "echo")
    (lease,) = leases.claim(a, 1)
    assert leases.finish(lease, a, outcome=Outcome.FAILED, error="boom", retry_in_s=3600)
    task = t.task(lease.task_id)
    assert (task.status, task.error) == ("retrying", "boom")
    now = t.store.database_now()
    assert task.next_attempt_at is not None and 3590 < (task.next_attempt_at - now).total_seconds() <= 3600
    assert leases.claim(a, 1) == [] and not leases.anything_due()
    make_due(t, lease.task_id)
    assert leases.anything_due()
    (again,) = leases.claim(a, 1)
    assert (again.attempt, again.charged) == (2, 1)


def test_a_due_time_beyond_the_horizon_was_set_by_a_stepped_clock(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, _ = env
    t.submit_run(1, "echo")
    (lease,) = leases.claim(a, 1)
    leases.finish(lease, a, outcome=Outcome.FAILED, error="boom", retry_in_s=10)
    assert leases.requeue_stepped(horizon_s=180) == 0  # 10 s ahead is an honest backoff
    with t.engine.begin() as conn:  # as if written by a clock two hours ahead of today's
        ahead = conn.execute(db_now(7200).select()).scalar()
        conn.execute(text("UPDATE tasks SET next_attempt_at = :due"), {"due": ahead})
    assert leases.claim(a, 1) == []
    assert leases.requeue_stepped(horizon_s=180) == 1
    assert [x.attempt for x in leases.claim(a, 1)] == [2]


def test_attempts_lost_with_their_supervisor_are_never_charged(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, _, b = env
    run_id = t.submit_run(1, "echo", max_attempts=1)
    for i in range(3):  # three supervisor deaths in a row, with a budget of one attempt
        dying = leases.register(f"host-{i}", 2000 + i, None, None)
        leases.claim(dying, 1)
        assert len(leases.reclaim_supervisor(dying, "its supervisor died")) == 1
    (task,) = t.run_with_tasks(run_id)[1]
    assert (task.status, task.charged, task.lost) == ("queued", 0, 3)
    assert [(x.outcome, x.charged) for x in t.attempts(task.id)] == [("lost", False)] * 3
    (lease,) = leases.claim(b, 1)
    assert (lease.attempt, lease.charged, lease.lost) == (4, 0, 3)
    assert leases.finish(lease, b, outcome=Outcome.SUCCEEDED, result="ok")
    assert t.run(run_id).counts["succeeded"] == 1


def test_a_task_lost_too_often_fails_instead_of_looping(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, _, _ = env
    run_id = t.submit_run(1, "echo", max_attempts=3)
    for i in range(MAX_LOST):  # it kills every supervisor that runs it
        dying = leases.register(f"host-{i}", 2000 + i, None, None)
        leases.claim(dying, 1)
        leases.reclaim_supervisor(dying, "no heartbeat")
    (task,) = t.run_with_tasks(run_id)[1]
    assert (task.status, task.charged, task.lost) == ("failed", 0, MAX_LOST)
    assert task.error is not None and task.error.startswith(f"lost {MAX_LOST} times without finishing")
    assert outcomes(t, task.id) == ["lost"] * MAX_LOST
    assert t.run(run_id).status == "completed"


def test_a_loss_in_a_shared_process_isolates_the_task_uncharged(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, _ = env
    t.submit_run(1, "echo", max_attempts=1)
    (lease,) = leases.claim(a, 1)
    assert not lease.isolated
    assert leases.finish(lease, a, outcome=Outcome.LOST, error="its process died with others in it", isolate=True,
                         counted=True, progress=0.5, checkpoint={"at": 5})
    assert not leases.finish(lease, a, outcome=Outcome.LOST, error="again", isolate=True)  # fenced: once only
    (again,) = leases.claim(a, 1)
    assert again.isolated and again.checkpoint == {"at": 5} and again.charged == 0
    task = t.task(lease.task_id)
    assert (task.lost, task.isolated, task.progress) == (1, True, 0.5)


def test_crashes_and_timeouts_are_charged(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, _ = env
    t.submit_run(2, "echo", max_attempts=2)
    one, two = leases.claim(a, 2)
    assert leases.finish(one, a, outcome=Outcome.CRASHED, error="crashed: killed by SIGSEGV", retry_in_s=0)
    assert leases.finish(two, a, outcome=Outcome.TIMED_OUT, error="timeout")
    assert [(x.outcome, x.charged) for x in t.attempts(one.task_id)] == [("crashed", True)]
    assert (t.task(one.task_id).status, t.task(one.task_id).charged) == ("retrying", 1)
    assert (t.task(two.task_id).status, t.task(two.task_id).charged) == ("failed", 1)


def test_release_hands_tasks_back_without_spending_attempts(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, b = env
    t.submit_run(1, "echo", max_attempts=1)
    (lease,) = leases.claim(a, 1)
    assert leases.finish(lease, a, outcome=Outcome.RELEASED, progress=0.4, checkpoint={"step": 4})
    assert t.task(lease.task_id).status == "queued"
    (again,) = leases.claim(b, 1)
    assert (again.attempt, again.charged, again.checkpoint) == (2, 0, {"step": 4})
    assert outcomes(t, lease.task_id) == ["released", "running"]


def test_reclaiming_a_dead_supervisor_needs_no_ttl(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, b = env
    t.submit_run(3, "echo")
    claimed = leases.claim(a, 3)
    lost = leases.reclaim_supervisor(a, "its supervisor died")
    assert sorted(lost) == sorted((lease.task_id, 1) for lease in claimed)
    assert len(leases.claim(b, 5)) == 3
    assert [s.id for s in leases.live_supervisors_on("host-a", except_id=b)] == []


def test_counts_always_add_up_and_the_hook_is_created_once(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, _ = env
    run_id = t.submit_run(5, "echo", on_complete="echo")
    claimed = leases.claim(a, 4)
    for i, lease in enumerate(claimed):
        run = t.run(run_id)
        assert sum(run.counts.values()) == run.total == 5
        ok = i % 2 == 0
        # Task 3 fails transiently: it waits out a backoff as "retrying", and counts as such.
        leases.finish(lease, a, outcome=Outcome.SUCCEEDED if ok else Outcome.FAILED, result=i if ok else None,
                      error=None if ok else "no", retry_in_s=3600 if i == 3 else None)
    run = t.run(run_id)
    assert (run.counts["succeeded"], run.counts["failed"], run.counts["retrying"], run.counts["queued"]) == (2, 1, 1, 1)
    assert sum(run.counts.values()) == 5 and run.status == "running"
    (last,) = leases.claim(a, 1)
    make_due(t, claimed[3].task_id)
    (retried,) = leases.claim(a, 1)
    leases.finish(last, a, outcome=Outcome.SUCCEEDED, result=4)
    assert t.run(run_id).status == "running"
    leases.finish(retried, a, outcome=Outcome.SUCCEEDED, result=3)
    run = t.run(run_id)
    assert run.status == "completed" and run.counts["succeeded"] == 4 and run.counts["failed"] == 1
    assert run.hook_task_id is not None
    with t.engine.connect() as conn:
        hooks = conn.execute(text("SELECT count(*) FROM tasks WHERE kind = 'echo' AND run_id IS NULL")).scalar()
    assert hooks == 1
    assert t.task(run.hook_task_id).args == {"run_id": run_id}


def test_cancel_fences_off_the_running_attempt(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, _ = env
    run_id = t.submit_run(3, "echo")
    (lease,) = leases.claim(a, 1)
    assert t.cancel_run(run_id) == 3
    assert leases.heartbeat(a).held == set()
    assert not leases.finish(lease, a, outcome=Outcome.SUCCEEDED, result=1)
    assert statuses(t, run_id) == ["cancelled"] * 3
    assert outcomes(t, lease.task_id) == ["cancelled"]
    with pytest.raises(service.Conflict):
        t.cancel_run(run_id)


def test_cancel_and_retry_refuse_a_run_in_the_wrong_state(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, _ = env
    run_id = t.submit_run(1, "echo")
    (lease,) = leases.claim(a, 1)
    assert leases.finish(lease, a, outcome=Outcome.SUCCEEDED, result=1)
    with pytest.raises(service.Conflict, match="is completed"):
        t.cancel_run(run_id)
    assert t.run(run_id).status == "completed"
    with pytest.raises(service.Conflict, match="no failed or cancelled task"):
        t.retry_run(run_id)
    with pytest.raises(service.NotFound):
        t.cancel_run(999)


def test_retry_requeues_failed_tasks_with_a_fresh_budget(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, _ = env
    run_id = t.submit_run(2, "echo", max_attempts=1)
    first, second = leases.claim(a, 2)
    with pytest.raises(service.Conflict, match="still running"):
        t.retry_run(run_id)
    leases.finish(first, a, outcome=Outcome.SUCCEEDED, result=1)
    leases.finish(second, a, outcome=Outcome.FAILED, error="no")
    assert t.run(run_id).status == "completed"
    assert t.retry_run(run_id) == 1
    assert t.run(run_id).status == "running"
    (again,) = leases.claim(a, 2)
    assert again.task_id == second.task_id and again.attempt == 2
    with pytest.raises(service.NotFound):
        t.retry_run(999)


def test_a_waiting_run_counts_the_due_tasks_claimed_before_its_first(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, _ = env
    t.submit_task("echo", {})
    first = t.submit_run(3, "echo")
    second = t.submit_run(2, "echo")
    assert t.run_status(first).ahead == 1  # the single task came first
    assert t.run_status(second).ahead == 4
    got = leases.claim(a, 2)  # the single task and the first run's first task
    assert t.run_status(first).ahead is None  # it runs: it waits for nothing
    assert t.run_status(second).ahead == 2
    leases.claim(a, 2)
    assert len(got) == 2 and t.run_status(second).ahead == 0  # next in line
    assert t.run_status(second).workers == 2  # host-a and host-b, both just registered


def test_the_count_ahead_is_bounded_and_names_a_missing_worker(env) -> None:  # type: ignore[no-untyped-def]
    from service.storage.views import MAX_AHEAD

    t, leases, a, b = env
    t.submit_run(MAX_AHEAD + 500, "echo")
    behind = t.submit_run(1, "echo")
    assert t.run_status(behind).ahead == MAX_AHEAD  # "1,000 or more": the walk stops there
    leases.stop_supervisor(a)
    leases.stop_supervisor(b)
    status = t.run_status(behind)
    assert status.ahead == MAX_AHEAD and status.workers == 0


def test_a_client_cut_off_inside_a_transaction_does_not_hold_its_leases_forever(pg_url: str) -> None:
    """A partitioned host's session can hang inside a transaction with its tasks' rows locked; the
    server ends it after db.IDLE_IN_TRANSACTION_S, so another supervisor's reclaim goes through."""
    import threading

    from sqlalchemy.exc import DBAPIError

    t = service.open(pg_url)
    try:
        leases = Leases(t.engine)
        cut_off, other = leases.register("host-a", 1, None, None), leases.register("host-b", 2, None, None)
        run_id = t.submit_run(1, "echo")
        assert len(leases.claim(cut_off, 1)) == 1
        frozen = t.engine.connect()
        stuck = frozen.begin()  # the host's heartbeat, begun and never finished: its row stays locked
        frozen.execute(text("UPDATE tasks SET progress = 0.5 WHERE run_id = :r"), {"r": run_id})
        reclaimed: list[object] = []
        reclaim = threading.Thread(target=lambda: reclaimed.append(
            leases.reclaim_supervisor(cut_off, "its supervisor stopped heartbeating")))
        reclaim.start()
        reclaim.join(timeout=60)  # a deadline, not a pace: it ends when the server ends the session
        assert not reclaim.is_alive(), "the reclaim still waits on the cut-off session's lock"
        assert len(reclaimed[0]) == 1  # type: ignore[arg-type]
        assert statuses(t, run_id) == ["queued"] and outcomes(t, t.run_with_tasks(run_id)[1][0].id) == ["lost"]
        # The cut-off host learns on its next statement that its transaction is gone.
        with pytest.raises(DBAPIError):
            frozen.execute(text("SELECT 1"))
        assert stuck is not None
        frozen.invalidate()  # its transaction died with its session: nothing to roll back
        frozen.close()
        assert leases.claim(other, 1)[0].attempt == 2
    finally:
        t.close()


@pytest.mark.parametrize("outcome", [Outcome.LOST, Outcome.RELEASED, Outcome.SUCCEEDED])
def test_a_stale_end_for_attempt_1_changes_nothing_once_the_same_supervisor_runs_attempt_2(  # type: ignore[no-untyped-def]
        env, outcome: Outcome) -> None:
    """The fence's attempt number, for every kind of end: a late loss, release or success of attempt 1
    arriving after the same supervisor re-claimed the task as attempt 2."""
    t, leases, a, _ = env
    t.submit_run(1, "echo")
    (first,) = leases.claim(a, 1)
    assert leases.finish(first, a, outcome=Outcome.LOST, error="its process was stopped")
    (second,) = leases.claim(a, 1)
    assert second.attempt == 2
    assert not leases.finish(first, a, outcome=outcome, error="stale", result="stale", progress=0.9,
                             checkpoint={"stale": True}, isolate=True, counted=True)
    task = t.task(first.task_id)
    assert (task.status, task.attempts, task.lost, task.isolated, task.result, task.error) == (
        "running", 2, 0, False, None, "its process was stopped")
    assert outcomes(t, first.task_id) == ["lost", "running"]


def test_a_released_attempt_is_stored_uncharged(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, _ = env
    t.submit_run(1, "echo", max_attempts=1)
    (lease,) = leases.claim(a, 1)
    assert leases.finish(lease, a, outcome=Outcome.RELEASED)
    (attempt,) = t.attempts(lease.task_id)
    task = t.task(lease.task_id)
    assert (attempt.outcome, attempt.charged, task.charged, task.lost, task.status) == (
        "released", False, 0, 0, "queued")


def test_cancelling_a_run_s_last_open_task_completes_the_run_and_creates_its_hook(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, _ = env
    run_id = t.submit_run(2, "echo", on_complete="echo")
    first, second = leases.claim(a, 2)
    assert leases.finish(first, a, outcome=Outcome.SUCCEEDED, result=1)
    assert t.run(run_id).status == "running"
    assert t.cancel_task(second.task_id)
    run = t.run(run_id)
    assert (run.status, run.counts["succeeded"], run.counts["cancelled"]) == ("completed", 1, 1)
    assert run.hook_task_id is not None and t.task(run.hook_task_id).status == "queued"
    assert outcomes(t, second.task_id) == ["cancelled"]


def test_a_run_whose_last_task_waits_out_a_retry_backoff_does_not_complete(env) -> None:  # type: ignore[no-untyped-def]
    """The other task ends for good while the last one waits out its backoff: only then is the run
    settled with a retrying task in it (a retry end alone does not settle its run)."""
    t, leases, a, _ = env
    run_id = t.submit_run(2, "echo", on_complete="echo")
    first, second = leases.claim(a, 2)
    assert leases.finish(second, a, outcome=Outcome.FAILED, error="transient", retry_in_s=3600)
    assert leases.finish(first, a, outcome=Outcome.SUCCEEDED, result=1)
    run = t.run(run_id)
    assert (run.status, run.counts["retrying"], run.hook_task_id) == ("running", 1, None)
    make_due(t, second.task_id)
    (again,) = leases.claim(a, 1)
    assert leases.finish(again, a, outcome=Outcome.SUCCEEDED, result=2)
    assert t.run(run_id).status == "completed" and t.run(run_id).hook_task_id is not None


def test_work_due_at_once_is_claimed_in_submission_order_a_task_handed_back_first(env) -> None:  # type: ignore[no-untyped-def]
    """No clock orders what is due at once: the task id does, so an interrupted task resumes before
    the tasks submitted after it (README, "Pictures of a run")."""
    t, leases, a, b = env
    first, second = t.submit_task("echo", {"i": 1}), t.submit_task("echo", {"i": 2})
    (lease,) = leases.claim(a, 1)
    assert lease.task_id == first
    assert leases.finish(lease, a, outcome=Outcome.LOST, error="its process was stopped")
    assert [x.task_id for x in leases.claim(b, 2)] == [first, second]


def test_the_oldest_due_figure_is_the_longest_wait_not_the_head_of_the_line(env) -> None:  # type: ignore[no-untyped-def]
    """A task handed back just now heads the line (by id); the figure must still see the one waiting a minute."""
    from datetime import timedelta

    from sqlalchemy import select, update

    from service.storage.gauges import Gauges
    from service.storage.models import Task

    t, leases, a, _ = env
    first, _second = t.submit_task("echo", {"i": 1}), t.submit_task("echo", {"i": 2})
    with t.engine.begin() as conn:  # both have waited a minute (aged, not waited for)
        for task_id, queued_at in conn.execute(select(Task.id, Task.queued_at)).all():
            conn.execute(update(Task).where(Task.id == task_id).values(queued_at=queued_at - timedelta(seconds=60)))
    (lease,) = leases.claim(a, 1)
    assert lease.task_id == first and leases.finish(lease, a, outcome=Outcome.RELEASED)
    assert Gauges(t.engine).figures(15.0).oldest_due_s >= 59.0


def test_an_attempt_that_reported_nothing_leaves_the_task_s_progress_as_it_was(env) -> None:  # type: ignore[no-untyped-def]
    """Lost before it reported anything, an attempt must not reset the progress an earlier one reached."""
    from service.config import Settings
    from service.supervisor.attempt import Execution
    from service.supervisor.endings import Endings
    from service.supervisor.retry import RetryPolicy

    t, leases, a, b = env
    t.submit_run(1, "echo")
    (first,) = leases.claim(a, 1)
    leases.heartbeat(a, [(first.task_id, 1, 0.5, {"at": 5})])
    assert leases.finish(first, a, outcome=Outcome.LOST, error="its supervisor died", progress=0.5,
                         checkpoint={"at": 5})
    (second,) = leases.claim(b, 1)
    ex = Execution(lease=second, started_mono=0.0, deadline_mono=60.0)
    end = Endings(Settings(), RetryPolicy()).lost(ex, "its process was stopped", counted=False, isolate=False)
    assert leases.end_attempts(b, [end]) == {second.key}
    task = t.task(first.task_id)
    assert (task.progress, task.status) == (0.5, "queued")
    (third,) = leases.claim(a, 1)
    assert third.checkpoint == {"at": 5}
