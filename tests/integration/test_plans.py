"""Every hot statement uses its index as sent: the plans of the SQL the code emits, on both backends.

The statements are captured from the engine while the real verbs run against a database of
20,000 finished tasks plus a live run, then explained with the very parameters they were sent
with. A full scan of ``tasks``, or a temporary sort for the claim's order, fails the test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, text

import service
from service.storage.leases import Leases
from service.storage.models import Outcome, Task

FINISHED = 20_000
LONG_AGO = datetime(2026, 1, 1)


@contextmanager
def captured(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "INSERT", "DELETE", "WITH")):
            statements.append((statement, parameters[0] if executemany else parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def plan(engine: Engine, statement: str, parameters: Any) -> list[str]:
    """The plan's lines: SQLite's EXPLAIN QUERY PLAN, or PostgreSQL's plan nodes as text."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            return [str(row[-1]) for row in rows]
        raw = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).scalar()
        doc = raw if isinstance(raw, list) else json.loads(raw)
        lines: list[str] = []

        def walk(node: dict[str, Any]) -> None:
            lines.append(f"{node['Node Type']} {node.get('Relation Name', '')} {node.get('Index Name', '')}".strip())
            for child in node.get("Plans", []):
                walk(child)
        walk(doc[0]["Plan"])
        return lines


def problems(lines: list[str], dialect: str, verb: str) -> list[str]:
    """Full scans of the big tables; a sort for the claim's order (a GROUP BY over one run is fine)."""
    bad = []
    for line in lines:
        if dialect == "sqlite":
            small_index = any(f"INDEX {ix}" in line for ix in (
                "ix_tasks_running", "ix_tasks_due", "ix_tasks_ready", "ix_tasks_aged", "ix_task_attempts_open_queue",
                "ix_task_attempts_open_key"))
            if line.startswith(("SCAN tasks", "SCAN task_attempts")) and not small_index:
                bad.append(line)
            if "TEMP B-TREE FOR ORDER BY" in line and verb in ("claim", "anything_due"):
                bad.append(line)
        elif line.startswith(("Seq Scan tasks", "Seq Scan task_attempts")):
            bad.append(line)
        elif line.startswith("Sort") and verb in ("claim", "anything_due"):
            bad.append(line)
    return bad


@pytest.fixture
def busy(open_tenure) -> tuple[service.Tenure, Leases, int, int]:  # type: ignore[no-untyped-def]
    """20,000 finished tasks (one old run), and a live run with running, queued and retrying tasks."""
    t = open_tenure()
    old = t.submit_run(1, "echo")
    with t.engine.begin() as conn:
        conn.execute(insert(Task), [
            {"run_id": old, "position": i + 1, "kind": "echo", "args": {}, "status": "succeeded", "attempts": 1,
             "max_attempts": 3, "progress": 1.0, "created_at": LONG_AGO, "finished_at": LONG_AGO}
            for i in range(FINISHED)])
        conn.execute(text("UPDATE tasks SET status = 'succeeded' WHERE run_id = :r"), {"r": old})
        conn.execute(text("INSERT INTO task_attempts (task_id, attempt, started_at, finished_at, outcome, charged) "
                          "SELECT id, 1, created_at, finished_at, 'succeeded', false FROM tasks WHERE run_id = :r"),
                     {"r": old})
    leases = Leases(t.engine)
    me = leases.register("plans", 1, None, None)
    live = t.submit_run(60, "echo", on_complete="echo")
    # Flow control in force: a limited, rate-limited queue whose tasks carry keys with limits, and a paused one.
    t.set_queue("imports", concurrency=50, rate="1000/s")
    t.set_key("customer-1", concurrency=1, rate="100/s")
    for i in range(30):
        t.submit_task("echo", {"i": i}, queue="imports", key=f"customer-{i % 3}", key_limit=2, priority=i % 4)
    t.set_queue("paused")
    t.submit_run(5, "echo", queue="paused")
    t.pause_queue("paused")
    held = leases.claim(me, 20)
    leases.finish(held[0], me, outcome=Outcome.FAILED, error="transient", retry_in_s=600)
    with t.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    return t, leases, me, live


def hot_statements(t: service.Tenure, leases: Leases, me: int, live: int) -> dict[str, Callable[[], Any]]:
    return {
        "claim": lambda: leases.claim(me, 5, served=["default"]),
        "claim_limited": lambda: leases.claim(me, 5, served=["imports"]),
        "anything_due": leases.anything_due,
        "held": lambda: leases.held(me),
        "lease_holders": leases.lease_holders,
        "heartbeat": lambda: leases.heartbeat(me, [(task_id, attempt, 0.5, {"i": 1})
                                                   for task_id, attempt in sorted(leases.held(me))[:3]]),
        "requeue_stepped": lambda: leases.requeue_stepped(180),
        "run_status": lambda: t.run_status(live),
        "run_status_304": lambda: t.run_status(live, t.run_status(live).etag),
        # An idle supervisor's look ahead (the next delayed task or schedule slot), and its firing pass.
        "upcoming": t.store.upcoming,
        "fire_due": t.store.fire_due,
    }


HOT = ["claim", "claim_limited", "anything_due", "held", "lease_holders", "heartbeat", "requeue_stepped", "run_status",
       "run_status_304", "upcoming", "fire_due"]


def test_hot_statements_use_their_indexes_as_sent(busy) -> None:  # type: ignore[no-untyped-def]
    t, leases, me, live = busy
    dialect = t.engine.dialect.name
    failures = []
    for verb in HOT:
        call = hot_statements(t, leases, me, live)[verb]
        with captured(t.engine) as statements:
            call()
        assert statements, f"{verb} sent no statement"
        for statement, parameters in statements:
            lines = plan(t.engine, statement, parameters)
            if problems(lines, dialect, verb):
                failures.append(f"{verb}: {statement}\n{parameters}\n" + "\n".join(lines))
    assert not failures, "\n\n".join(failures)


    # And the claim walks the due indexes themselves, not merely no full scan: per queue, those due by
    # a time first, then those due at once by priority (see service.storage.due and claims).
    with t.engine.begin() as conn:  # the retry's backoff has passed
        conn.execute(text("UPDATE tasks SET next_attempt_at = created_at WHERE status = 'retrying'"))
    with captured(t.engine) as statements:
        leases.claim(me, 5, served=["default"])
    picks = [s for s in statements if s[0].lstrip().upper().startswith("SELECT TASKS.ID, TASKS.LIMIT_KEY")]
    by_time, at_once = picks[0], picks[-1]
    assert "next_attempt_at <=" in by_time[0] and "priority DESC" in at_once[0], picks
    assert any("ix_tasks_due" in line for line in plan(t.engine, *by_time)), plan(t.engine, *by_time)
    assert any("ix_tasks_ready" in line for line in plan(t.engine, *at_once)), plan(t.engine, *at_once)


