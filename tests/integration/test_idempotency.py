"""Racing submitters with one Idempotency-Key make one run (or task), and all of them get its id.

The database enforces it (README, "Idempotent submits"; invariant 13): the key's row is inserted
in the transaction that makes the run, so a racer either finds it, or fails to insert it and
looks again. On PostgreSQL every racer is made to look (and find nothing) before any of them
inserts, so three of the four must take the second path; SQLite's single writer makes each
racer find the winner's key on its first look.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

import service
from service.storage import submit

RACERS = 4
DEADLINE_S = 10.0


def race(call: Callable[[], int]) -> tuple[list[int], list[BaseException]]:
    """``call`` in RACERS threads released together; what each returned or raised."""
    start = threading.Barrier(RACERS, timeout=DEADLINE_S)
    made: list[int] = []
    failed: list[BaseException] = []

    def racer() -> None:
        start.wait()
        try:
            made.append(call())
        except BaseException as exc:  # noqa: BLE001 - the test reports whatever a racer met
            failed.append(exc)

    threads = [threading.Thread(target=racer) for _ in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_S * 2)
    assert not any(thread.is_alive() for thread in threads), "a racer never finished"
    return made, failed


@pytest.fixture
def all_look_first(db_url: str, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """On PostgreSQL: no racer inserts the key before every racer has looked for it once."""
    found: list[Any] = []
    if db_url.startswith("sqlite"):
        return found  # one writer at a time: racers queue on the database's lock instead
    real, met, local = submit._earlier, threading.Barrier(RACERS, timeout=DEADLINE_S), threading.local()

    def earlier(*args: Any) -> Any:
        value = real(*args)
        found.append(value)
        if not getattr(local, "looked", False):
            local.looked = True
            met.wait()
        return value

    monkeypatch.setattr(submit, "_earlier", earlier)
    return found


def test_racing_run_submitters_with_one_key_make_one_run(t: service.Tenure, db_url: str,
                                                         all_look_first: list[Any]) -> None:
    made, failed = race(lambda: t.submit_run("echo", [{"i": i} for i in range(3)], idempotency_key="import-1"))
    assert not failed, failed
    assert len(made) == RACERS and len(set(made)) == 1
    assert t.store.count_runs() == 1
    assert t.run(made[0]).total == 3
    if not db_url.startswith("sqlite"):  # four first looks found nothing, three second looks the winner's
        assert all_look_first.count(None) == RACERS and all_look_first.count(made[0]) == RACERS - 1


def test_racing_task_submitters_with_one_key_make_one_task(t: service.Tenure, db_url: str,
                                                           all_look_first: list[Any]) -> None:
    made, failed = race(lambda: t.submit_task("echo", {"x": 1}, idempotency_key="lone-1"))
    assert not failed, failed
    assert len(made) == RACERS and len(set(made)) == 1
    assert t.store.single_tasks(limit=10, offset=0)[1] == 1
