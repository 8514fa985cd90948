"""Shared fixtures: databases built by the project's own Alembic migrations, fresh per test."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

import service
from service.clock import FakeClock
from service.storage import schema
from service.storage.db import make_engine


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


PG_ADMIN = os.environ.get("TENURE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
PG_TEMPLATE = f"tenure_tpl_{os.getpid()}"


def _pg_admin() -> Engine | None:
    try:
        engine = make_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return engine
    except Exception as exc:
        if os.environ.get("TENURE_REQUIRE_POSTGRES") == "1":
            raise RuntimeError(f"TENURE_REQUIRE_POSTGRES=1 but PostgreSQL at {PG_ADMIN} does not answer") from exc
        return None


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    """An AUTOCOMMIT engine on the server's postgres database, and a migrated template database."""
    engine = _pg_admin()
    if engine is None:
        pytest.skip(f"no PostgreSQL answers at {PG_ADMIN}; .ci/run makes these tests mandatory")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{PG_TEMPLATE}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{PG_TEMPLATE}"')
    tpl = make_engine(_pg_url(PG_TEMPLATE))
    schema.migrate(tpl)
    tpl.dispose()
    yield engine
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{PG_TEMPLATE}" WITH (FORCE)')
    engine.dispose()


def _pg_url(name: str) -> str:
    return make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def pg_url(pg_admin: Engine) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, copied from the migrated template; dropped after."""
    name = f"tenure_t_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{PG_TEMPLATE}"')
    yield _pg_url(name)
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(migrated_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "tenure.db"
    shutil.copyfile(migrated_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The engine suite runs on both backends: a migrated SQLite file, a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


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


def descendants(root: int) -> dict[int, tuple[int, str]]:
    """{pid: (parent pid, command line)} of every live (not zombie) process below ``root``."""
    children: dict[int, list[int]] = {}
    info: dict[int, tuple[str, int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        info[int(entry)] = (fields[0], int(fields[1]), command)
    found, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        state, parent, command = info.get(pid, ("Z", 0, ""))
        if state != "Z":
            found[pid] = (parent, command)
        todo.extend(children.get(pid, []))
    return found


def _started_by_the_test(before: set[int]) -> dict[int, str]:
    """Processes below this one that are new, and not started by one that was already running
    (a session-wide browser forks helpers whenever it likes)."""
    now = descendants(os.getpid())
    mine = {}
    for pid, (parent, command) in now.items():
        if pid in before:
            continue
        ancestor, inherited = parent, False
        while ancestor in now:
            if ancestor in before:
                inherited = True
                break
            ancestor = now[ancestor][0]
        if not inherited:
            mine[pid] = command
    return mine


@pytest.fixture(autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """A test that leaves a process of its own running (a worker, a server, a task process) fails.

    Leftovers are killed first, so one leak cannot slow down every test after it.
    """
    before = set(descendants(os.getpid()))
    yield
    if not _started_by_the_test(before):
        return
    threading.Event().wait(0.5)  # processes told to stop may still be exiting: a short grace, then the verdict
    left = _started_by_the_test(before)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"the test left {len(left)} processes running: {sorted(left.items())[:5]}"


REPORT: list[str] = []  # figures the suite produces (seeds, counts), printed at the end of every run


def report(line: str) -> None:
    REPORT.append(line)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With pytest-xdist, the real-process tiers run one after another on one worker.

    They measure timings (heartbeat gaps, answer times, time to recover) and kill processes;
    another worker takes the fast tiers meanwhile. The two minute-long tests whose tasks mostly
    sleep (``long_and_idle``) run on a third, beside them: they use little CPU.
    """
    for item in items:
        parts = Path(str(item.fspath)).parts
        if item.get_closest_marker("long_and_idle"):
            item.add_marker(pytest.mark.xdist_group("long-and-idle"))
        elif "acceptance" in parts or "e2e" in parts or item.get_closest_marker("heavy"):
            item.add_marker(pytest.mark.xdist_group("real-processes"))
        elif item.module is not None and item.module.__name__.endswith("test_fuzz"):
            item.add_marker(pytest.mark.xdist_group("fuzz"))  # one module-wide client and tally
        elif item.module is not None and item.module.__name__.endswith("test_schemathesis"):
            item.add_marker(pytest.mark.xdist_group("schemathesis"))  # a long one: started early, beside the rest


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand the figures to the controller
        workeroutput["tenure_report"] = list(REPORT)


def pytest_testnodedown(node: Any, error: Any) -> None:
    REPORT.extend(getattr(node, "workeroutput", {}).get("tenure_report", []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("tenure reliability figures")
        for line in REPORT:
            terminalreporter.write_line(line)
