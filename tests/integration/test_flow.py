"""Flow control against a real database (both backends): queues, priorities, ageing, pauses, keys,
rates and unique tasks, through the claim itself (several claimers stand in for several hosts).

Real worker processes on several hosts are in tests/acceptance/test_flow_fleet.py.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import text

import service
from service.errors import Conflict, InvalidInput, NotFound
from service.faces import summary
from service.storage.leases import Leases
from service.storage.models import Outcome
from tests import kinds_for_tests  # noqa: F401 - registers the t_* kinds
from tests.conftest import wait_for
from tests.integration.conftest import FAST


@pytest.fixture
def env(open_tenure):  # type: ignore[no-untyped-def]
    t = open_tenure()
    leases = Leases(t.engine)
    a = leases.register("host-a", 1001, None, None)
    b = leases.register("host-b", 1002, None, None)
    return t, leases, a, b


def finish(leases: Leases, lease, holder: int) -> None:  # type: ignore[no-untyped-def]
    assert leases.finish(lease, holder, outcome=Outcome.SUCCEEDED, result=None)


def age(t: service.Tenure, task_id: int, seconds: float) -> None:
    """Make a waiting task look as if it had waited ``seconds`` longer (instead of waiting)."""
    with t.engine.begin() as conn:
        before = conn.execute(text("SELECT queued_at FROM tasks WHERE id = :id"), {"id": task_id}).scalar_one()
        if isinstance(before, str):  # SQLite hands back the stored text
            from datetime import datetime
            before = datetime.fromisoformat(before)
        conn.execute(text("UPDATE tasks SET queued_at = :at WHERE id = :id"),
                     {"at": before - timedelta(seconds=seconds), "id": task_id})


# -- priorities and ageing ---------------------------------------------------------------

def test_higher_priority_starts_first_and_equal_priority_keeps_submission_order(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, _ = env
    ids = {p: [] for p in (0, 5, -3)}  # type: ignore[var-annotated]
    for i, p in enumerate([0, 5, -3, 5, 0, -3, 5]):
        ids[p].append(t.submit_task("echo", {"i": i}, priority=p))
    order = [lease.task_id for _ in range(7) for lease in leases.claim(a, 1)]
    assert order == ids[5] + ids[0] + ids[-3]
    assert [t.task(i).priority for i in order] == [5, 5, 5, 0, 0, -3, -3]


def test_a_task_waiting_past_its_queues_age_goes_ahead_of_higher_priorities(env) -> None:  # type: ignore[no-untyped-def]
    """The rule against starvation: a task that has waited longer than its queue's age_s (default 5 min)
    starts before any younger task, whatever their priorities; the longest waiting first."""
    t, leases, a, _ = env
    low = t.submit_task("echo", {"low": 1}, priority=-10)
    highs = [t.submit_task("echo", {"i": i}, priority=10) for i in range(3)]
    assert leases.claim(a, 1)[0].task_id == highs[0]
    age(t, low, 301)
    assert [lease.task_id for lease in leases.claim(a, 2)] == [low, highs[1]]


def test_a_steady_stream_of_high_priority_work_does_not_starve_a_low_one(env) -> None:  # type: ignore[no-untyped-def]
    """With age_s = 0.3 s and two new high-priority tasks for every one that starts, the low task
    starts once it has waited 0.3 s, not never."""
    t, leases, a, _ = env
    t.set_queue("busy", age_s=0.3)
    low = t.submit_task("echo", {"low": 1}, queue="busy", priority=-10)
    started: list[int] = []
    deadline = threading.Event()
    timer = threading.Timer(5.0, deadline.set)
    timer.start()
    try:
        while low not in started and not deadline.is_set():
            for _ in range(2):
                t.submit_task("echo", {}, queue="busy", priority=10)
            started += [lease.task_id for lease in leases.claim(a, 1)]
    finally:
        timer.cancel()
    assert low in started, "the low-priority task never started"
    waited = t.task(low).started_at - t.task(low).created_at
    assert timedelta(seconds=0.3) <= waited < timedelta(seconds=3), waited
    assert len(started) > 3  # high-priority work went first meanwhile


# -- queues: limits that hold across claimers, pause, served queues --------------------------

def test_a_queues_limit_holds_across_supervisors_and_a_finished_attempt_frees_its_slot(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, b = env
    t.set_queue("imports", concurrency=3)
    for i in range(10):
        t.submit_task("echo", {"i": i}, queue="imports")
    other = t.submit_task("echo", {"other": 1})
    got_a = leases.claim(a, 2)
    got_b = leases.claim(b, 10)
    assert len(got_a) == 2 and [lease.queue for lease in got_a + got_b].count("imports") == 3
    assert other in [lease.task_id for lease in got_a + got_b]  # the default queue is not held back
    assert leases.claim(a, 10) == [] and not leases.anything_due()
    assert leases.anything_due().blocked  # due work waits only behind the limit
    done = next(lease for lease in got_a + got_b if lease.queue == "imports")
    finish(leases, done, a if done in got_a else b)
    (freed,) = leases.claim(b, 10)
    assert freed.queue == "imports" and freed.limited
    assert t.queue("imports").running == 3


def test_a_paused_queue_starts_nothing_and_resumes(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, b = env
    run_id = t.submit_run(3, "echo", queue="bulk")
    mine = t.submit_task("echo", {})
    view = t.pause_queue("bulk")
    assert view.paused and view.waiting == 3
    assert [lease.task_id for lease in leases.claim(a, 10)] == [mine]
    assert leases.claim(b, 10) == [] and not leases.anything_due()
    assert "queue bulk is paused" in (t.run_status(run_id).held or "")
    t.resume_queue("bulk")
    assert len(leases.claim(b, 10)) == 3
    with pytest.raises(NotFound, match="no queue 'nope'"):
        t.pause_queue("nope")


def test_a_paused_run_starts_none_of_its_tasks_and_resumes(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, _ = env
    paused, other = t.submit_run(3, "echo"), t.submit_run(2, "echo")
    assert t.pause_run(paused) and not t.pause_run(paused)  # a second pause changes nothing
    assert {lease.run_id for lease in leases.claim(a, 10)} == {other}
    assert t.run(paused).paused_at is not None
    assert t.run_status(paused).held == "this run is paused (resume it to go on)"
    assert t.resume_run(paused)
    assert {lease.run_id for lease in leases.claim(a, 10)} == {paused}
    t.cancel_run(other)
    with pytest.raises(Conflict, match="has ended"):
        t.pause_run(other)


def test_a_supervisor_takes_tasks_only_from_the_queues_it_serves(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, _ = env
    mail = t.submit_task("echo", {}, queue="mail")
    t.submit_task("echo", {}, queue="imports")
    t.submit_task("echo", {})
    assert [lease.task_id for lease in leases.claim(a, 10, served=["mail"])] == [mail]
    assert leases.claim(a, 10, served=["mail", "reports"]) == []


def test_once_a_queue_is_declared_submits_to_unknown_queues_are_refused(env) -> None:  # type: ignore[no-untyped-def]
    t, _, _, _ = env
    t.submit_task("echo", {}, queue="adhoc")  # nothing declared: a queue comes to exist by use
    t.set_queue("imports", concurrency=2)
    with pytest.raises(InvalidInput, match="queue 'typo' is not declared; the queues are: adhoc, default, imports"):
        t.submit_task("echo", {}, queue="typo")
    with pytest.raises(InvalidInput, match="queue 'typo' is not declared"):
        t.submit_run(2, "echo", queue="typo")
    assert t.submit_task("echo", {}, queue="adhoc")  # an existing queue still takes work


@pytest.mark.parametrize(("call", "message"), [
    (lambda t: t.set_queue("q", concurrency=0), "concurrency must be a whole number from 1"),
    (lambda t: t.set_queue("q", concurrency=-2), "concurrency must be a whole number from 1"),
    (lambda t: t.set_queue("q", rate="10"), "is not a rate; .*a rate needs its period"),
    (lambda t: t.set_queue("q", rate="0/s"), "the number of starts must be a whole number from 1"),
    (lambda t: t.set_queue("bad name!"), "queue must be a name of 1 to 100 letters"),
    (lambda t: t.set_queue("imports\n"), "queue must be a name of 1 to 100 letters"),  # no invisible twin
    (lambda t: t.submit_task("echo", {}, queue="imports\n"), "queue must be a name of 1 to 100 letters"),
    (lambda t: t.set_queue("q", age_s=1e12), "age_s must be a number of seconds above 0 and at most a year"),
    (lambda t: t.set_queue("q", age_s=float("inf")), "age_s must be a number of seconds above 0"),
    (lambda t: t.set_queue("q", age_s=0), "age_s must be a number of seconds above 0"),
    (lambda t: t.set_key("k", concurrency=0), "concurrency must be a whole number from 1"),
    (lambda t: t.submit_task("echo", {}, key_limit=2), "key_limit needs a key"),
    (lambda t: t.submit_task("echo", {}, key="k", key_limit=0), "key_limit must be a whole number from 1"),
    (lambda t: t.submit_task("echo", {}, priority=1.5), "priority must be a whole number"),
    (lambda t: t.submit_task("echo", {}, priority=10_000), "priority must be a whole number from -1000 to 1000"),
    (lambda t: t.submit_run(2, "echo", queue=""), "queue must be a name"),
])
def test_bad_flow_input_is_refused_with_its_field_named_and_nothing_written(env, call, message) -> None:  # type: ignore[no-untyped-def]
    t, _, _, _ = env
    before = [q.name for q in t.queues()]
    with pytest.raises(InvalidInput, match=message):
        call(t)
    assert [q.name for q in t.queues()] == before
    assert t.runs() == []


# -- concurrency keys and rates --------------------------------------------------------------

def test_a_keys_limit_holds_across_claimers_and_does_not_block_other_work_behind_it(env) -> None:  # type: ignore[no-untyped-def]
    """Twenty tasks of customer-42 (limit 2) ahead of five others: the claim takes 2 of them and goes
    past the rest to the others, in claim order."""
    t, leases, a, b = env
    keyed = [t.submit_task("echo", {"i": i}, key="customer-42", key_limit=2) for i in range(20)]
    others = [t.submit_task("echo", {"o": i}) for i in range(5)]
    got = leases.claim(a, 1) + leases.claim(b, 10)
    assert [lease.task_id for lease in got] == keyed[:2] + others
    assert leases.claim(a, 10) == []
    assert t.key("customer-42").running == 2
    finish(leases, got[0], a)
    assert [lease.task_id for lease in leases.claim(b, 10)] == [keyed[2]]


def test_a_kind_can_derive_its_key_and_limit_from_args(env) -> None:  # type: ignore[no-untyped-def]
    from service import register

    @register("t_per_customer", key=lambda args: f"customer-{args['customer']}", key_limit=1, queue="imports",
              priority=3)
    def build(args, ctx):  # type: ignore[no-untyped-def]
        raise AssertionError("never run here")

    t, leases, a, _ = env
    ids = [t.submit_task("t_per_customer", {"customer": c}) for c in (1, 1, 2)]
    task = t.task(ids[0])
    assert (task.queue, task.priority, task.limit_key) == ("imports", 3, "customer-1")
    assert [lease.task_id for lease in leases.claim(a, 10)] == [ids[0], ids[2]]


def test_a_rate_limit_never_lets_more_than_n_start_in_any_window(env) -> None:  # type: ignore[no-untyped-def]
    """5 starts per 0.5 s: the first claim takes 5, the next nothing (held back, with when the window
    frees a start); from the attempt rows, no window of 0.5 s ever holds more than 5 starts."""
    t, leases, a, b = env
    t.set_queue("api", rate="5/500ms")
    for i in range(12):
        t.submit_task("echo", {"i": i}, queue="api")
    first = leases.claim(a, 10)
    assert len(first) == 5
    more, claimed = leases.claim_within(b, 10)
    assert more == [] or claimed.held_back
    starts = []
    deadline = threading.Event()
    timer = threading.Timer(10.0, deadline.set)
    timer.start()
    try:
        while len(starts) + len(first) + len(more) < 12 and not deadline.is_set():
            got = leases.claim(a, 10) + leases.claim(b, 10)
            starts += got
            found = leases.anything_due()
            if not got and found.reopen_in_s() is not None:
                threading.Event().wait(min(found.reopen_in_s() or 0, 0.5))  # the window's own time
    finally:
        timer.cancel()
    assert len(starts) + len(first) + len(more) == 12
    with t.engine.connect() as conn:
        times = sorted(conn.execute(text("SELECT started_at FROM task_attempts WHERE queue = 'api'")).scalars())
    times = [service_time(x) for x in times]
    worst = max(sum(1 for s in times if x <= s < x + timedelta(seconds=0.5)) for x in times)
    assert worst <= 5, worst


def service_time(value):  # type: ignore[no-untyped-def]
    from datetime import datetime
    return datetime.fromisoformat(value) if isinstance(value, str) else value


# -- unique while active ---------------------------------------------------------------------

def test_a_unique_key_makes_one_task_while_active_and_is_released_when_it_ends(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, _ = env
    first = t.submit_task("echo", {"n": 1}, unique_key="nightly-report")
    assert t.submit_task("echo", {"n": 2}, unique_key="nightly-report") == first
    (lease,) = leases.claim(a, 1)
    assert t.submit_task("echo", {"n": 3}, unique_key="nightly-report") == first  # running counts too
    finish(leases, lease, a)
    second = t.submit_task("echo", {"n": 4}, unique_key="nightly-report")
    assert second != first and t.task(second).unique_key == "nightly-report"


def test_two_racing_submits_with_one_unique_key_make_one_task(env) -> None:  # type: ignore[no-untyped-def]
    t, _, _, _ = env
    results: list[int] = []
    gate = threading.Barrier(4)

    def submit() -> None:
        gate.wait()
        results.append(t.submit_task("echo", {}, unique_key="once"))

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(set(results)) == 1 and len(results) == 4
    with t.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM tasks WHERE unique_key = 'once'")).scalar_one() == 1


# -- supervisors -------------------------------------------------------------------------------

def test_a_supervisor_held_back_by_a_limit_sleeps_and_an_end_elsewhere_wakes_it(t, supervise) -> None:  # type: ignore[no-untyped-def]
    """Two supervisors share a queue of limit 1: the one that cannot start anything does not spin (loop
    turns stay at the idle poll's pace), and every task still runs, one at a time."""
    t.set_queue("one", concurrency=1)
    ids = [t.submit_task("t_blocking", {"seconds": 0.05}, queue="one") for _ in range(6)]
    sups = [supervise(idle_poll_s=0.2), supervise(idle_poll_s=0.2)]
    wait_for(lambda: all(t.task(i).status == "succeeded" for i in ids), 20, "every task of the queue")
    with t.engine.connect() as conn:
        spans = conn.execute(text("SELECT started_at, finished_at FROM task_attempts WHERE queue = 'one' "
                                  "ORDER BY started_at")).all()
    spans = [(service_time(s), service_time(f)) for s, f in spans]
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1)), "two ran at once"
    # Hold one task running long, then watch the other supervisor while it can start nothing.
    long = t.submit_task("t_long", {"steps": 100_000, "step_s": 0.01}, queue="one")
    t.submit_task("echo", {}, queue="one")
    wait_for(lambda: t.task(long).status == "running", 10, "the long task to start")
    idle = next(s for s in sups if s.inflight == 0)
    before = idle.loop_turns
    threading.Event().wait(1.0)  # a second of being held back, counted in loop turns
    assert idle.loop_turns - before < 60, idle.loop_turns - before
    t.cancel_task(long)


def test_resume_starts_paused_work_at_once(t, supervise) -> None:  # type: ignore[no-untyped-def]
    t.set_queue("later")
    t.pause_queue("later")
    sup = supervise(idle_poll_s=5.0)  # only a ring can wake it within the test's deadline
    task = t.submit_task("echo", {}, queue="later")
    wait_for(lambda: sup.loop_turns > 0, 5, "the supervisor to go idle")
    t.resume_queue("later")
    wait_for(lambda: t.task(task).status == "succeeded", 3, "the resumed task")


def test_waiting_runs_say_which_limit_holds_them(env) -> None:  # type: ignore[no-untyped-def]
    t, leases, a, _ = env
    t.set_queue("imports", concurrency=1)
    blocker = t.submit_run(1, "echo", queue="imports")
    held = t.submit_run(2, "echo", queue="imports")
    leases.claim(a, 10)
    assert t.run_status(held).held == "queue imports is at its limit of 1 running"
    assert t.run_status(blocker).held is None  # it runs
    keyed = t.submit_run(2, "echo", key="customer-42", key_limit=1)
    leases.claim(a, 10)
    assert t.run_status(keyed).held is None  # one of its tasks runs: the bar shows that
    other = t.submit_run(1, "echo", key="customer-42")
    assert t.run_status(other).held == "customer-42 has 1 running, its limit"
    assert summary.waiting(None, 1, t.run_status(other).held) == (
        "waiting for a free slot: customer-42 has 1 running, its limit")


def test_supervisor_settings_check_the_queues_they_serve() -> None:
    assert service.Settings(**FAST, queues=("imports", "mail")).queues == ("imports", "mail")
    with pytest.raises(InvalidInput, match="names no queue"):
        service.Settings(queues=())
    with pytest.raises(InvalidInput, match="a queue must be a name"):
        service.Settings(queues=("imports", "no way"))


def test_metrics_show_each_queue(env) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from service.supervisor.metrics import DatabaseCollector

    t, leases, a, _ = env
    t.set_queue("imports", concurrency=2)
    for i in range(5):
        t.submit_task("echo", {"i": i}, queue="imports")
    t.set_queue("idle")
    t.pause_queue("idle")
    leases.claim(a, 10)
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(t.engine, alive_within_s=60))
    text_out = generate_latest(registry).decode()
    for line in ('tenure_queue_waiting{queue="imports"} 3.0', 'tenure_queue_running{queue="imports"} 2.0',
                 'tenure_queue_limit{queue="imports"} 2.0', 'tenure_queue_paused{queue="idle"} 1.0',
                 'tenure_queue_paused{queue="imports"} 0.0'):
        assert line in text_out, text_out


def test_a_pause_changes_the_run_pages_etag_so_a_poll_sees_it(env) -> None:  # type: ignore[no-untyped-def]
    """A paused run, or its queue paused, changes what the page shows: a poll must not get a 304."""
    t, leases, a, _ = env
    small = t.submit_run(2, "echo", queue="work")
    big = t.submit_run(1200, "echo", queue="work")  # read compactly (big runs)
    leases.claim(a, 1, served=["work"])  # one task of the small run runs
    tags = {run: t.run_status(run).etag for run in (small, big)}
    t.pause_run(small)
    assert t.run_status(small).etag != tags[small]
    t.pause_queue("work")
    assert t.run_status(big).etag != tags[big]
    assert t.run_status(big).held == "queue work is paused"


def test_a_limit_or_pause_set_between_a_look_and_its_claim_holds_for_that_claim(env) -> None:  # type: ignore[no-untyped-def]
    """A supervisor looks, then claims: a pause, a queue limit or a key limit committed in between
    holds for that claim already (the look said the queue had nothing to count)."""
    t, leases, a, _ = env
    for i in range(6):
        t.submit_task("echo", {"i": i}, queue="work")
    stale = leases.anything_due()
    t.pause_queue("work")
    assert leases.claim(a, 10, stale) == []
    t.resume_queue("work")
    stale = leases.anything_due()
    t.set_queue("work", concurrency=2)
    assert len(leases.claim(a, 10, stale)) <= 2
    assert t.queue("work").running <= 2
    t.set_queue("plain")
    keyed = [t.submit_task("echo", {"k": i}, queue="plain") for i in range(3)]
    stale = leases.anything_due(["plain"])
    assert not stale.key_limits
    for task_id in keyed:  # the same key, limited to 1, set after the look
        with t.engine.begin() as conn:
            conn.execute(text("UPDATE tasks SET limit_key = 'partner' WHERE id = :id"), {"id": task_id})
    t.set_key("partner", concurrency=1)
    assert [lease.task_id for lease in leases.claim(a, 10, stale)] == []  # the next claim counts it
    assert [lease.task_id for lease in leases.claim(a, 10, served=["plain"])] == keyed[:1]


def test_a_run_paused_between_a_look_and_its_claim_starts_nothing(env) -> None:  # type: ignore[no-untyped-def]
    """Found by review: the claim took paused runs from its look only."""
    t, leases, a, _ = env
    t.set_queue("limited", concurrency=10)
    for queue in ("default", "limited"):
        run = t.submit_run(3, "echo", queue=queue)
        stale = leases.anything_due([queue])
        t.pause_run(run)
        assert leases.claim(a, 10, stale) == [], queue


def test_a_paused_run_with_work_due_by_a_time_does_not_make_a_supervisor_spin(t, supervise) -> None:  # type: ignore[no-untyped-def]
    """Found by review: its due times counted as work due now, so the loop looked again every 5 ms."""
    run = t.submit_run(2, "echo", delay_s=0.2)
    t.pause_run(run)
    sup = supervise(idle_poll_s=0.5, heartbeat_s=0.25)
    looks = Leases(t.engine)
    wait_for(lambda: any(q.by_time for q in looks.anything_due().queues), 5, "the delayed start to come due")
    before = sup.loop_turns
    threading.Event().wait(1.0)  # a second, counted in loop turns
    assert sup.loop_turns - before < 25, sup.loop_turns - before  # ~2 idle polls and ~4 heartbeats, not ~200
    assert t.run(run).counts["queued"] == 2


def test_many_full_keys_ahead_do_not_hide_the_work_behind_them(env) -> None:  # type: ignore[no-untyped-def]
    """Found by review: a few rounds of one candidate each ran out behind 5 full keys."""
    t, leases, a, b = env
    holders = [t.submit_task("echo", {"k": k}, key=f"customer-{k}", key_limit=1) for k in range(5)]
    assert len(leases.claim(b, 5)) == 5  # each key at its limit
    waiting = [t.submit_task("echo", {"k": k}, key=f"customer-{k}") for k in range(5)]
    other = t.submit_task("echo", {"other": 1})
    assert [lease.task_id for lease in leases.claim(a, 1)] == [other]
    assert all(t.task(i).status == "queued" for i in waiting) and holders


def test_a_schedule_starts_its_work_where_its_kind_says(env) -> None:  # type: ignore[no-untyped-def]
    """Found by review: a slot's task or run went to the default queue, without its kind's key."""
    from service import register

    @register("t_partner_call", queue="partner", priority=7, key=lambda args: f"customer-{args['c']}", key_limit=1)
    def build(args, ctx):  # type: ignore[no-untyped-def]
        raise AssertionError("never run here")

    t, _, _, _ = env
    t.add_schedule("calls", "0 2 * * *", task={"kind": "t_partner_call", "args": {"c": 42}})
    t.add_schedule("batch", "0 3 * * *", run={"kind": "t_partner_call", "tasks": [{"c": 1}, {"c": 2}]})
    task_id = t.fire_schedule("calls").task_id
    run_id = t.fire_schedule("batch").run_id
    assert task_id is not None and run_id is not None
    task = t.task(task_id)
    assert (task.queue, task.priority, task.limit_key) == ("partner", 7, "customer-42")
    _, tasks = t.run_with_tasks(run_id)
    assert t.run(run_id).queue == "partner" and [k.limit_key for k in tasks] == ["customer-1", "customer-2"]
    assert t.key("customer-42").concurrency == 1


def test_a_claim_that_fills_a_keys_rate_wakes_its_supervisor_when_the_window_frees(t, supervise) -> None:  # type: ignore[no-untyped-def]
    """Found by review: on SQLite such a claim noted no wake-up time, so a key's rate ran at the pace
    of the idle poll (10 s here): 15 starts take about 2 s at 5 per second."""
    t.set_key("partner", rate="5/s")
    ids = [t.submit_task("t_long", {"steps": 100_000, "step_s": 0.01}, key="partner") for _ in range(15)]
    supervise(idle_poll_s=10.0, concurrency=20)
    wait_for(lambda: sum(t.task(i).status == "running" for i in ids) == 15, 6, "15 starts at 5 per second")
    for i in ids:
        t.cancel_task(i)
