"""Retention: what ended long ago goes, in small batches; a run in progress is never touched."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

import service
from service.storage.leases import Leases
from service.storage.models import Outcome, Run, SupervisorRow, Task
from tests import kinds_for_tests  # noqa: F401 - registers t_blocking, which these runs are made of
from tests.conftest import wait_for
from tests.integration.conftest import FAST

DAY_S = 86_400.0


def age(t: service.Tenure, days: float) -> None:
    """Make everything that has ended look as if it ended ``days`` ago (and its supervisors stopped then)."""
    back = timedelta(days=days)
    with t.engine.begin() as conn:
        ended = ((Run, Run.finished_at), (Task, Task.finished_at), (SupervisorRow, SupervisorRow.stopped_at))
        for table, column in ended:
            for row_id, at in conn.execute(select(table.id, column).where(column.is_not(None))).all():
                conn.execute(update(table).where(table.id == row_id).values({column.key: at - back}))


def counts(t: service.Tenure) -> dict[str, int]:
    with t.engine.connect() as conn:
        return {table: int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
                for table in ("runs", "tasks", "task_attempts", "supervisors", "idempotency_keys")}


def test_prune_deletes_what_ended_long_ago_and_never_a_run_in_progress(t: service.Tenure) -> None:
    old = t.submit_run("t_blocking", [{"value": i} for i in range(25)], idempotency_key="old", on_complete="echo")
    lone = t.submit_task("t_blocking", {"value": 1}, idempotency_key="lone")
    sup = t.start_supervisor(**FAST)
    try:
        t.wait_run(old, 10)
        wait_for(lambda: t.task(lone).status == "succeeded", 10, "the single task")
        wait_for(lambda: t.run(old).hook_task_id is not None and t.task(t.run(old).hook_task_id).terminal, 10,
                 "the completion hook")
    finally:
        assert sup.stop(grace_s=0.0, timeout_s=5)
    live = t.submit_run("t_blocking", [{"value": i} for i in range(5)])  # queued: in progress, never pruned
    recent = t.submit_task("echo", {"x": 1})
    age(t, 40)
    before = counts(t)
    assert before["runs"] == 2 and before["tasks"] == 25 + 1 + 1 + 5 + 1 and before["supervisors"] == 1

    report = t.prune(30 * DAY_S, batch=10)

    assert (report.runs, report.tasks, report.supervisors) == (1, 25 + 1 + 1, 1)
    assert report.attempts == 27 and report.batches >= 4  # 25 tasks in batches of 10, then the hook, then the rest
    assert 0 < report.longest_batch_s < 1.0
    after = counts(t)
    assert after == {"runs": 1, "tasks": 6, "task_attempts": 0, "supervisors": 0, "idempotency_keys": 0}
    assert t.run(live).status == "running" and t.task(recent).status == "queued"
    with pytest.raises(service.NotFound):
        t.run(old)
    # The keys went with what they made: the same key makes a new run now.
    assert t.submit_run("t_blocking", [{"value": 0}], idempotency_key="old") != old


def test_prune_keeps_what_ended_within_the_window(t: service.Tenure) -> None:
    run = t.submit_run("echo", [{"i": 1}])
    t.cancel_run(run)
    age(t, 10)
    report = t.prune(30 * DAY_S)
    assert (report.runs, report.tasks) == (0, 0) and t.run(run).status == "cancelled"
    report = t.prune(5 * DAY_S)
    assert (report.runs, report.tasks) == (1, 1)


def test_a_run_being_pruned_is_neither_retried_nor_cancelled_between_batches(t: service.Tenure) -> None:
    """Issue 17: a retry between two batches revived a half-deleted run (total 100, 95 tasks, forever)."""
    run = t.submit_run("echo", [{"i": i} for i in range(100)])
    t.cancel_run(run)
    age(t, 40)
    seen: list[tuple[int, str, int, str, str]] = []

    def between_batches(report: object) -> None:
        if seen:
            return
        mid = t.run(run)
        refusals = []
        for verb in (t.retry_run, t.cancel_run):
            try:
                verb(run)
                refusals.append("accepted")
            except service.Conflict as exc:
                refusals.append(str(exc))
        seen.append((mid.total, mid.status, sum(mid.counts.values()), *refusals))

    report = t.prune(30 * DAY_S, batch=5, progress=between_batches)

    total, status, tasks_left, retry, cancel = seen[0]
    assert retry.startswith(f"run {run} is being deleted by retention (pruned); "), retry
    assert cancel.startswith(f"run {run} is being deleted by retention (pruned); "), cancel
    assert (total, status, tasks_left) == (100, "deleting", 95)
    assert (report.runs, report.tasks) == (1, 100)
    assert counts(t) == {"runs": 0, "tasks": 0, "task_attempts": 0, "supervisors": 0, "idempotency_keys": 0}


def test_a_prune_stopped_half_way_is_finished_by_the_next_whatever_its_window(t: service.Tenure) -> None:
    run = t.submit_run("echo", [{"i": i} for i in range(30)])
    t.cancel_run(run)
    age(t, 40)
    stop = threading.Event()
    t.prune(30 * DAY_S, batch=10, stop=stop, progress=lambda r: stop.set())
    assert t.run(run).status == "deleting"
    # A window the run's end is inside: it would not start deleting the run, but finishes what was started.
    report = t.prune(60 * DAY_S, batch=10)
    assert (report.runs, report.tasks) == (1, 20)
    with pytest.raises(service.NotFound):
        t.run(run)


def test_prune_keeps_a_run_until_its_completion_hook_has_ended(t: service.Tenure) -> None:
    run = t.submit_run("echo", [{"i": i} for i in range(2)], on_complete="echo")
    leases = Leases(t.engine)
    me = leases.register("hooks", 1, None, None)
    for lease in leases.claim(me, 2):
        assert leases.finish(lease, me, outcome=Outcome.SUCCEEDED, result=1)
    hook = t.run(run).hook_task_id
    assert t.run(run).status == "completed" and hook is not None and t.task(hook).status == "queued"
    age(t, 40)

    assert (t.prune(30 * DAY_S).runs, t.task(hook).status) == (0, "queued")  # the hook waits its turn
    (running,) = leases.claim(me, 1)
    assert running.task_id == hook
    assert (t.prune(30 * DAY_S).runs, t.task(hook).status) == (0, "running")  # and runs
    assert t.run(run).status == "completed" and sum(t.run(run).counts.values()) == 2

    assert leases.finish(running, me, outcome=Outcome.SUCCEEDED, result=1)
    age(t, 40)
    report = t.prune(30 * DAY_S)
    assert (report.runs, report.tasks) == (1, 3)  # the run, its two tasks and its hook, once the hook ended
    with pytest.raises(service.NotFound):
        t.task(hook)


def test_prune_never_deletes_finished_tasks_of_a_run_in_progress(t: service.Tenure) -> None:
    run = t.submit_run("echo", [{"i": i} for i in range(10)])
    leases = Leases(t.engine)
    me = leases.register("in-progress", 1, None, None)
    for n, lease in enumerate(leases.claim(me, 10)):
        outcome = Outcome.SUCCEEDED if n < 4 else Outcome.FAILED  # fails for good: no retry_in_s
        assert leases.finish(lease, me, outcome=outcome, result=1, error=None if n < 4 else "no")
    assert t.run(run).status == "completed"
    lone = t.submit_task("echo", {"x": 1})
    (single,) = leases.claim(me, 1)
    assert single.task_id == lone and leases.finish(single, me, outcome=Outcome.SUCCEEDED, result=1)
    age(t, 40)
    assert t.retry_run(run) == 6  # in progress again; its 4 successes ended 40 days ago

    report = t.prune(30 * DAY_S, batch=5)

    assert (report.runs, report.tasks) == (0, 1)  # the old single task went: the prune did run
    after = t.run(run)
    assert after.status == "running" and after.counts["succeeded"] == 4 and after.counts["queued"] == 6
    assert sum(after.counts.values()) == after.total == 10


def test_prune_can_be_stopped_between_batches(t: service.Tenure) -> None:
    run = t.submit_run("echo", [{"i": i} for i in range(30)])
    t.cancel_run(run)
    age(t, 40)
    stop = threading.Event()
    report = t.prune(DAY_S, batch=10, stop=stop, progress=lambda r: stop.set())
    assert report.batches == 1 and report.tasks == 10
    assert t.prune(DAY_S, batch=10).tasks == 20


def test_a_supervisor_prunes_on_its_own_only_when_asked(t: service.Tenure) -> None:
    run = t.submit_run("echo", [{"i": i} for i in range(3)])
    t.cancel_run(run)
    age(t, 40)
    plain = t.start_supervisor(**FAST)  # retention is off by default
    assert plain.stop(grace_s=0.0, timeout_s=5)
    assert t.run(run).status == "cancelled"
    pruning = t.start_supervisor(**FAST, prune_after_s=30 * DAY_S)
    try:
        def gone() -> bool:
            try:
                t.run(run)
            except service.NotFound:
                return True
            return False
        wait_for(gone, 10, "the supervisor to prune the old run")
    finally:
        assert pruning.stop(grace_s=0.0, timeout_s=5)
    assert counts(t)["tasks"] == 0


def test_prune_after_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENURE_PRUNE_AFTER", "30d")
    assert service.Settings.from_env().prune_after_s == 30 * DAY_S
    monkeypatch.setenv("TENURE_PRUNE_AFTER", "later")
    with pytest.raises(service.InvalidInput, match="TENURE_PRUNE_AFTER 'later' is not a duration"):
        service.Settings.from_env()
    monkeypatch.delenv("TENURE_PRUNE_AFTER")
    assert service.Settings.from_env().prune_after_s is None


def test_batches_are_sized_toward_a_few_milliseconds() -> None:
    from service.storage.retention import MAX_BATCH, MIN_BATCH, _next_size

    assert _next_size(100, 0.040) == 50  # took twice the target: half as many
    assert _next_size(100, 0.010) == 200  # half: twice as many, never more at once
    assert _next_size(100, 0.025) == 80
    assert _next_size(100, 0.0001) == 200
    assert _next_size(100, 1.0) == 50  # never below half at once
    assert _next_size(MIN_BATCH, 1.0) == MIN_BATCH and _next_size(MAX_BATCH, 0.0) == MAX_BATCH
