"""Shared fixtures: databases built by the project's own Alembic migrations, fresh per test."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import service
from service import schema
from service.clock import FakeClock
from service.db import make_engine


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated to head by Alembic; tests get copies, not migrations each."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    schema.migrate(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture
def db_url(migrated_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "tenure.db"
    shutil.copyfile(migrated_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def open_tenure(db_url: str) -> Iterator[Callable[..., service.Tenure]]:
    """Factory: open the test's database (optionally with a clock); closes everything after."""
    opened: list[service.Tenure] = []

    def factory(**kwargs: object) -> service.Tenure:
        t = service.open(db_url, **kwargs)  # type: ignore[arg-type]
        opened.append(t)
        return t

    yield factory
    for t in opened:
        t.close()


def wait_for(predicate: Callable[[], object], timeout_s: float = 10.0, what: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy, failing the test at the deadline."""
    deadline = threading.Event()
    timer = threading.Timer(timeout_s, deadline.set)
    timer.start()
    try:
        while True:
            value = predicate()
            if value:
                return value
            if deadline.wait(0.01):
                value = predicate()
                if value:
                    return value
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
    finally:
        timer.cancel()


REPORT: list[str] = []  # figures the suite produces (seeds, counts), printed at the end of every run


def report(line: str) -> None:
    REPORT.append(line)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("tenure reliability figures")
        for line in REPORT:
            terminalreporter.write_line(line)
