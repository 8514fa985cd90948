"""The database turns read-only under a running service (``PRAGMA query_only`` on every connection).

Clear errors on the API (503 JSON) and the page, no task reported succeeded whose write failed,
one log line per fault, and recovery by itself when the fault clears.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event
from starlette.testclient import TestClient

from tests.conftest import wait_for


@contextmanager
def read_only(engine: Engine) -> Iterator[None]:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA query_only = ON")

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # every connection from now on is read-only
    try:
        yield
    finally:
        event.remove(engine, "connect", on_connect)
        engine.dispose()


def test_a_read_only_database_is_ridden_out(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tenure")
    t = client.app.state.tenure  # type: ignore[attr-defined]
    run_id = client.post("/api/runs", json={"tasks": 10, "min_seconds": 0.3, "max_seconds": 0.6,
                                            "failure_rate": 0, "transient_rate": 0}).json()["id"]
    wait_for(lambda: t.run(run_id).counts["running"] == 10, 5, "all running")
    with read_only(t.engine):
        refused = client.post("/api/runs", json={"tasks": 1})
        assert refused.status_code == 503 and "read-only" in refused.json()["error"]
        page = client.post("/runs", data={"tasks": "1"}, headers={"Origin": "http://testserver"})
        assert page.status_code == 503 and "read-only" in page.text
        assert client.get(f"/api/runs/{run_id}").status_code == 200  # reads go on
        # Tasks end while nothing can be written: their outcomes wait, they are not faked.
        wait_for(lambda: "attempt.ends_deferred attempts=" in caplog.text, 5, "a held-back end")
        assert client.get(f"/api/runs/{run_id}").json()["counts"]["succeeded"] == 0
        health = client.get("/healthz")
        assert health.status_code == 200  # reading works, so the service is up
    run = t.wait_run(run_id, 10)
    assert run.counts["succeeded"] == 10
    assert t.store.count_runs() == 1
    assert caplog.text.count("supervisor.storage_unavailable") == 1, "logged as a flood"
    assert caplog.text.count("supervisor.storage_recovered") == 1
    for task in t.run_with_tasks(run_id)[1]:
        assert [a.outcome for a in t.attempts(task.id)] == ["succeeded"]
