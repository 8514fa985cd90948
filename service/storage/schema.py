"""Bringing a database to the schema this code expects, and refusing one that is not tenure's.

Tables come only from the Alembic migrations in ``migrations/``. Before anything is written,
:func:`inspect_database` tells a fresh database (migrate it), a current one (use it), an older
one (migrate it), a foreign one or a newer one (refuse, with one clear sentence).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import DatabaseError, OperationalError

import migrations
from service.errors import SchemaError, StorageError
from service.storage.db import enable_wal, is_sqlite, sqlite_path

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent
_REVISION = re.compile(r"^(down_revision|revision)\b[^=]*=\s*(?:['\"]([^'\"]+)['\"]|None)", re.MULTILINE)


class SchemaState(enum.StrEnum):
    EMPTY = "empty"  # no tables at all: a new database
    CURRENT = "current"  # at this code's head revision
    BEHIND = "behind"  # a known, older revision: migrate before use


def alembic_config() -> Config:
    from alembic.config import Config  # Alembic is imported only to migrate: a start-up saves ~80 ms

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "migrations/ holds no revision"
    return head


def quick_head() -> str | None:
    """The head revision read from the migration files' ``revision``/``down_revision`` lines,
    without importing Alembic; None if that reading is not one clear line of revisions.

    Used only to recognise a current database fast; anything else asks Alembic.
    """
    downs: dict[str, str | None] = {}
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        found = dict((name, value or None) for name, value in _REVISION.findall(path.read_text()))
        if "revision" in found and found["revision"] is not None:
            downs[found["revision"]] = found.get("down_revision")
    heads = set(downs) - set(downs.values())
    return heads.pop() if len(heads) == 1 else None


def inspect_database(engine: Engine) -> SchemaState:
    """Say what state the database's schema is in, writing nothing.

    Raises:
        SchemaError: the database holds tables that are not tenure's, or a revision newer
            than (or unknown to) this code.
        StorageError: the file is not a database at all, or cannot be opened.
    """
    where = _describe(engine)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            revision = None
            if "alembic_version" in tables:
                revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DatabaseError as exc:
        raise StorageError(f"{where} cannot be opened as a database: {_first_line(exc)}") from None
    if not tables:
        return SchemaState.EMPTY
    if "alembic_version" not in tables:
        raise SchemaError(
            f"{where} is not a tenure database (it has tables {', '.join(sorted(tables)[:5])}"
            " but no tenure schema); point --db at a tenure database or a new file."
        )
    if revision is not None and revision == quick_head():
        return SchemaState.CURRENT
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    if revision == head:
        return SchemaState.CURRENT
    if revision is None:
        return SchemaState.BEHIND  # migrated down to base: an empty alembic_version
    known = {rev.revision for rev in script.walk_revisions()}
    if revision not in known:
        raise SchemaError(
            f"{where} has schema revision {revision!r}, which this tenure does not know "
            f"(its head is {head!r}): the database is from a newer tenure, or not tenure's."
        )
    return SchemaState.BEHIND


def migrate(engine: Engine) -> SchemaState:
    """Upgrade the database to head after checking it is tenure's; returns the state before.

    Raises:
        SchemaError, StorageError: as :func:`inspect_database`; nothing is written then.
    """
    state = inspect_database(engine)
    if state is SchemaState.CURRENT:
        return state
    from alembic import command

    cfg = alembic_config()
    try:
        enable_wal(engine)
        with engine.connect() as conn, _foreign_keys_deferred(conn):
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
    except OperationalError as exc:
        raise StorageError(f"could not migrate {_describe(engine)}: {_first_line(exc)}") from None
    return state


@contextmanager
def _foreign_keys_deferred(conn: Connection) -> Iterator[None]:
    """On SQLite, migrate with foreign keys off (as SQLite's ALTER TABLE guide says to).

    A migration that rebuilds a table drops the old one, and with foreign keys on that drop
    would cascade into every table referencing it. The keys are checked after the migration
    and switched on again before the connection goes back to the pool.
    """
    if not is_sqlite(conn):
        yield
        return
    raw = conn.connection.driver_connection
    assert raw is not None
    raw.execute("PRAGMA foreign_keys = OFF")  # outside any transaction, where it takes effect
    try:
        yield
        broken = raw.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise SchemaError(f"the migration left {len(broken)} rows whose references are broken: {broken[:3]}")
    finally:
        raw.execute("PRAGMA foreign_keys = ON")


def require_current(engine: Engine) -> None:
    """Raise unless the schema is at head (for commands that only read).

    Raises:
        SchemaError: the database is new, behind, foreign or newer.
    """
    state = inspect_database(engine)
    if state is SchemaState.EMPTY:
        raise SchemaError(f"{_describe(engine)} has no tenure schema yet; run `tenure migrate` first.")
    if state is SchemaState.BEHIND:
        raise SchemaError(f"{_describe(engine)} has an older schema; run `tenure migrate` to upgrade it.")


def _describe(engine: Engine) -> str:
    path = sqlite_path(engine.url.render_as_string(hide_password=True))
    return str(path) if path else engine.url.render_as_string(hide_password=True)


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).splitlines()[0] if str(orig) else type(orig).__name__
