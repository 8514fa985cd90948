"""Actors that hammer the storage verbs at once, for the concurrency test (tests/acceptance).

A *supervisor actor* claims, heartbeats, finishes (succeeds, fails for a retry, fails for good,
crashes), loses and releases attempts, and now and then judges another supervisor dead and
reclaims its leases, all through the real verbs. A *person actor* cancels and retries runs. A
*pruner* makes an ended run look 40 days old now and then and prunes what ended 30 days ago, in
small batches, while the others work on the same runs. Each records every error it did not
expect; the test wants none. Runnable in a process of its
own: ``python -m tests.stress URL SEED SECONDS SUPERVISOR_IDS`` prints its tallies as JSON.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from typing import Any

from sqlalchemy import bindparam, text

import service
from service.errors import Conflict, NotFound, StorageError, TenureError
from service.storage import Store
from service.storage.db import make_engine
from service.storage.leases import Lease, Leases
from service.storage.models import Outcome


def supervisor_actor(url: str, seed: int, seconds: float, me: int, others: list[int]) -> dict[str, Any]:
    rng = random.Random(seed)
    engine = make_engine(url)
    leases = Leases(engine)
    held: dict[tuple[int, int], Lease] = {}
    tally: Counter[str] = Counter()
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                move = rng.random()
                if move < 0.3 or not held:
                    got = leases.claim(me, rng.randint(1, 4))
                    for lease in got:
                        held[lease.key] = lease
                    tally["claim" if got else "claim_empty"] += 1
                    if not got and not held:
                        time.sleep(0.002)  # nothing due: a supervisor would wait; so does its stand-in
                        if not leases.heartbeat(me, []).alive:  # an idle one still beats, and so learns it
                            leases.register_again(me, f"stress-{me}", 1000 + me, None, None)  # was judged dead
                            tally["revived"] += 1
                elif move < 0.45:
                    updates = [(t, a, rng.random(), {"r": rng.randint(0, 9)}) for (t, a) in list(held)[:5]]
                    beat = leases.heartbeat(me, updates)
                    for key in set(held) - beat.held:
                        del held[key]
                    if not beat.alive:  # judged dead by another actor: alive again, as a supervisor would be
                        leases.register_again(me, f"stress-{me}", 1000 + me, None, None)
                        tally["revived"] += 1
                    tally["heartbeat"] += 1
                elif move < 0.9:
                    key = rng.choice(list(held))
                    lease = held.pop(key)
                    how = rng.random()
                    if how < 0.5:
                        leases.finish(lease, me, outcome=Outcome.SUCCEEDED, result={"by": me})
                    elif how < 0.7:
                        leases.finish(lease, me, outcome=Outcome.FAILED, error="transient", retry_in_s=0)
                    elif how < 0.8:
                        leases.finish(lease, me, outcome=Outcome.CRASHED, error="crashed: signal 11",
                                      retry_in_s=0 if rng.random() < 0.5 else None)
                    elif how < 0.9:
                        isolate = rng.random() < 0.5
                        leases.finish(lease, me, outcome=Outcome.LOST, error="its process died", isolate=isolate,
                                      counted=isolate)
                    else:
                        leases.finish(lease, me, outcome=Outcome.RELEASED, progress=0.5)
                    tally["finish"] += 1
                elif others:
                    leases.reclaim_supervisor(rng.choice(others), "judged dead by the stress test")
                    tally["reclaim"] += 1
            except TenureError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        engine.dispose()
    return {"tally": dict(tally), "errors": errors}


def person_actor(url: str, seed: int, seconds: float, runs: list[int]) -> dict[str, Any]:
    rng = random.Random(seed)
    engine = make_engine(url)
    store = Store(engine)
    tally: Counter[str] = Counter()
    retried: Counter[int] = Counter()
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            run = rng.choice(runs)
            try:
                roll = rng.random()
                if roll < 0.25:
                    store.cancel_run(run)
                    tally["cancelled"] += 1
                elif roll < 0.45:  # one task of it: cancelling a run's last open task completes the run
                    with engine.connect() as conn:
                        ids = [int(i) for i in conn.execute(TASKS_OF, {"r": run}).scalars()]
                    if ids:
                        store.cancel_task(rng.choice(ids))
                        tally["task_cancelled"] += 1
                else:
                    store.retry_run(run)
                    tally["retried"] += 1
                    retried[run] += 1
            except (Conflict, NotFound):
                tally["refused"] += 1  # the run was not in a state for it: expected, and exact
            except StorageError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(rng.uniform(0, 0.01))  # pacing of a person's clicks, not a synchronization
    finally:
        engine.dispose()
    return {"tally": dict(tally), "errors": errors, "retried": dict(retried)}


TASKS_OF = text("SELECT id FROM tasks WHERE run_id = :r")
DAY_S = 86_400.0
AGE = text("UPDATE runs SET finished_at = finished_at - interval '40 days' "
           "WHERE id = :r AND status IN ('completed', 'cancelled')")
# Hooks too: prune must still keep a hook its run names, and never delete one that has not ended.
AGE_SINGLE = text("UPDATE tasks SET finished_at = finished_at - interval '40 days' WHERE run_id IS NULL "
                  "AND status IN ('succeeded', 'failed', 'cancelled')")
LAST_ENDED = text("SELECT id FROM runs WHERE status = 'completed' ORDER BY finished_at DESC LIMIT 1")
HOOK_OPEN_WHILE_DELETING = text(
    "SELECT r.id, t.id, t.status FROM runs r JOIN tasks t ON t.id = r.hook_task_id "
    "WHERE r.status = 'deleting' AND t.status IN ('queued', 'running', 'retrying')")
EXISTING = text("SELECT id FROM runs WHERE id IN :ids").bindparams(bindparam("ids", expanding=True))


def pruner_actor(url: str, seed: int, seconds: float, runs: list[int], tasks: int) -> dict[str, Any]:
    """Age one run (if it has ended) and prune, again and again; each run pruned is replaced in ``runs``
    by a new one of ``tasks`` tasks.

    ``runs`` is the list the person actors pick from (threads of one process share it), so they
    go on cancelling and retrying runs that exist. Returns its tallies, its errors, what it
    ``pruned`` (runs, tasks, batches) and ``deleting``: every run it saw being deleted between
    two batches (none may ever come back).
    """
    rng = random.Random(seed)
    t = service.open(url, migrate=False)
    tally: Counter[str] = Counter()
    pruned: Counter[str] = Counter()
    errors: list[str] = []
    deleting: set[int] = set()

    def between_batches(_report: Any) -> None:
        with t.engine.connect() as conn:
            now_deleting = list(conn.execute(text("SELECT id FROM runs WHERE status = 'deleting'")).scalars())
            for run_id, hook, status in conn.execute(HOOK_OPEN_WHILE_DELETING).all():
                errors.append(f"run {run_id} is being deleted while its completion hook {hook} is {status}")
        deleting.update(now_deleting)
        for run_id in now_deleting:  # a person clicking Retry or Cancel at the worst moment
            for verb in (t.retry_run, t.cancel_run):
                try:
                    verb(run_id)
                    errors.append(f"{verb.__name__} accepted run {run_id}, which was being deleted")
                except (Conflict, NotFound):
                    tally["refused"] += 1

    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                with t.engine.begin() as conn:
                    # Half the time the run that ended last: its completion hook may well not have ended.
                    last = conn.execute(LAST_ENDED).scalar() if rng.random() < 0.5 else None
                    tally["aged"] += conn.execute(AGE, {"r": last or rng.choice(runs)}).rowcount
                with t.engine.begin() as conn:
                    conn.execute(AGE_SINGLE)
                report = t.prune(30 * DAY_S, batch=5, progress=between_batches)
                tally["prune"] += 1
                pruned.update(runs=report.runs, tasks=report.tasks, batches=report.batches)
                with t.engine.connect() as conn:
                    existing = set(conn.execute(EXISTING, {"ids": list(runs)}).scalars())
                for slot, run_id in enumerate(list(runs)):
                    if run_id not in existing:
                        runs[slot] = t.submit_run(tasks, "echo", on_complete="echo")
            except TenureError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(rng.uniform(0, 0.05))  # pacing, as the person's clicks: not a synchronization
    finally:
        t.close()
    return {"tally": dict(tally), "errors": errors, "pruned": dict(pruned), "deleting": sorted(deleting)}


if __name__ == "__main__":
    url, seed, seconds, ids = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    me, *others = (int(i) for i in ids.split(","))
    print(json.dumps(supervisor_actor(url, seed, seconds, me, others)))
