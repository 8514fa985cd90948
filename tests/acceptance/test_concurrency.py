"""Everything at once on PostgreSQL: claim, heartbeat, finish, lose, release, reclaim, cancel, retry, prune.

Threads and processes drive the real storage verbs on the same small runs for a fixed number
of rounds, seeded (TENURE_STRESS_SEED replays one). Between rounds the invariants are checked
against the database. Wanted: no deadlock, no error of any kind, no invariant broken. Also the
two races a review found, each made to happen on purpose, and the lock order of a cancel that
waits; a test knows that a statement waits on a lock from PostgreSQL itself (``pg_stat_activity``,
``pg_locks``), never from a sleep. An acceptance test: about 30 s (the stress alone takes 15 to
35 s, by how busy the machine is).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

import service
from service.errors import Conflict
from service.storage.leases import Leases
from service.storage.models import Outcome
from tests.acceptance.procs import REPO
from tests.conftest import report, wait_for
from tests.stress import HOOK_OPEN_WHILE_DELETING, person_actor, pruner_actor, supervisor_actor

pytestmark = pytest.mark.acceptance
SEED = int(os.environ.get("TENURE_STRESS_SEED", random.SystemRandom().randrange(10**6)))
ROUNDS, ROUND_S, RUNS, TASKS = 8, 1.5, 16, 8


def invariants(t: service.Tenure, retried: Counter[int], deleting: set[int]) -> list[str]:
    """What must hold whatever ran when: one line per broken rule (``deleting``: runs seen being pruned)."""
    broken: list[str] = []
    with t.engine.connect() as conn:
        def rows(sql: str) -> list[Any]:
            return list(conn.execute(text(sql)).all())

        for r in rows("SELECT r.id, r.total, count(t.id) FROM runs r LEFT JOIN tasks t ON t.run_id = r.id "
                      "WHERE r.status <> 'deleting' GROUP BY r.id, r.total HAVING count(t.id) <> r.total"):
            broken.append(f"run {r[0]}: counts add up to {r[2]}, not {r[1]}")
        # A run being deleted loses its tasks batch by batch, so its counts need not add up; it is
        # never revived, and nothing of it runs again.
        now = {int(r[0]): str(r[1]) for r in rows("SELECT id, status FROM runs")}
        for run_id in sorted(deleting):
            if run_id in now and now[run_id] != "deleting":
                broken.append(f"run {run_id} was being deleted and is {now[run_id]} again")
        for r in rows("SELECT DISTINCT r.id, t.status FROM runs r JOIN tasks t ON t.run_id = r.id "
                      "WHERE r.status = 'deleting' AND t.status IN ('queued', 'running', 'retrying')"):
            broken.append(f"run {r[0]} is being deleted but has a {r[1]} task")
        for r in rows(str(HOOK_OPEN_WHILE_DELETING)):
            broken.append(f"run {r[0]} is being deleted while its completion hook {r[1]} is {r[2]}")
        for r in rows("SELECT r.id, r.hook_task_id FROM runs r WHERE r.hook_task_id IS NOT NULL "
                      "AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = r.hook_task_id)"):
            broken.append(f"run {r[0]} names hook task {r[1]}, which was deleted before it")
        for r in rows("SELECT DISTINCT r.id, t.status FROM runs r JOIN tasks t ON t.run_id = r.id "
                      "WHERE r.status = 'completed' AND t.status IN ('queued', 'running', 'retrying')"):
            broken.append(f"run {r[0]} is completed but has a {r[1]} task")
        for r in rows("SELECT r.id FROM runs r WHERE r.status = 'cancelled' AND NOT EXISTS "
                      "(SELECT 1 FROM tasks t WHERE t.run_id = r.id AND t.status = 'cancelled')"):
            broken.append(f"run {r[0]} is cancelled with no cancelled task (a completion overwritten)")
        for r in rows("SELECT DISTINCT r.id FROM runs r JOIN tasks t ON t.run_id = r.id "
                      "WHERE r.status = 'cancelled' AND t.status = 'running'"):
            broken.append(f"run {r[0]} is cancelled but a task still runs")
        for r in rows("SELECT task_id, count(*) FROM task_attempts WHERE outcome = 'succeeded' "
                      "GROUP BY task_id HAVING count(*) > 1"):
            broken.append(f"task {r[0]} succeeded {r[1]} times")
        for r in rows("SELECT t.id, t.status, (SELECT count(*) FROM task_attempts a WHERE a.task_id = t.id "
                      "AND a.outcome = 'succeeded') FROM tasks t WHERE t.run_id IS NOT NULL"):
            if (r[1] == "succeeded") != (r[2] == 1):
                broken.append(f"task {r[0]} is {r[1]} with {r[2]} succeeded attempts")
        for r in rows("SELECT t.id, t.status, t.attempts, t.supervisor_id, (SELECT count(*) FROM task_attempts a "
                      "WHERE a.task_id = t.id AND a.outcome = 'running'), (SELECT max(a.attempt) FROM task_attempts a "
                      "WHERE a.task_id = t.id AND a.outcome = 'running') FROM tasks t"):
            task_id, status, attempts, owner, open_attempts, open_number = r
            if status == "running" and (open_attempts != 1 or open_number != attempts or owner is None):
                broken.append(f"task {task_id} runs with {open_attempts} open attempts (last {open_number} of "
                              f"{attempts}), owner {owner}")
            if status != "running" and (open_attempts or owner is not None):
                broken.append(f"task {task_id} is {status} with {open_attempts} open attempts, owner {owner}")
        for r in rows("SELECT id, attempts, charged, lost FROM tasks WHERE charged + lost > attempts"):
            broken.append(f"task {r[0]}: charged {r[2]} + lost {r[3]} > attempts {r[1]}")
        hooks = Counter(int(json.loads(a)["run_id"]) if isinstance(a, str) else int(a["run_id"])
                        for (a,) in rows("SELECT args FROM tasks WHERE run_id IS NULL AND kind = 'echo'"))
        for r in rows("SELECT id, status, hook_task_id FROM runs"):
            if r[1] == "completed" and r[2] is None:
                broken.append(f"run {r[0]} completed without its hook task")
            if hooks[r[0]] > retried[r[0]] + 1:
                broken.append(f"run {r[0]} has {hooks[r[0]]} hook tasks for at most {retried[r[0]] + 1} completions")
    return broken


# Retention never deletes a task that has not ended (a run's, or a completion hook still to run):
# here such a DELETE fails, and the pruner reports the error.
REFUSE_OPEN_DELETES = (
    "CREATE FUNCTION refuse_open_delete() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'task % was deleted while %', OLD.id, OLD.status; END $$",
    "CREATE TRIGGER never_delete_open_tasks BEFORE DELETE ON tasks FOR EACH ROW "
    "WHEN (OLD.status IN ('queued', 'running', 'retrying')) EXECUTE FUNCTION refuse_open_delete()",
)


def test_everything_at_once_keeps_every_invariant(pg_url: str) -> None:
    report(f"stress seed {SEED} (TENURE_STRESS_SEED={SEED} replays it)")
    rng = random.Random(SEED)
    t = service.open(pg_url)
    with t.engine.begin() as conn:
        for statement in REFUSE_OPEN_DELETES:
            conn.execute(text(statement))
    leases = Leases(t.engine)
    runs = [t.submit_run(TASKS, "echo", on_complete="echo") for _ in range(RUNS)]  # the pruner replaces what it prunes
    sups = [leases.register(f"stress-{i}", 1000 + i, None, None) for i in range(6)]
    retried: Counter[int] = Counter()
    deleting: set[int] = set()
    totals: Counter[str] = Counter()
    pruned: Counter[str] = Counter()
    try:
        for round_no in range(ROUNDS):
            results: list[dict[str, Any]] = []
            procs = [subprocess.Popen(
                [sys.executable, "-m", "tests.stress", pg_url, str(rng.randrange(10**9)), str(ROUND_S),
                 ",".join(str(s) for s in [sups[i], *sups[:i], *sups[i + 1:]])],
                cwd=REPO, stdout=subprocess.PIPE, text=True) for i in (0, 1)]
            jobs: list[tuple[Any, tuple[Any, ...]]] = [
                (supervisor_actor, (pg_url, rng.randrange(10**9), ROUND_S, sups[i], [s for s in sups if s != sups[i]]))
                for i in (2, 3, 4, 5)
            ] + [(person_actor, (pg_url, rng.randrange(10**9), ROUND_S, runs)) for _ in range(2)] + [
                (pruner_actor, (pg_url, rng.randrange(10**9), ROUND_S, runs, TASKS))]
            threads = [threading.Thread(target=_collect, args=(results, actor, job_args)) for actor, job_args in jobs]
            for th in threads:
                th.start()
            for th in threads:
                th.join(60)
            for p in procs:
                out, _ = p.communicate(timeout=60)
                assert p.returncode == 0, out
                results.append(json.loads(out))
            assert len(results) == len(jobs) + len(procs), f"round {round_no}: an actor died (its traceback is above)"
            for result in results:
                assert not result["errors"], f"round {round_no}: {result['errors'][:5]}"
                totals.update(result["tally"])
                retried.update({int(k): v for k, v in result.get("retried", {}).items()})
                deleting.update(result.get("deleting", []))
                pruned.update(result.get("pruned", {}))
            broken = invariants(t, retried, deleting)
            assert not broken, f"round {round_no} (seed {SEED}): " + "; ".join(broken[:10])
    finally:
        t.close()
    operations = sum(n for op, n in totals.items() if op != "claim_empty")
    report(f"stress: {ROUNDS} rounds of {ROUND_S:g} s, 2 processes + 7 threads, {operations} operations "
           f"({dict(sorted(totals.items()))}; pruned {dict(sorted(pruned.items()))}, {len(deleting)} runs seen "
           "being deleted); 0 deadlocks, 0 errors, invariants held after every round")
    assert totals["finish"] > 100 and totals["cancelled"] > 5 and totals["retried"] > 5 and totals["reclaim"] > 5
    assert pruned["runs"] > 5 and deleting, f"the pruner pruned too little to test anything: {dict(pruned)}"


def _collect(results: list[dict[str, Any]], actor: Any, args: tuple[Any, ...]) -> None:
    results.append(actor(*args))


@contextlib.contextmanager
def holding_run_row(pg_url: str, run_id: int) -> Iterator[tuple[Connection, int]]:
    """A transaction of its own holding the run row ``FOR UPDATE`` (as a finish does), and its backend's pid.

    Its engine has no idle-in-transaction timeout, so the server does not end it while the test waits.
    """
    engine = create_engine(pg_url, poolclass=NullPool)
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(text("SELECT id FROM runs WHERE id = :r FOR UPDATE"), {"r": run_id})
            yield conn, int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
    finally:
        engine.dispose()


def waiting_for_run_row(t: service.Tenure, holder_pid: int, timeout_s: float = 10.0) -> Any:
    """Wait until PostgreSQL says a backend waits on a lock that ``holder_pid`` holds, in a statement
    locking rows of ``runs``, holding the tuple lock on a ``runs`` row meanwhile; that backend's row."""
    def blocked() -> Any:
        with t.engine.connect() as conn:  # a new transaction per look: pg_stat_activity is snapshotted in one
            return conn.execute(text(
                "SELECT a.pid, a.wait_event_type, a.wait_event, a.query FROM pg_stat_activity a "
                "WHERE a.datname = current_database() AND a.wait_event_type = 'Lock' "
                "AND :holder = ANY(pg_blocking_pids(a.pid)) AND a.query ILIKE '%FROM runs%FOR UPDATE%' "
                "AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'tuple' "
                "AND l.relation = 'runs'::regclass)"), {"holder": holder_pid}).first()

    return wait_for(blocked, timeout_s, f"a statement to wait on the run row that backend {holder_pid} holds")


def test_a_cancel_waiting_on_a_finishing_run_sees_it_completed(pg_url: str) -> None:
    """Defect 2: cancel read the run unlocked, and overwrote a completion that landed meanwhile.

    The finish commits only once PostgreSQL shows the cancel waiting on the run row it holds.
    """
    t = service.open(pg_url)
    leases = Leases(t.engine)
    me = leases.register("race", 1, None, None)
    run_id = t.submit_run(1, "echo", on_complete="echo")
    (lease,) = leases.claim(me, 1)
    outcome: dict[str, Any] = {}
    canceller = threading.Thread(target=lambda: outcome.update(result=_try_cancel(t, run_id)), daemon=True)
    try:
        with holding_run_row(pg_url, run_id) as (conn, holder_pid):
            # An in-flight finish of the run's last task: it holds the run row, as finish does.
            canceller.start()
            waiting_for_run_row(t, holder_pid)
            conn.execute(text("UPDATE tasks SET status = 'succeeded', supervisor_id = NULL WHERE id = :t"),
                         {"t": lease.task_id})
            conn.execute(text("UPDATE runs SET status = 'completed' WHERE id = :r"), {"r": run_id})
        canceller.join(10)  # a deadline: the lock is free now
        assert not canceller.is_alive(), "the cancel still waits after the finish committed"
        assert outcome["result"] == f"conflict: run {run_id} is completed; only a running run can be cancelled"
        assert t.run(run_id).status == "completed"
    finally:
        if canceller.ident is not None:
            canceller.join(10)  # whatever failed, its transaction ends before its engine is closed
        t.close()


@pytest.mark.parametrize("verb", ["cancel_task", "cancel_run"])
def test_a_waiting_cancel_holds_no_task_row_before_its_run_row(pg_url: str, verb: str) -> None:
    """The lock order is the run row, then its tasks: a cancel waiting on the run holds none of its tasks.

    Were it the other way round, a cancel and a finish (which takes the run first) could deadlock.
    """
    t = service.open(pg_url)
    run_id = t.submit_run(1, "echo")
    (task_id,) = [task.id for task in t.run_with_tasks(run_id)[1]]
    cancel = (lambda: t.cancel_task(task_id)) if verb == "cancel_task" else (lambda: t.cancel_run(run_id))
    done: dict[str, Any] = {}
    canceller = threading.Thread(target=lambda: done.update(result=cancel()), daemon=True)
    probe = create_engine(pg_url, poolclass=NullPool)
    try:
        with holding_run_row(pg_url, run_id) as (_conn, holder_pid):
            canceller.start()
            waiting_for_run_row(t, holder_pid)
            with probe.connect() as third:
                tx = third.begin()
                try:
                    third.execute(text("SELECT id FROM tasks WHERE id = :t FOR UPDATE NOWAIT"), {"t": task_id})
                except OperationalError as exc:
                    pytest.fail(f"{verb} holds its task's row while it waits for the run's: {exc.orig}")
                finally:
                    tx.rollback()
            assert canceller.is_alive() and not done, f"{verb} went on while the run row was held"
        canceller.join(10)  # a deadline: the run row is free now
        assert not canceller.is_alive(), f"{verb} still waits after the run row was let go"
        assert done["result"] in (True, 1)
        assert t.task(task_id).status == "cancelled"
    finally:
        if canceller.ident is not None:
            canceller.join(10)  # whatever failed, its transaction ends before its engine is closed
        probe.dispose()
        t.close()


def _try_cancel(t: service.Tenure, run_id: int) -> str:
    try:
        return f"cancelled {t.cancel_run(run_id)}"
    except Conflict as exc:
        return f"conflict: {exc}"


def test_a_run_status_is_one_snapshot(pg_url: str) -> None:
    """Defect 6: between the status read's statements a finish commits; the read must not mix them."""
    from sqlalchemy import event

    t = service.open(pg_url)
    leases = Leases(t.engine)
    me = leases.register("snap", 1, None, None)
    run_id = t.submit_run(2, "echo")
    first, second = leases.claim(me, 2)
    leases.finish(first, me, outcome=Outcome.SUCCEEDED, result=1)
    seen: list[str] = []

    def finish_in_between(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)
        if len(seen) == 2:  # after the run row was read, before the tasks are counted
            other = service.open(pg_url)
            try:
                assert Leases(other.engine).finish(second, me, outcome=Outcome.SUCCEEDED, result=2)
            finally:
                other.close()

    event.listen(t.engine, "before_cursor_execute", finish_in_between)
    try:
        status = t.run_status(run_id)
    finally:
        event.remove(t.engine, "before_cursor_execute", finish_in_between)
    # The run row said "running"; one snapshot means the counts say so too.
    assert status.run.status == "running"
    assert status.run.counts["succeeded"] == 1 and status.run.counts["running"] == 1, status.run.counts
    assert t.run(run_id).status == "completed"  # and the finish did land
    t.close()
