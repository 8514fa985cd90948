"""Runs as big as the README advertises (100,000 tasks) can be cancelled and retried, on both backends."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from sqlalchemy import event, func, select

import service
from service.storage.leases import Leases
from service.storage.models import Outcome, TaskAttempt
from tests.conftest import report

BIG = 100_000  # the most tasks a run may have
SQLITE_DEFAULT_MAX_VARIABLES = 32_766  # SQLITE_MAX_VARIABLE_NUMBER of a default build (Debian's allows 250,000)


def like_a_default_sqlite(t: service.Tenure) -> None:
    """Give every new SQLite connection of ``t`` a default build's limit on bound parameters.

    A statement that binds one parameter per task then fails here as it would on most SQLite
    builds, not only on PostgreSQL (65,535 at most).
    """
    if t.engine.dialect.name != "sqlite":
        return

    def limit(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, SQLITE_DEFAULT_MAX_VARIABLES)

    event.listen(t.engine, "connect", limit)
    t.engine.dispose()  # connections opened before the listener go


def test_a_run_of_100000_tasks_can_be_cancelled_then_retried(t: service.Tenure) -> None:
    """Cancel and retry work by predicate, so no statement binds one parameter per task.

    About 5 s per backend on a quiet 2-core machine (8 to 18 s when it is busy), most of it
    submitting the 100,000 rows; cancel and retry each take 0.3 to 2.5 s of it. No supervisor:
    three claims stand in for attempts in progress.
    """
    like_a_default_sqlite(t)
    run = t.submit_run(BIG, "echo")
    leases = Leases(t.engine)
    me = leases.register("big", 1, None, None)
    running = leases.claim(me, 3)  # some attempts open, so the cancel has attempts to close too
    assert len(running) == 3

    began = time.monotonic()
    cancelled = t.cancel_run(run)
    cancel_s = time.monotonic() - began

    assert cancelled == BIG
    after = t.run(run)
    assert after.status == "cancelled" and after.finished_at is not None
    assert after.counts["cancelled"] == BIG and sum(after.counts.values()) == after.total == BIG
    with t.engine.connect() as conn:
        outcomes = dict(conn.execute(select(TaskAttempt.outcome, func.count()).group_by(TaskAttempt.outcome)).all())
    assert outcomes == {Outcome.CANCELLED.value: 3}
    assert not leases.finish(running[0], me, outcome=Outcome.SUCCEEDED, result=1)  # its lease went with the cancel

    began = time.monotonic()
    retried = t.retry_run(run)
    retry_s = time.monotonic() - began

    assert retried == BIG
    again = t.run(run)
    assert again.status == "running" and again.finished_at is None
    assert again.counts["queued"] == BIG and sum(again.counts.values()) == again.total == BIG
    assert len(leases.claim(me, 5)) == 5  # queued and due again
    report(f"{BIG:,}-task run on {t.engine.dialect.name}: cancel {cancel_s:.2f} s, retry {retry_s:.2f} s")
