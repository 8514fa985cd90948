"""Text the database cannot store fails at most the attempt that carries it, never a batch, a heartbeat or a supervisor.

PostgreSQL refuses a NUL byte in text; neither backend's driver can encode a lone surrogate.
Text from task code is made storable where it enters the supervisor (a NUL is kept as ``␀``); a
result that is not valid Unicode fails its own attempt, with the reason; and whatever else the
database refuses is written one end at a time, the refused one without what was refused.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

import service
from service.text import NUL_SHOWN
from tests import kinds_for_tests  # noqa: F401  (the kinds these tests run)
from tests.conftest import wait_for


def test_a_nul_in_one_task_s_error_costs_its_neighbours_nothing(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    """400 quick tasks beside one that fails with a NUL in its error: on PostgreSQL the refused batch
    used to be retried forever as "the database is away", every slot held (370 done, 30 stuck)."""
    poisoned = t.submit_task("t_says", {"error": "badNULbyte"}, max_attempts=1)  # the task raises "bad\x00byte"
    run_id = t.submit_run(400, "echo")
    supervise()
    assert t.wait_run(run_id, 60).counts["succeeded"] == 400
    task = t.wait_task(poisoned, 10)
    assert task.status == "failed" and task.error == f"PermanentError: bad{NUL_SHOWN}byte"


def test_a_task_that_prints_nul_bytes_keeps_its_supervisor_s_heartbeats_going(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise) -> None:
    """Its output rides the heartbeats: refused, they would stop, and a watching supervisor would
    reclaim every healthy lease of this one (20 rounds of it used to fail healthy tasks)."""
    noisy = t.submit_task("t_says", {"print": "aNULb", "seconds": 1.5, "every_s": 0.02}, max_attempts=1)
    neighbours = [t.submit_task("t_long", {"steps": 30, "step_s": 0.05}, max_attempts=1) for _ in range(5)]
    supervise(heartbeat_s=0.1, lease_ttl_s=0.6)
    wait_for(lambda: t.task(noisy).status == "running", 5, "the noisy task to run")
    supervise(heartbeat_s=0.1, lease_ttl_s=0.6, reclaim_every_s=0.05, concurrency=1)  # watching, mostly
    assert t.wait_task(noisy, 10).status == "succeeded"
    for n in neighbours:
        done = t.wait_task(n, 10)
        assert (done.status, done.attempts, done.lost) == ("succeeded", 1, 0), t.attempts(n)
    (attempt,) = t.attempts(noisy)
    assert f"a{NUL_SHOWN}b" in (attempt.logs or "") and "\x00" not in (attempt.logs or "")


def test_a_result_that_is_not_valid_unicode_fails_its_own_attempt_with_the_reason(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise) -> None:
    bad = t.submit_task("t_says", {"value": "LONE"}, max_attempts=1)  # returns "\udc80"
    good = [t.submit_task("echo", {"i": i}) for i in range(20)]
    sup = supervise()
    task = t.wait_task(bad, 10)
    assert task.status == "failed" and "cannot be stored" in (task.error or ""), task.error
    assert all(t.wait_task(g, 10).status == "succeeded" for g in good)
    assert sup.fatal is None and not sup.stopped.is_set()


@pytest.fixture(params=["value", "constraint"])
def refusing(t: service.Tenure, request: pytest.FixtureRequest) -> Iterator[Engine]:
    """The database itself refuses to close an attempt whose error mentions "refuse-me" (a trigger),
    as it would any value it cannot take: not a lost connection, a refusal of these values.

    Two ways, one for each kind of refusal the supervisor writes around: ``value``, a value it
    cannot take (a DataError: StorageRefused), and ``constraint``, a constraint that says no (an
    IntegrityError: Conflict). SQLite's RAISE() is always a constraint error, so there the value
    refusal is a string too big to make (SQLITE_TOOBIG, which the driver raises as a DataError).
    """
    engine = t.engine
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            refuse = ("SELECT zeroblob(4611686018427387904)" if request.param == "value" else
                      "SELECT RAISE(ABORT, 'this value is refused')")
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_me BEFORE UPDATE ON task_attempts WHEN NEW.error LIKE '%refuse-me%' "
                f"BEGIN {refuse}; END")
        else:
            code = "22023" if request.param == "value" else "23514"  # invalid_parameter_value, check_violation
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse_me() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.error LIKE '%%refuse-me%%' THEN "
                f"RAISE EXCEPTION 'this value is refused' USING ERRCODE = '{code}'; END IF; RETURN NEW; END $$")
            conn.exec_driver_sql("CREATE TRIGGER refuse_me BEFORE UPDATE ON task_attempts FOR EACH ROW "
                                 "EXECUTE FUNCTION refuse_me()")
    yield engine


def test_a_value_the_database_refuses_fails_only_the_attempt_that_carries_it(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise, refusing: Engine) -> None:
    refused = t.submit_task("t_says", {"error": "please refuse-me"}, max_attempts=1)
    run_id = t.submit_run(50, "echo")
    sup = supervise()
    assert t.wait_run(run_id, 30).counts["succeeded"] == 50
    task = t.wait_task(refused, 10)
    assert task.status == "failed"
    assert task.error == "the database refused the values of this attempt's end (see the supervisor's log)"
    assert sup.fatal is None and not sup.stopped.is_set()


def test_a_lone_surrogate_in_a_task_s_error_is_kept_readable_and_fails_only_it(  # type: ignore[no-untyped-def]
        t: service.Tenure, supervise) -> None:
    """An exception whose text is not valid Unicode (what surrogateescape makes of undecodable bytes):
    no frame, driver or page could carry it as it is; its one attempt fails, with the text readable."""
    bad = t.submit_task("t_says", {"error": "badLONEbyte"}, max_attempts=1)  # raises "bad\udc80byte"
    neighbours = [t.submit_task("echo", {"i": i}) for i in range(10)]
    supervise()
    task = t.wait_task(bad, 10)
    assert (task.status, task.error) == ("failed", "PermanentError: bad\ufffdbyte")
    assert all(t.wait_task(n, 10).status == "succeeded" for n in neighbours)
