"""LISTEN/NOTIFY (PostgreSQL): a listener that cannot hear says so once, and its supervisor polls on.

The deaf case is real: a PgBouncer in transaction pooling mode, started by the test in front of
the test's PostgreSQL server. Skipped with the reason where the ``pgbouncer`` binary is missing,
unless CI=true (``.ci/run`` installs it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

import service
from service.storage import notify
from service.storage.db import make_engine
from tests.conftest import PG_ADMIN, wait_for

PGBOUNCER = shutil.which("pgbouncer") or next((p for p in ("/usr/sbin/pgbouncer",) if os.access(p, os.X_OK)), None)
DEAF = "wakeup.listen_deaf"


@pytest.fixture
def pgbouncer(tmp_path: Path) -> Iterator[Callable[[str, str], str]]:
    """Start a PgBouncer in front of the test server: ``pgbouncer(database, pool_mode)`` gives its URL."""
    if PGBOUNCER is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but pgbouncer is not installed: .ci/run installs it (apt-get install -y pgbouncer)")
        pytest.skip("pgbouncer is not installed (apt-get install -y pgbouncer); CI installs it")
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(database: str, pool_mode: str) -> str:
        assert not started, "one PgBouncer per test"
        server = make_url(PG_ADMIN)
        user = server.username or "postgres"
        with socket.socket() as probe:  # a free port, for pgbouncer to take right after
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        # PgBouncer refuses to run as root; as `nobody` it must be able to read its files.
        home = Path(tempfile.mkdtemp(prefix="tenure-pgbouncer-"))
        home.chmod(0o755)
        (home / "users.txt").write_text(f'"{user}" ""\n')
        (home / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={server.host or '127.0.0.1'} port={server.port or 5432}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {home / 'users.txt'}\n"
            f"pool_mode = {pool_mode}\n"
            # tenure's engine sets idle_in_transaction_session_timeout as a startup option, which
            # PgBouncer refuses unless told to ignore it (as anyone running tenure behind one must).
            "ignore_startup_parameters = options\n"
        )
        for f in home.iterdir():
            f.chmod(0o644)
        log_path = tmp_path / "pgbouncer.log"
        as_nobody = ["-u", "nobody"] if os.geteuid() == 0 else []
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen([str(PGBOUNCER), *as_nobody, str(home / "pgbouncer.ini")], stdout=log_file,
                                    stderr=subprocess.STDOUT)
        started.append((proc, home))

        def answers() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"pgbouncer exited with {proc.returncode}: {log_path.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
            return False

        wait_for(answers, 10, "pgbouncer to listen")
        return server.set(host="127.0.0.1", port=port, database=database).render_as_string(hide_password=False)

    yield start
    for proc, home in started:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(home, ignore_errors=True)


class Listening:
    """A Listener on its own thread, counting the announcements it passes on."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self.calls = 0
        self.halt = threading.Event()
        self.listener = notify.Listener(self.engine, self._on_work, self.halt, supervisor_id=7)
        self.thread = threading.Thread(target=self.listener.run, daemon=True)
        self.thread.start()

    def _on_work(self) -> None:
        self.calls += 1

    def close(self) -> None:
        self.halt.set()
        self.thread.join(5)
        self.engine.dispose()
        assert not self.thread.is_alive(), "the listener outlived its halt"


def deaf_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(DEAF)]


@pytest.mark.parametrize("path", ["the server", "a session-pooling PgBouncer"])
def test_a_listener_that_hears_its_probe_warns_of_nothing(
        path: str, pg_url: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> None:
    """Straight to the server, and through the session-pooled PgBouncer the warning recommends."""
    caplog.set_level(logging.INFO, logger="tenure")
    url = pg_url
    if path != "the server":
        url = request.getfixturevalue("pgbouncer")(make_url(pg_url).database, "session")
    listening = Listening(url)
    try:
        assert listening.listener.heard.wait(10), "the probe came back on the listener's connection"
        assert not listening.listener.deaf.is_set()
        assert deaf_warnings(caplog) == []
        before = listening.calls  # the probe itself announced no work
        t = service.open(pg_url, migrate=False)
        try:
            t.submit_task("echo", {})
        finally:
            t.close()
        wait_for(lambda: listening.calls > before, 5, "the submit's NOTIFY to reach the listener")
    finally:
        listening.close()
    assert deaf_warnings(caplog) == []


def test_behind_a_transaction_pooling_pgbouncer_the_listener_says_it_is_deaf_once(
        pg_url: str, pgbouncer: Callable[[str, str], str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tenure")
    listening = Listening(pgbouncer(make_url(pg_url).database or "", "transaction"))
    try:
        wait_for(lambda: deaf_warnings(caplog), 10, "the wakeup.listen_deaf warning")
        assert listening.listener.deaf.is_set() and not listening.listener.heard.is_set()
        [warning] = deaf_warnings(caplog)
        assert warning.levelno == logging.WARNING
        message = warning.getMessage()
        assert "supervisor=7" in message
        assert "transaction-pooling PgBouncer" in message and "polling every 2 s instead" in message
        assert listening.thread.is_alive(), "a deaf listener goes on (a dead one would stop its supervisor)"
    finally:
        listening.close()
    assert len(deaf_warnings(caplog)) == 1


def test_a_supervisor_behind_a_transaction_pooling_pgbouncer_warns_and_runs_tasks_by_polling(
        pg_url: str, pgbouncer: Callable[[str, str], str], caplog: pytest.LogCaptureFixture) -> None:
    """Its listener hears nothing, and the supervisor finds the task by its 2 s idle poll."""
    caplog.set_level(logging.INFO, logger="tenure")
    # psycopg prepares a statement run five times on one connection; PgBouncer 1.18 (Debian 12)
    # cannot carry prepared statements across the server connections of a transaction pool, so
    # anyone running tenure behind it turns that off (1.21+ can, with max_prepared_statements).
    url = pgbouncer(make_url(pg_url).database or "", "transaction")
    engine = make_engine(url, connect_args={"prepare_threshold": None})
    t = service.Tenure(engine)
    sup = t.start_supervisor(heartbeat_s=0.2, lease_ttl_s=5.0)
    try:
        wait_for(lambda: deaf_warnings(caplog), 10, "the wakeup.listen_deaf warning")
        task_id = t.submit_task("echo", {"behind": "pgbouncer"})
        wait_for(lambda: t.task(task_id).status == "succeeded", 10, "the supervisor's poll to find the task")
        assert sup.fatal is None
    finally:
        assert sup.stop(grace_s=0.0, timeout_s=10)
        t.close()
    assert sup.fatal is None
    assert len(deaf_warnings(caplog)) == 1
