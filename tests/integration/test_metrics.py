"""Prometheus metrics against real runs: the exposition, parsed by prometheus-client's own parser,
says what the database and the supervisor's work say, on both backends."""

from __future__ import annotations

import os
import socket
from collections import Counter
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from sqlalchemy import event

import service
from service.storage.db import make_engine
from service.storage.leases import Leases
from service.storage.models import Outcome, TaskStatus
from service.supervisor.liveness import process_identity
from service.supervisor.metrics import DatabaseCollector, Together
from tests import kinds_for_tests  # noqa: F401 - registers the t_* kinds
from tests.conftest import wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(*collectors: Collector) -> Samples:
    """Every sample of the exposition, by (sample name, labels), read back with prometheus-client's parser."""
    text = generate_latest(Together(*collectors)).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def by(samples: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """The non-zero samples called ``name``, summed by the values of ``keys``."""
    out: Counter[tuple[str, ...]] = Counter()
    for (sample, labels), v in samples.items():
        if sample == name and v:
            found = dict(labels)
            out[tuple(found[k] for k in keys)] += v  # type: ignore[assignment]
    return dict(out)


# Each task's kind, what it does, and so how its attempts end.
MIXED = [
    *({"kind": "t_blocking", "args": {"value": i}} for i in range(4)),  # succeeded
    *({"kind": "t_flaky", "args": {"fail_times": 1}} for _ in range(3)),  # failed, then succeeded
    *({"kind": "t_doomed", "args": {}} for _ in range(2)),  # failed for good at once
    {"kind": "t_poison", "args": {"how": "exit"}, "max_attempts": 2},  # crashed, crashed
    {"kind": "t_hang", "args": {"seconds": 60}, "timeout_s": 0.3, "max_attempts": 1},  # timed out
]
ATTEMPTS = {("t_blocking", "succeeded"): 4, ("t_flaky", "failed"): 3, ("t_flaky", "succeeded"): 3,
            ("t_doomed", "failed"): 2, ("t_poison", "crashed"): 2, ("t_hang", "timed_out"): 1}
TASKS = {("t_blocking", "succeeded"): 4, ("t_flaky", "succeeded"): 3, ("t_doomed", "failed"): 2,
         ("t_poison", "failed"): 1, ("t_hang", "failed"): 1}


def test_a_finished_run_s_figures_match_the_database_and_the_work_done(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise) -> None:
    run_id = t.submit_run("t_blocking", MIXED, max_attempts=3)
    single = t.submit_task("echo", {"x": 1})
    sup = supervise()
    assert t.wait_run(run_id, 20).status == "completed"
    t.wait_task(single, 5)
    _, tasks = t.run_with_tasks(run_id)
    tasks.append(t.task(single))

    # What the database says, read on its own: the tasks' statuses and every attempt's outcome.
    statuses = Counter((task.kind, task.status) for task in tasks)
    outcomes = Counter((task.kind, a.outcome) for task in tasks for a in t.attempts(task.id))
    assert statuses == {**TASKS, ("echo", "succeeded"): 1}
    assert outcomes == {**ATTEMPTS, ("echo", "succeeded"): 1}

    database = DatabaseCollector(t.engine, alive_within_s=15.0, fresh_s=0.0, cost_share=0.0)

    def counted() -> Samples | None:
        """The loop counts an end right after its group commit, a moment after the run shows completed."""
        s = scrape(sup.metrics.registry, database)
        ended = sum(by(s, "tenure_attempts_finished_total", "kind", "outcome").values())
        return s if ended == sum(outcomes.values()) else None

    samples = wait_for(counted, 5, "every end counted")
    assert isinstance(samples, dict)

    # From the database: right whoever did the work.
    assert by(samples, "tenure_tasks", "kind", "status") == statuses
    assert value(samples, "tenure_tasks", kind="t_hang", status="running") == 0.0  # zeros are there, not absent
    attempts_by_outcome: Counter[tuple[str]] = Counter()
    for (_, outcome), n in outcomes.items():
        attempts_by_outcome[(outcome,)] += n
    assert by(samples, "tenure_attempts", "outcome") == attempts_by_outcome
    assert value(samples, "tenure_runs", status="completed") == 1.0
    assert value(samples, "tenure_supervisors_alive") == 1.0
    assert value(samples, "tenure_database_up") == 1.0
    assert value(samples, "tenure_oldest_due_seconds") == 0.0

    # From this supervisor: every attempt it started and ended, by kind and outcome.
    assert by(samples, "tenure_attempts_finished_total", "kind", "outcome") == outcomes
    assert by(samples, "tenure_attempt_duration_seconds_count", "kind", "outcome") == outcomes
    for (kind, outcome), n in outcomes.items():
        assert value(samples, "tenure_attempt_duration_seconds_bucket", kind=kind, outcome=outcome, le="+Inf") == n
        assert value(samples, "tenure_attempt_duration_seconds_sum", kind=kind, outcome=outcome) > 0
    # The hang ran until its 0.3 s timeout; the blocking ones, far less than a second.
    assert value(samples, "tenure_attempt_duration_seconds_bucket", kind="t_hang", outcome="timed_out", le="0.25") == 0
    assert value(samples, "tenure_attempt_duration_seconds_bucket", kind="t_blocking", outcome="succeeded",
                 le="1.0") == 4
    started: Counter[tuple[str]] = Counter()
    for (kind, _), n in outcomes.items():
        started[(kind,)] += n
    assert by(samples, "tenure_attempts_started_total", "kind") == started
    # Every task waited once in the queue: from its submission to its first claim.
    per_kind = Counter((task.kind,) for task in tasks)
    assert by(samples, "tenure_queue_wait_seconds_count", "kind") == per_kind
    # ...and each wait is the database's own: its first claim (started_at) minus its submission.
    for (k,) in per_kind:
        waited = sum((task.started_at - task.created_at).total_seconds() for task in tasks
                     if task.kind == k and task.started_at is not None)
        assert abs(value(samples, "tenure_queue_wait_seconds_sum", kind=k) - waited) < 0.002 * per_kind[(k,)] + 1e-6
    assert value(samples, "tenure_concurrency") == sup.settings.concurrency
    assert value(samples, "tenure_running_attempts") == 0.0
    assert value(samples, "tenure_leases_reaped_total", why="dead") == 0.0

    # Heartbeats come every 0.05 s here: their lag is counted and their age stays small.
    wait_for(lambda: value(scrape(sup.metrics.registry), "tenure_heartbeat_lag_seconds_count") >= 3, 5, "3 beats")
    assert 0 <= value(scrape(sup.metrics.registry), "tenure_heartbeat_age_seconds") < 5


def test_leases_reaped_from_a_dead_supervisor_are_counted_and_lost(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise) -> None:
    leases = Leases(t.engine)
    boot, ticks = process_identity(os.getpid())
    # Our own pid with another start: a pid reused after a restart, so its owner is dead.
    ghost = leases.register(socket.gethostname(), os.getpid(), boot, (ticks or 0) - 1)
    run_id = t.submit_run(3, "t_blocking")
    assert len(leases.claim(ghost, 3)) == 3
    sup = supervise(lease_ttl_s=60.0)
    assert t.wait_run(run_id, 10).counts["succeeded"] == 3
    samples = scrape(sup.metrics.registry, DatabaseCollector(t.engine, 15.0, fresh_s=0.0))
    assert value(samples, "tenure_leases_reaped_total", why="dead") == 3
    assert value(samples, "tenure_leases_reaped_total", why="silent") == 0
    assert value(samples, "tenure_attempts", outcome="lost") == 3
    assert value(samples, "tenure_attempts", outcome="succeeded") == 3
    # The ghost was marked stopped as it was reaped: only the live supervisor counts.
    assert value(samples, "tenure_supervisors_alive") == 1


def test_cancelled_and_released_attempts_are_counted(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    cancelled = t.submit_run(2, "t_long", {"steps": 100_000, "step_s": 0.01})
    released = t.submit_run(3, "t_long", {"steps": 100_000, "step_s": 0.01})
    sup = supervise()
    wait_for(lambda: value(scrape(sup.metrics.registry), "tenure_running_attempts") == 5, 10, "five running")
    assert t.cancel_run(cancelled) == 2
    # The cancel is written by whoever cancels; this supervisor sees the leases gone and stops them.
    wait_for(lambda: value(scrape(sup.metrics.registry), "tenure_leases_lost_total", kind="t_long") == 2, 5,
             "two leases lost")
    assert sup.stop(grace_s=0.0, timeout_s=10)
    samples = scrape(sup.metrics.registry, DatabaseCollector(t.engine, 15.0, fresh_s=0.0))
    assert value(samples, "tenure_attempts_finished_total", kind="t_long", outcome="released") == 3
    assert value(samples, "tenure_attempt_duration_seconds_count", kind="t_long", outcome="released") == 3
    assert value(samples, "tenure_attempts", outcome="cancelled") == 2
    assert value(samples, "tenure_attempts", outcome="released") == 3
    assert value(samples, "tenure_tasks", kind="t_long", status=TaskStatus.QUEUED.value) == 3
    assert t.run(released).counts[TaskStatus.QUEUED.value] == 3
    assert value(samples, "tenure_tasks", kind="t_long", status=TaskStatus.CANCELLED.value) == 2
    assert value(samples, "tenure_runs", status="cancelled") == 1
    assert value(samples, "tenure_supervisors_alive") == 0  # it stopped
    # Queued again and due now: the oldest has been due since the stop, a moment ago.
    assert 0 <= value(samples, "tenure_oldest_due_seconds") < 10


def test_scrapes_share_one_database_read_for_a_while(t: service.Tenure) -> None:
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    t.submit_run(4, "echo")
    database = DatabaseCollector(t.engine, 15.0, fresh_s=60.0)
    event.listen(t.engine, "before_cursor_execute", count)
    try:
        first = scrape(database)
        sent = len(statements)
        second = scrape(database)
        assert len(statements) == sent > 0  # the second scrape read nothing
        assert first == second
        assert value(first, "tenure_tasks", kind="echo", status="queued") == 4
        assert 0 <= value(first, "tenure_oldest_due_seconds") < 10  # submitted just now
        fresh = DatabaseCollector(t.engine, 15.0, fresh_s=0.0, cost_share=0.0)
        scrape(fresh)
        scrape(fresh)
        assert len(statements) >= sent * 3  # without sharing, every scrape reads
    finally:
        event.remove(t.engine, "before_cursor_execute", count)


def test_a_database_that_cannot_be_read_gives_database_up_0_not_a_failed_scrape(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'tenure.db'}")
    try:
        samples = scrape(DatabaseCollector(engine, 15.0, fresh_s=0.0))
    finally:
        engine.dispose()
    assert value(samples, "tenure_database_up") == 0.0
    assert not [name for name, _ in samples if name.startswith("tenure_tasks")]


def test_every_outcome_is_a_label_value(t: service.Tenure) -> None:
    samples = scrape(DatabaseCollector(t.engine, 15.0, fresh_s=0.0))
    outcomes = {dict(labels)["outcome"] for name, labels in samples if name == "tenure_attempts"}
    assert outcomes == {o.value for o in Outcome}
    assert not [name for name, _ in samples if name == "tenure_tasks"]  # an empty database has no kinds yet


def test_schedule_fires_skips_catch_ups_and_lag_are_counted_per_schedule(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise) -> None:
    from datetime import timedelta

    from sqlalchemy import text

    t.add_schedule("pulse", "* * * * * *", task={"kind": "echo", "args": {}}, overlap="allow", grace_s=1)
    ten_ago = t.store.database_now().replace(microsecond=0) - timedelta(seconds=10)
    with t.engine.begin() as conn:  # ten slots passed while nothing ran: most missed, the latest caught up
        conn.execute(text("UPDATE schedules SET next_slot_at = :at WHERE name = 'pulse'"), {"at": ten_ago})
    sup = supervise()
    wait_for(lambda: sum(f.outcome == "fired" and not f.catch_up for f in t.schedule("pulse").fires) >= 2, 10,
             "two slots fired on time")
    assert sup.stop(grace_s=0.0, timeout_s=10)
    fires = t.store.schedule_fires("pulse", limit=1000)
    samples = scrape(sup.metrics.registry)
    on_time = sum(f.outcome == "fired" and not f.catch_up for f in fires)
    missed = sum(f.slots for f in fires if f.outcome == "missed")
    assert missed >= 8 and sum(f.catch_up for f in fires) == 1
    assert value(samples, "tenure_schedule_fires_total", schedule="pulse", outcome="missed", catch_up="false") == missed
    assert value(samples, "tenure_schedule_fires_total", schedule="pulse", outcome="fired", catch_up="true") == 1
    assert value(samples, "tenure_schedule_fires_total", schedule="pulse", outcome="fired", catch_up="false") == on_time
    assert value(samples, "tenure_schedule_fire_lag_seconds_count", schedule="pulse") == on_time
