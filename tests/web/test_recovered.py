"""A crash's re-runs are not retries: the summary and the tiles count and badge them apart."""

from __future__ import annotations

import re

from sqlalchemy import text
from starlette.testclient import TestClient

from service.storage.db import db_now
from service.storage.leases import Leases
from service.storage.models import Outcome
from tests.web.test_pages import start


def test_a_crash_re_run_is_badged_and_counted_apart_from_a_retry(idle_client: TestClient) -> None:
    run_id = start(idle_client, tasks="4")
    engine = idle_client.app.state.tenure.engine  # type: ignore[attr-defined]
    leases = Leases(engine)
    crashed = leases.register("host-a", 1, None, None)
    assert len(leases.claim(crashed, 4)) == 4
    assert len(leases.reclaim_supervisor(crashed, "its supervisor stopped heartbeating")) == 4  # the crash
    survivor = leases.register("host-b", 2, None, None)
    again = leases.claim(survivor, 4)
    assert [lease.attempt for lease in again] == [2, 2, 2, 2]
    first, *rest = again
    assert leases.finish(first, survivor, outcome=Outcome.FAILED, error="OSError: disk busy", retry_in_s=60)
    for lease in rest:
        assert leases.finish(lease, survivor, outcome=Outcome.SUCCEEDED, result=1)
    with engine.begin() as conn:  # its backoff waited out
        conn.execute(text("UPDATE tasks SET next_attempt_at = :due WHERE id = :id"),
                     {"due": conn.execute(db_now(-1.0).select()).scalar(), "id": first.task_id})
    (retried,) = leases.claim(survivor, 4)
    assert leases.finish(retried, survivor, outcome=Outcome.SUCCEEDED, result=1)

    page = idle_client.get(f"/runs/{run_id}").text
    facts = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", page.split('class="facts"')[1].split("</ul>")[0]))
    assert "↻ 1 retry after a failure" in facts
    assert "⟲ 4 attempts re-run after a crash, none charged" in facts
    # Each tile badges what happened to it: all four were re-run after the crash, one was also retried.
    retry_badges = re.findall(r'<span class="att"[^>]*>↻(\d+)</span>', page)
    crash_badges = re.findall(r'<span class="rec"[^>]*>⟲(\d+)</span>', page)
    assert retry_badges == ["1"] and crash_badges == ["1", "1", "1", "1"]
    assert 'title="retried 1× after failing"' in page and 'title="re-run 1× after a crash, not charged"' in page
