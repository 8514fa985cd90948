"""A SQLite writer waits for another's write lock: finely at first, then by SQLite's busy timeout.

:func:`service.storage.db.write_tx` polls ``BEGIN IMMEDIATE`` every 0.5 to 2 ms for
``FINE_WAIT_S``, then hands over to the connection's busy timeout. What must hold whatever the
timing: a writer held up for longer than the fine wait still gets through once the lock is free;
one held up past the busy timeout gets the clear "busy" error; the connection keeps its busy
timeout afterwards. (How much sooner it gets through is bench/peers.py's submit tail.)
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

import service
from service.errors import StorageError
from service.storage import db


def hold_lock(path: Path, release: threading.Event, held: threading.Event) -> threading.Thread:
    """Another writer: a raw connection that holds the write lock until ``release`` is set."""

    def run() -> None:
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        held.set()
        release.wait(30)
        raw.execute("COMMIT")
        raw.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert held.wait(10)
    return thread


def test_a_writer_held_up_past_the_fine_wait_still_writes_once_the_lock_is_free(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    t = service.open(f"sqlite:///{path}")
    try:
        release, held = threading.Event(), threading.Event()
        holder = hold_lock(path, release, held)
        # Freed by the first task's wait: past the fine polling, inside SQLite's busy timeout.
        timer = threading.Timer(db.FINE_WAIT_S + 0.2, release.set)
        timer.start()
        task_id = t.submit_task("echo", {"n": 1})
        assert release.is_set(), "the write went through while another writer held the lock"
        holder.join(10)
        assert t.task(task_id).status == "queued"
        with t.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == db.SQLITE_BUSY_TIMEOUT_MS
    finally:
        release.set()
        t.close()


def test_a_writer_held_up_past_the_busy_timeout_is_told_the_database_is_busy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.db"
    t = service.open(f"sqlite:///{path}")
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 300)  # what the fine wait hands over to
    release, held = threading.Event(), threading.Event()
    holder = hold_lock(path, release, held)
    try:
        with pytest.raises(StorageError, match="busy"):
            t.submit_task("echo", {"n": 2})
    finally:
        release.set()
        holder.join(10)
    try:
        assert count_tasks(t) == 0, "a refused submit left a row"
        t.submit_task("echo", {"n": 3})  # the lock is free again: writes go on
        assert count_tasks(t) == 1
    finally:
        t.close()


def count_tasks(t: service.Tenure) -> int:
    with t.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM tasks").scalar_one())
