"""SQLite's doorbells: an idle supervisor claims new work when a writer rings, not when it next polls.

Each supervisor here polls only every 60 s, so a task that starts within the test's deadline was
claimed because the submit rang the supervisor's doorbell.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import service
from service.storage import notify
from service.storage.db import make_engine, normalize_url
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


def test_every_spelling_of_the_database_file_names_the_same_doorbell(
        sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bell is named after the file, so a relative URL, the absolute path `--db tenure.db` becomes,
    a symlinked directory and a symlink to the file itself all reach the same supervisors."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "alias").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "link.db").symlink_to(tmp_path / "tenure.db")
    (tmp_path / "other.db").write_bytes((tmp_path / "tenure.db").read_bytes())

    def name(url: str) -> bytes | None:
        engine = make_engine(url)
        try:
            return notify._bell_prefix(engine)
        finally:
            engine.dispose()

    spellings = [sqlite_url, "sqlite:///tenure.db", "sqlite:///./alias/./tenure.db", normalize_url("tenure.db"),
                 f"sqlite:///{tmp_path}/alias/tenure.db", "sqlite:///link.db"]
    names = [name(url) for url in spellings]
    assert None not in names
    assert len(set(names)) == 1, dict(zip(spellings, names, strict=True))
    assert name("sqlite:///other.db") != names[0], "another file (a copy) rings other bells"

    # A file not created yet is named by its real path, which its spellings share too.
    assert name("sqlite:///later.db") == name(f"sqlite:///{tmp_path}/alias/later.db") is not None


def test_a_ring_costs_no_stat_once_the_file_was_found(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every write that makes work due asks for the bell's name: the file is looked up once per engine."""
    engine = make_engine(sqlite_url)
    try:
        first = notify._bell_prefix(engine)

        def no_stat(*args: object, **kwargs: object) -> os.stat_result:
            raise AssertionError("the bell's name was looked up again")

        monkeypatch.setattr(notify.os, "stat", no_stat)
        assert notify._bell_prefix(engine) == first is not None
    finally:
        engine.dispose()


@pytest.mark.parametrize("spelling", ["relative", "symlinked directory"])
def test_a_submit_rings_a_supervisor_that_spelled_the_file_differently(
        spelling: str, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The supervisor polls only every 30 s, so a pickup within 5 s means the submit rang its doorbell
    although the two opened the file by different URLs (`--db sqlite:///tenure.db` and `--db tenure.db`)."""
    monkeypatch.chdir(tmp_path)
    if spelling == "relative":
        sup_url, submit_url = "sqlite:///tenure.db", sqlite_url
    else:
        (tmp_path / "alias").symlink_to(tmp_path, target_is_directory=True)
        sup_url, submit_url = sqlite_url, f"sqlite:///{tmp_path}/alias/tenure.db"
    runner, submitter = service.open(sup_url, migrate=False), service.open(submit_url, migrate=False)
    sup = runner.start_supervisor(heartbeat_s=0.05, lease_ttl_s=5.0, idle_poll_s=30.0, reclaim_every_s=30.0)
    try:
        wait_for(lambda: sup.loop_turns > 0, 5, "the supervisor to go idle")
        task_id = submitter.submit_task("echo", {"spelled": spelling})
        wait_for(lambda: submitter.task(task_id).status == "succeeded", 5, "the rung supervisor to run the task")
    finally:
        assert sup.stop(grace_s=0.0, timeout_s=5)
        runner.close()
        submitter.close()
