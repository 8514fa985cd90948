"""SQLite's doorbells: an idle supervisor claims new work when a writer rings, not when it next polls.

Each supervisor here polls only every 60 s, so a task that starts within the test's deadline was
claimed because the submit rang the supervisor's doorbell.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

import service
from service.storage import notify
from service.storage.leases import Leases
from tests.acceptance.procs import REPO
from tests.conftest import wait_for

SLOW_POLL = {"heartbeat_s": 0.05, "lease_ttl_s": 5.0, "idle_poll_s": 60.0}


@pytest.fixture
def t(sqlite_url: str):  # type: ignore[no-untyped-def]
    tenure = service.open(sqlite_url)
    yield tenure
    tenure.close()


def test_a_submit_from_another_process_wakes_an_idle_supervisor(t: service.Tenure, sqlite_url: str) -> None:
    assert notify.doorbells(t.engine)
    sup = t.start_supervisor(**SLOW_POLL)
    try:
        wait_for(lambda: sup.loop_turns > 0, 5, "the supervisor to go idle")
        code = (f"import service; t = service.open({sqlite_url!r}, migrate=False); "
                "print(t.submit_task('echo', {'from': 'elsewhere'}))")
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
        task_id = int(out.stdout.strip())
        wait_for(lambda: t.task(task_id).status == "succeeded", 10, "the rung supervisor to run the task")
    finally:
        assert sup.stop(grace_s=0.0, timeout_s=5)


def test_every_live_supervisor_is_rung_once_the_work_is_committed(t: service.Tenure) -> None:
    leases = Leases(t.engine)
    halt = threading.Event()
    rung: dict[int, threading.Event] = {}
    bells = []
    for pid in (101, 102):
        supervisor_id = leases.register("doorbell-test", pid, None, None)
        rung[supervisor_id] = threading.Event()
        bells.append(notify.Doorbell(t.engine, supervisor_id, rung[supervisor_id].set, halt))
    threads = [threading.Thread(target=bell.run, daemon=True) for bell in bells]
    for thread in threads:
        thread.start()
    try:
        t.submit_task("echo", {})
        assert all(event.wait(5) for event in rung.values()), "each live supervisor was rung"
    finally:
        halt.set()
        for thread in threads:
            thread.join(5)


def test_a_supervisor_that_registered_after_a_writer_last_looked_is_rung_too(t: service.Tenure) -> None:
    before = t.submit_task("echo", {})  # this writer reads who is live: nobody yet
    sup = t.start_supervisor(**SLOW_POLL)
    try:
        wait_for(lambda: t.task(before).status == "succeeded", 10, "the first claim")
        wait_for(lambda: sup.inflight == 0, 5, "the supervisor to go idle")
        after = t.submit_task("echo", {})  # at once: a list cached from the first submit would miss it
        wait_for(lambda: t.task(after).status == "succeeded", 10, "the new supervisor to be rung")
    finally:
        assert sup.stop(grace_s=0.0, timeout_s=5)


def test_a_stopping_supervisor_ends_its_doorbell_at_once(t: service.Tenure, monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle stop is over when the supervisor says so: its doorbell thread does not sleep on in
    ``recv`` until its poll timeout (60 s here), past the 2 s the stop waits for each thread."""
    monkeypatch.setattr(notify, "LISTEN_TIMEOUT_S", 60.0)
    others = set(threading.enumerate())
    sup = t.start_supervisor(**SLOW_POLL, shutdown_grace_s=30.0)
    bells = [th for th in threading.enumerate() if th.name == "tenure-doorbell" and th not in others]
    assert len(bells) == 1
    wait_for(lambda: sup.loop_turns > 0, 5, "the supervisor to go idle")
    assert sup.stop(timeout_s=10)  # the default grace, 30 s: nothing runs, so nothing to wait for
    assert not bells[0].is_alive(), "the doorbell thread outlived its supervisor's stop"
