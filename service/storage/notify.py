"""Telling idle supervisors about new work at once, without them hammering the database.

PostgreSQL: submitting or releasing work sends ``NOTIFY tenure_tasks`` in the same transaction
(delivered on commit); each supervisor LISTENs on a connection of its own and claims as soon as a
notification arrives, so it can poll slowly (every 2 s) the rest of the time. A new LISTEN checks
that it hears a probe sent from another connection, and says so once if it does not (a
transaction-pooling PgBouncer drops what LISTEN would receive): see :class:`Listener`.

SQLite has no notification channel, and one SQLite database lives on one machine. Each
supervisor binds a *doorbell*: a Unix datagram socket in Linux's abstract namespace, named after
the database file and the supervisor's id (no file is created, none is left behind by a crash).
The file is named by what it is, its device and inode, not by how its URL spells it: a relative
path, an absolute one and one through a symlink all ring the same bells.
A writer that made work due rings every live supervisor's doorbell right after its commit (it
reads who is live inside its own transaction): one
``sendto`` each, which never blocks and fails silently for a supervisor that is gone. A
supervisor's thread sleeps in ``recv`` and costs nothing while idle; it polls once a second
besides, for work that becomes due by the clock (retries after their backoff). Where abstract
sockets do not exist (not Linux) the supervisor polls every 0.2 s, as it did before.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, select, text

from service.errors import TenureError
from service.storage.errors import translated
from service.storage.models import SupervisorRow

if TYPE_CHECKING:
    import psycopg

CHANNEL = "tenure_tasks"
LISTEN_TIMEOUT_S = 1.0  # how often the listener checks whether it should stop
PROBE_WAIT_S = 1.0  # how long a new LISTEN waits for its own probe before it is judged deaf
PROBE_PREFIX = "probe:"  # a listener's probe carries this payload prefix; announcements of work carry ''
RING_FLAG = "tenure_ring"  # on a connection's info: ring the doorbells after this commit

log = logging.getLogger("tenure.wakeup")

_LIVE = select(SupervisorRow.id).where(SupervisorRow.stopped_at.is_(None))
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


def supported(engine: Engine | Connection) -> bool:
    """Whether LISTEN/NOTIFY carries the news (PostgreSQL)."""
    return engine.dialect.name == "postgresql"


def doorbells(engine: Engine) -> bool:
    """Whether supervisors of this database are woken by doorbells (a SQLite file, on Linux)."""
    return _bell_prefix(engine) is not None


def notify(conn: Connection) -> None:
    """Announce new due work; delivered when the caller's transaction commits."""
    if supported(conn):
        conn.execute(_NOTIFY, {"channel": CHANNEL, "payload": ""})
    elif doorbells(conn.engine):
        conn.info[RING_FLAG] = _live_supervisors(conn)  # read now, inside the caller's transaction


def after_commit(conn: Connection) -> None:
    """Ring the doorbells if the transaction that just committed announced work (SQLite).

    Sends only: the supervisors to ring were read inside that transaction, so that ringing
    starts no transaction (on this connection one would take the write lock).
    """
    supervisors = conn.info.pop(RING_FLAG, None)
    if supervisors:
        ring(conn.engine, supervisors)


def ring(engine: Engine, supervisors: Iterable[int]) -> None:
    """Ring these supervisors' doorbells: one ``sendto`` each, which never blocks and never raises.

    Does nothing where there are no doorbells (PostgreSQL, or not Linux). A supervisor rings its
    own as it stops, so that its doorbell thread sees the halt at once, not at its next poll.
    """
    prefix = _bell_prefix(engine)
    if prefix is None:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for supervisor_id in supervisors:
            with contextlib.suppress(OSError):  # gone, or its doorbell is full: it will claim anyway
                sock.sendto(b"!", prefix + str(supervisor_id).encode())


def rolled_back(conn: Connection) -> None:
    """Forget a ring the transaction asked for: its work never became visible."""
    conn.info.pop(RING_FLAG, None)


def _live_supervisors(conn: Connection) -> list[int]:
    # Read every time, never cached: a supervisor that registered since a cached read would miss
    # the ring and wait for its next poll (a second).
    return [int(i) for i in conn.execute(_LIVE).scalars()]


# Per engine rather than per URL text: the same relative URL names another file in another working
# directory (tests chdir between engines).
_PREFIXES: weakref.WeakKeyDictionary[Engine, bytes] = weakref.WeakKeyDictionary()


def _bell_prefix(engine: Engine) -> bytes | None:
    if engine.dialect.name != "sqlite" or not sys.platform.startswith("linux"):
        return None
    prefix = _PREFIXES.get(engine)  # every write asks: found once per engine, not a stat per ring
    if prefix is not None:
        return prefix
    database = engine.url.database
    if database in (None, "", ":memory:"):
        return None
    name, found = _file_identity(str(database))
    prefix = b"\0tenure-" + hashlib.sha1(name.encode()).hexdigest()[:20].encode() + b"-"
    if found:
        _PREFIXES[engine] = prefix
    return prefix


def _file_identity(database: str) -> tuple[str, bool]:
    """What names the database file whatever the spelling of its path, and whether it was found.

    Its device and inode (``os.stat`` follows symlinks; a relative path is the process's
    working directory's, as for SQLite). A file that cannot be stat'ed (not created yet) is
    named by its resolved real path, which every spelling of that path shares too, and is not
    remembered: once the file exists, its inode names it, as in every other process.
    """
    try:
        st = os.stat(database)
    except OSError:
        return "path:" + os.path.realpath(database), False
    return f"inode:{st.st_dev}:{st.st_ino}", True


class Doorbell:
    """A supervisor's doorbell (SQLite): calls ``on_work`` whenever a writer rings it."""

    def __init__(self, engine: Engine, supervisor_id: int, on_work: Callable[[], None],
                 halt: threading.Event) -> None:
        prefix = _bell_prefix(engine)
        assert prefix is not None
        self.on_work, self.halt = on_work, halt
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(prefix + str(supervisor_id).encode())  # bound before the first claim
        self.sock.settimeout(LISTEN_TIMEOUT_S)

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                try:
                    self.sock.recv(64)
                except TimeoutError:
                    continue
                self.sock.setblocking(False)  # one wake for every ring already waiting
                with contextlib.suppress(BlockingIOError):
                    while self.sock.recv(64):
                        pass
                self.sock.settimeout(LISTEN_TIMEOUT_S)
                self.on_work()
        finally:
            self.sock.close()


IDLE_POLL_LISTENING_S = 2.0  # with LISTEN/NOTIFY (PostgreSQL), an idle supervisor polls only this often
IDLE_POLL_DOORBELL_S = 1.0  # with a doorbell (SQLite), for work that becomes due by the clock


def waker(engine: Engine, supervisor_id: int, on_work: Callable[[], None], halt: threading.Event,
          idle_poll_s: float) -> tuple[Callable[[], None], str, float] | None:
    """How this database wakes a supervisor: (the thread's body, its name, how often the supervisor
    should still poll when idle), or None where nothing can (it polls every ``idle_poll_s``)."""
    if supported(engine):
        poll_s = max(idle_poll_s, IDLE_POLL_LISTENING_S)
        return Listener(engine, on_work, halt, supervisor_id=supervisor_id, poll_s=poll_s).run, "listen", poll_s
    if doorbells(engine):
        return Doorbell(engine, supervisor_id, on_work, halt).run, "doorbell", max(idle_poll_s, IDLE_POLL_DOORBELL_S)
    return None


class Listener:
    """A thread that LISTENs and calls ``on_work`` for every announcement of work (PostgreSQL only).

    After each LISTEN it checks that it can hear: it sends a probe ``NOTIFY`` through the engine
    (another connection, as a submitter's would be) and waits up to ``PROBE_WAIT_S`` for it on its
    own. Behind a transaction-pooling PgBouncer it cannot: each statement gets whichever server
    connection is free, and the one that ran LISTEN stops being this client's once LISTEN returns,
    so its notifications are dropped. Then it logs ``wakeup.listen_deaf`` once and goes on (a probe
    that was only slow is logged as ``wakeup.listen_heard`` when it arrives); the supervisor finds
    new work by its idle poll. It never raises for that: a dead listener would stop its supervisor.

    ``heard`` is set once a probe came back, ``deaf`` once one did not in time.
    """

    def __init__(self, engine: Engine, on_work: Callable[[], None], halt: threading.Event, *,
                 supervisor_id: int | None = None, poll_s: float = 2.0) -> None:
        self.engine, self.on_work, self.halt = engine, on_work, halt
        self.supervisor_id, self.poll_s = supervisor_id, poll_s
        self.heard, self.deaf = threading.Event(), threading.Event()
        self._probe = ""  # the payload of this listener's latest probe

    def run(self) -> None:
        import psycopg

        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self.halt.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.on_work()  # anything submitted while we were not listening
                    if not self.heard.is_set():
                        self._check_hearing(conn)
                    while not self.halt.is_set():
                        for note in conn.notifies(timeout=LISTEN_TIMEOUT_S):
                            self._received(note.payload)
            except psycopg.Error as exc:
                log.warning("wakeup.listen_failed supervisor=%s error=%s (polling meanwhile; retrying in 5 s)",
                            self.supervisor_id, exc)
                self.halt.wait(5.0)

    def _check_hearing(self, conn: psycopg.Connection[Any]) -> None:
        self._probe = PROBE_PREFIX + secrets.token_hex(8)
        try:
            _send_probe(self.engine, self._probe)
        except TenureError as exc:  # the database is away: listening goes on, the next connection asks again
            log.warning("wakeup.probe_failed supervisor=%s error=%s (cannot tell whether notifications arrive)",
                        self.supervisor_id, exc)
            return
        deadline = time.monotonic() + PROBE_WAIT_S
        while not self.heard.is_set() and not self.halt.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for note in conn.notifies(timeout=left, stop_after=1):
                self._received(note.payload)
        if self.heard.is_set() or self.halt.is_set() or self.deaf.is_set():
            return
        self.deaf.set()
        log.warning("wakeup.listen_deaf supervisor=%s channel=%s: a NOTIFY sent on another connection did not "
                    "arrive within %g s (a transaction-pooling PgBouncer in front? point TENURE_DB at a "
                    "session-pooled port or the server itself): polling every %g s instead",
                    self.supervisor_id, CHANNEL, PROBE_WAIT_S, self.poll_s)

    def _received(self, payload: str) -> None:
        if not payload.startswith(PROBE_PREFIX):
            self.on_work()
        elif payload == self._probe and not self.heard.is_set():
            self.heard.set()
            if self.deaf.is_set():
                log.info("wakeup.listen_heard supervisor=%s: the probe arrived late; notifications do reach "
                         "this supervisor", self.supervisor_id)
        # Another listener's probe announces no work.


@translated
def _send_probe(engine: Engine, payload: str) -> None:
    """Send ``payload`` on the channel from a connection of the engine's pool, committed at once."""
    with engine.begin() as conn:
        conn.execute(_NOTIFY, {"channel": CHANNEL, "payload": payload})
