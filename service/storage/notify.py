"""Telling idle supervisors about new work at once, without them hammering the database.

PostgreSQL: submitting or releasing work sends ``NOTIFY tenure_tasks`` in the same transaction
(delivered on commit); each supervisor LISTENs on a connection of its own and claims as soon as a
notification arrives, so it can poll slowly (every 2 s) the rest of the time.
SQLite: there is no cross-process notification; an idle supervisor asks every 0.2 s, a cheap
index lookup on a local file.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import Connection, Engine, text

CHANNEL = "tenure_tasks"
LISTEN_TIMEOUT_S = 1.0  # how often the listener checks whether it should stop

log = logging.getLogger("tenure.wakeup")


def supported(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "postgresql"


def notify(conn: Connection) -> None:
    """Announce new due work; delivered when the caller's transaction commits. A no-op on SQLite."""
    if supported(conn):
        conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


class Listener:
    """A thread that LISTENs and calls ``on_work`` for every notification (PostgreSQL only)."""

    def __init__(self, engine: Engine, on_work: Callable[[], None], halt: threading.Event) -> None:
        self.engine, self.on_work, self.halt = engine, on_work, halt

    def run(self) -> None:
        import psycopg

        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self.halt.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.on_work()  # anything submitted while we were not listening
                    while not self.halt.is_set():
                        for _ in conn.notifies(timeout=LISTEN_TIMEOUT_S):
                            self.on_work()
            except psycopg.Error as exc:
                log.warning("wakeup.listen_failed error=%s (polling meanwhile; retrying in 5 s)", exc)
                self.halt.wait(5.0)
