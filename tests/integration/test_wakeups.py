"""Everything that makes work due again wakes an idle supervisor at once (a doorbell on SQLite, NOTIFY on
PostgreSQL), so it never waits for its idle poll. The supervisors here poll once a minute."""

from __future__ import annotations

import service
from tests import kinds_for_tests  # noqa: F401  (the kinds these tests run)
from tests.conftest import wait_for

IDLE = {"idle_poll_s": 60.0, "reclaim_every_s": 60.0}


def test_retrying_a_run_wakes_an_idle_supervisor_at_once(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    run_id = t.submit_run("t_doomed", [{}], max_attempts=1)
    supervise(**IDLE)
    assert t.wait_run(run_id, 5).counts["failed"] == 1
    assert t.retry_run(run_id) == 1
    wait_for(lambda: t.run_with_tasks(run_id)[1][0].attempts == 2, 5, "the retried task to be claimed")


def test_a_submitted_task_and_run_wake_an_idle_supervisor_at_once(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    supervise(**IDLE)
    assert t.wait_task(t.submit_task("echo", {"x": 1}), 5).status == "succeeded"
    assert t.wait_run(t.submit_run(3, "echo"), 5).counts["succeeded"] == 3
