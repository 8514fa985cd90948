"""SQLite's durability level: ``PRAGMA synchronous`` NORMAL unless FULL is asked for, on every connection.

NORMAL (1) in WAL mode survives any process crash but not a power loss; FULL (2) syncs each commit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import service
from service.errors import InvalidInput
from service.faces.cli import main

PRAGMA_NORMAL, PRAGMA_FULL = 1, 2  # what `PRAGMA synchronous` reads back


@pytest.mark.parametrize(
    ("env", "asked", "expected"),
    [
        (None, None, PRAGMA_NORMAL),  # the default
        ("full", None, PRAGMA_FULL),  # TENURE_SQLITE_SYNC, as `tenure worker` and `tenure serve` read it
        (" FULL ", None, PRAGMA_FULL),
        ("normal", None, PRAGMA_NORMAL),
        (None, "full", PRAGMA_FULL),  # service.open(..., sqlite_sync=...)
        ("full", "normal", PRAGMA_NORMAL),  # the argument wins over the environment
    ],
)
def test_the_level_asked_for_is_in_effect_on_every_connection(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch, env: str | None, asked: str | None, expected: int) -> None:
    if env is None:
        monkeypatch.delenv("TENURE_SQLITE_SYNC", raising=False)
    else:
        monkeypatch.setenv("TENURE_SQLITE_SYNC", env)
    t = service.open(sqlite_url, sqlite_sync=asked)
    try:
        t.submit_task("echo", {})  # a write transaction went through the pool first
        with t.engine.connect() as first, t.engine.connect() as second:  # two connections at once: both set
            for conn in (first, second):
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == expected
    finally:
        t.close()


def test_a_bad_level_passed_to_open_is_one_clear_sentence(sqlite_url: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        service.open(sqlite_url, sqlite_sync="fast")
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("sqlite_sync='fast' is not a SQLite sync level; use normal")
    assert "or full" in message


def test_a_bad_level_in_the_environment_stops_the_cli_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENURE_SQLITE_SYNC", "off")
    db = tmp_path / "t.db"
    code = main(["migrate", "--db", str(db)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("tenure: error: environment variable TENURE_SQLITE_SYNC='off' is not a SQLite sync level")
    assert not db.exists(), "nothing was created"
