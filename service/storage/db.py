"""Engine factory and the one place where SQLite and PostgreSQL differ.

* SQLite: WAL (set when tenure migrates the file), a busy timeout, foreign keys on, ``PRAGMA
  synchronous`` NORMAL or FULL (:func:`sqlite_sync_level`); Python's
  own transaction handling is switched off so that write transactions begin ``IMMEDIATE``
  (they take the write lock up front instead of failing half-way with "database is locked")
  and reads begin deferred, each a snapshot of the file (WAL).
* PostgreSQL: URLs pass through untouched; reads run REPEATABLE READ, so every statement of a
  read sees one snapshot; claims add ``FOR UPDATE SKIP LOCKED`` and lock-ordered writes add
  ``FOR UPDATE``, which SQLAlchemy renders only on dialects that have them.
* The clock: :class:`db_now` is the database's idea of the time (UTC), rendered per dialect;
  every timestamp tenure stores is written with it, and due times are compared with it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, Float, Text, bindparam, create_engine, event, literal_column
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import BigInteger

from service.errors import InvalidInput
from service.storage import notify

log = logging.getLogger("tenure.db")

DEFAULT_DB = "tenure.db"
SQLITE_BUSY_TIMEOUT_MS = 10_000
_WRITE = "tenure_write"


def normalize_url(db: str | None) -> str:
    """Turn ``--db`` / ``TENURE_DB`` input (a SQLAlchemy URL or a file path) into a URL.

    Raises:
        InvalidInput: the text is neither a path nor a URL SQLAlchemy understands.
    """
    db = db or os.environ.get("TENURE_DB") or DEFAULT_DB
    if "://" not in db:
        return "sqlite:///" + str(Path(db).expanduser().resolve())
    try:
        make_url(db)
    except ArgumentError as exc:
        raise InvalidInput(f"--db {db!r} is not a database URL or a file path: {exc}") from None
    return db


SQLITE_SYNC_LEVELS = {"normal": "NORMAL", "full": "FULL"}  # what TENURE_SQLITE_SYNC accepts -> the PRAGMA's value


def sqlite_sync_level(level: str | None = None, what: str = "sqlite_sync") -> str:
    """The ``PRAGMA synchronous`` of tenure's SQLite connections: ``level``, else ``TENURE_SQLITE_SYNC``,
    else normal. Returns ``"NORMAL"`` or ``"FULL"``.

    In WAL mode, *normal* syncs the WAL to disk only at checkpoints: a commit survives the crash of
    any process, but a power loss or an operating-system crash can undo the last commits before
    one (acknowledged submits and successes included). *full* syncs the WAL at every commit, before
    it returns: nothing acknowledged is lost, at the cost of a sync per write transaction.

    Raises:
        InvalidInput: neither normal nor full.
    """
    if level is None:
        what, level = "environment variable TENURE_SQLITE_SYNC", os.environ.get("TENURE_SQLITE_SYNC") or "normal"
    found = SQLITE_SYNC_LEVELS.get(str(level).strip().lower())
    if found is None:
        raise InvalidInput(f"{what}={level!r} is not a SQLite sync level; use normal (the default: a power loss "
                           "can undo the last commits) or full (every commit is on disk before it returns)")
    return found


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


IDLE_IN_TRANSACTION_S = 5.0  # PostgreSQL ends a session idle inside a transaction this long (see make_engine)


def make_engine(url: str, *, sqlite_sync: str | None = None, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` with tenure's connection settings.

    ``sqlite_sync`` is the SQLite durability level (see :func:`sqlite_sync_level`; default
    ``TENURE_SQLITE_SYNC``, else normal), checked whatever the database so that a typo is never
    silent; PostgreSQL ignores it (its commits are synced by default).

    Raises:
        InvalidInput: a sync level other than normal or full.
    """
    sync = sqlite_sync_level(sqlite_sync)
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            **kwargs,
        )
        _configure_sqlite(engine, sync)
        return engine
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and "options" not in parsed.query:
        # A client cut off mid-transaction (a partitioned host, a frozen VM) would keep its row locks
        # until TCP gave up, hours later: the server ends such a session once it has sat idle in a
        # transaction this long, so the others can reclaim its leases. tenure's own transactions
        # never wait on their client between statements for more than milliseconds.
        ms = int(IDLE_IN_TRANSACTION_S * 1000)
        kwargs["connect_args"] = {"options": f"-c idle_in_transaction_session_timeout={ms}",
                                  **kwargs.get("connect_args", {})}
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _configure_sqlite(engine: Engine, sync: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Autocommit at the driver level: we emit BEGIN ourselves (see _on_begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute(f"PRAGMA synchronous = {sync}")  # per connection; one of SQLITE_SYNC_LEVELS' values
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(_WRITE, False):
            _begin_immediate(conn)
        else:
            conn.exec_driver_sql("BEGIN")


FINE_WAIT_S = 0.25  # how long a writer polls for the write lock finely before SQLite's own waits
_FIRST_POLL_S, _LAST_POLL_S = 0.0005, 0.002


def _begin_immediate(conn: Connection) -> None:
    """``BEGIN IMMEDIATE``, polling for a lock that another writer holds every 0.5 to 2 ms.

    SQLite's own busy handler sleeps 1, 2, 5, 10, 15 ... ms between tries, so a submit that
    met a worker's 2 ms claim waited 3 to 8 ms, and the tail of submits while a worker drains
    was 12 ms. Polled finely, a writer waits about as long as the lock is held (polling every
    0.1 to 1 ms took the lock from a draining worker too often: its throughput fell). Past
    :data:`FINE_WAIT_S` the busy timeout takes over, with its errors as before.
    """
    raw = conn.connection.driver_connection
    assert raw is not None
    raw.execute("PRAGMA busy_timeout = 0")
    try:
        pause, until = _FIRST_POLL_S, time.monotonic() + FINE_WAIT_S
        while time.monotonic() < until:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    break  # not a lock: said again below, with SQLAlchemy's wrapping
            try:
                time.sleep(pause)
            except OSError:  # a preloaded clock shim (faketime) can make a timed sleep fail: SQLite waits
                break
            pause = min(pause * 2, _LAST_POLL_S)
    finally:
        raw.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def enable_wal(engine: Engine) -> None:
    """Put a SQLite database in WAL mode (readers never block the writer). Persistent in the file.

    Called only on a database tenure migrates: merely opening a file must not change it.
    A no-op elsewhere.
    """
    if not is_sqlite(engine):
        return
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("PRAGMA journal_mode = WAL")
        cur.close()
    finally:
        raw.close()


class WaitLog:
    """Logs a slow wait for the write lock once per episode, not once per waiting writer."""

    def __init__(self, slow_s: float = 1.0, quiet_s: float = 30.0) -> None:
        self.slow_s, self.quiet_s = slow_s, quiet_s
        self._last = -float("inf")
        self._lock = threading.Lock()

    def waited(self, seconds: float) -> None:
        if seconds < self.slow_s:
            return
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.quiet_s:
                return
            self._last = now
        log.warning("db.write_waited seconds=%.1f: another writer held the database's write lock "
                    "(further waits in the next %g s are not logged)", seconds, self.quiet_s)


WRITE_WAITS = WaitLog()


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A write transaction: ``BEGIN IMMEDIATE`` on SQLite, a plain transaction elsewhere.

    On SQLite it waits up to the busy timeout (10 s) for another writer's lock; a wait of over
    a second is logged once per episode. Commits when the block exits normally, rolls back
    when it raises.
    """
    with engine.connect() as conn:
        conn = conn.execution_options(**{_WRITE: True})
        started = time.monotonic()
        try:
            with conn.begin():
                WRITE_WAITS.waited(time.monotonic() - started)
                yield conn
        except BaseException:
            notify.rolled_back(conn)
            raise
        notify.after_commit(conn)  # SQLite's doorbells ring once the work is visible


@contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    """A read transaction: one consistent snapshot for every statement in the block.

    REPEATABLE READ on PostgreSQL; on SQLite a deferred transaction is a snapshot already.
    """
    with engine.connect() as conn:
        if not is_sqlite(conn):
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


class db_now(FunctionElement[Any]):
    """The database's current UTC time, plus ``offset_s`` seconds (a bound parameter).

    PostgreSQL: the server's clock, one for every client. SQLite: the clock of the host that
    has the file, which every process using it shares (see the README on clocks).

    The offset is a clause of the element, not made while compiling: SQLAlchemy caches a
    statement's compiled form by its structure, and takes the values of the bound parameters
    that the structure holds at each execution; one made at compile time would keep the first
    value for good (every retry delayed as the first one was).
    """

    type = DateTime()
    inherit_cache = True

    def __init__(self, offset_s: float | ColumnElement[Any] | None = None) -> None:
        if isinstance(offset_s, ColumnElement):  # e.g. a bindparam of an executemany
            super().__init__(offset_s)
            return
        offset = bindparam("db_now_offset_s", None if offset_s is None else float(offset_s), unique=True,
                           type_=Float())
        super().__init__(*(() if offset_s is None else (offset,)))


@compiles(db_now, "postgresql")
def _now_pg(element: db_now, compiler: Any, **kw: Any) -> str:
    now = "timezone('UTC', statement_timestamp())"
    if not element.clauses.clauses:
        return now
    return f"({now} + make_interval(secs => {compiler.process(element.clauses, **kw)}))"


@compiles(db_now, "sqlite")
def _now_sqlite(element: db_now, compiler: Any, **kw: Any) -> str:
    # Milliseconds padded to the six digits SQLAlchemy stores, so that strings compare as times.
    if not element.clauses.clauses:
        return "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
    offset = compiler.process(element.clauses, **kw)
    return f"strftime('%Y-%m-%d %H:%M:%f000', 'now', printf('%+.3f seconds', {offset}))"


def status_is(column: Any, *statuses: str) -> ColumnElement[bool]:
    """``column IN ('a', 'b')`` with the statuses as literals in the SQL sent.

    A partial index (``WHERE status IN ('queued', 'retrying')``) is used only if the planner sees
    the same literals: with bound parameters SQLite scans the table. Statuses come from our own
    enums, never from input.
    """
    literals: list[Any] = [literal_column("'" + str(s).replace("'", "") + "'") for s in statuses]
    return column == literals[0] if len(literals) == 1 else column.in_(literals)  # type: ignore[no-any-return]


class text_tail(FunctionElement[Any]):
    """The last ``chars`` characters of a text column (all of it when shorter; NULL stays NULL)."""

    type = Text()
    inherit_cache = True

    def __init__(self, column: Any, chars: int) -> None:
        self.chars = int(chars)
        super().__init__(column)


@compiles(text_tail, "postgresql")
def _tail_pg(element: text_tail, compiler: Any, **kw: Any) -> str:
    return f"right({compiler.process(element.clauses, **kw)}, {element.chars})"


@compiles(text_tail, "sqlite")
def _tail_sqlite(element: text_tail, compiler: Any, **kw: Any) -> str:
    return f"substr({compiler.process(element.clauses, **kw)}, -{element.chars})"


class elapsed_ms(FunctionElement[Any]):
    """Whole milliseconds from ``earlier`` to ``later`` (two timestamps; NULL if either is NULL).

    An integer on both backends, so that ``elapsed_ms(...) // width`` buckets times alike
    (integer division truncates on both; a float cast would round on PostgreSQL).
    """

    type = BigInteger()
    inherit_cache = True

    def __init__(self, later: Any, earlier: Any) -> None:
        super().__init__(later, earlier)


@compiles(elapsed_ms, "postgresql")
def _elapsed_pg(element: elapsed_ms, compiler: Any, **kw: Any) -> str:
    later, earlier = (compiler.process(c, **kw) for c in element.clauses.clauses)
    return f"CAST(ROUND(EXTRACT(EPOCH FROM ({later} - {earlier})) * 1000) AS BIGINT)"


@compiles(elapsed_ms, "sqlite")
def _elapsed_sqlite(element: elapsed_ms, compiler: Any, **kw: Any) -> str:
    later, earlier = (compiler.process(c, **kw) for c in element.clauses.clauses)
    return f"CAST(ROUND((julianday({later}) - julianday({earlier})) * 86400000.0) AS INTEGER)"
