"""The schema comes from Alembic, agrees with the models, and foreign databases are refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, text

from service.errors import SchemaError, StorageError
from service.storage import schema
from service.storage.db import make_engine
from service.storage.models import Base


def downgrade(engine: Engine, revision: str) -> None:
    cfg = schema.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def test_migrations_and_models_agree(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    assert schema.migrate(engine) is schema.SchemaState.EMPTY
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == []


def test_downgrade_to_base_and_back(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    schema.migrate(engine)
    downgrade(engine, "base")
    assert schema.inspect_database(engine) is schema.SchemaState.BEHIND  # alembic_version remains, empty
    schema.migrate(engine)
    assert schema.inspect_database(engine) is schema.SchemaState.CURRENT
    engine.dispose()


def test_a_foreign_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE invoices (id INTEGER)")
    other.close()
    before = path.read_bytes()
    engine = make_engine(f"sqlite:///{path}")
    with pytest.raises(SchemaError, match="is not a tenure database"):
        schema.migrate(engine)
    engine.dispose()
    assert path.read_bytes() == before


def test_a_newer_schema_is_refused(tmp_path: Path, migrated_template: Path) -> None:
    path = tmp_path / "newer.db"
    path.write_bytes(migrated_template.read_bytes())
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(SchemaError, match="'9999_future', which this tenure does not know"):
        schema.migrate(engine)
    engine.dispose()


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    engine = make_engine(f"sqlite:///{path}")
    with pytest.raises(StorageError, match="cannot be opened as a database"):
        schema.migrate(engine)
    engine.dispose()
    assert path.read_bytes() == b"this is not sqlite" * 100


def test_migrations_and_models_agree_on_postgresql(pg_admin: Engine) -> None:
    from tests.conftest import _pg_url

    name = "tenure_migrate_check"
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine = make_engine(_pg_url(name))
    try:
        assert schema.migrate(engine) is schema.SchemaState.EMPTY
        assert schema.inspect_database(engine) is schema.SchemaState.CURRENT
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == []
    finally:
        engine.dispose()
        with pg_admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_0002_keeps_what_the_old_rules_charged(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """History migrated from 0001 says which attempts used up the budget under the old rules."""
    if backend == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    else:
        from tests.conftest import _pg_url

        admin = request.getfixturevalue("pg_admin")
        name = f"tenure_m2_{tmp_path.name[-8:].replace('-', '_')}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        engine = make_engine(_pg_url(name))
    cfg = schema.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tasks (id, position, kind, args, status, attempts, max_attempts, progress, "
                          "created_at) VALUES (1, 0, 'echo', '{}', 'failed', 3, 3, 0, '2026-01-01')"))
        for attempt, outcome in enumerate(["lost", "released", "failed", "timed_out"], start=1):
            conn.execute(text("INSERT INTO task_attempts (task_id, attempt, started_at, outcome) "
                              "VALUES (1, :a, '2026-01-01', :o)"), {"a": attempt, "o": outcome})
    schema.migrate(engine)
    with engine.connect() as conn:
        charged = conn.execute(text("SELECT outcome, charged FROM task_attempts ORDER BY attempt")).all()
        task = conn.execute(text("SELECT charged, lost, isolated FROM tasks")).one()
    engine.dispose()
    assert [(o, bool(c)) for o, c in charged] == [("lost", True), ("released", False), ("failed", True),
                                                  ("timed_out", True)]
    assert (task.charged, task.lost, bool(task.isolated)) == (3, 0, False)
    if backend == "postgresql":
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_table_rebuilt_by_a_migration_does_not_cascade_into_its_children(tmp_path: Path) -> None:
    """SQLite migrations run with foreign keys off, so rebuilding tasks keeps task_attempts."""
    engine = make_engine(f"sqlite:///{tmp_path / 'fk.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        conn.execute(text("CREATE TABLE child (id INTEGER PRIMARY KEY, "
                          "parent_id INTEGER REFERENCES parent (id) ON DELETE CASCADE)"))
        conn.execute(text("INSERT INTO parent VALUES (1)"))
        conn.execute(text("INSERT INTO child VALUES (1, 1)"))
    with engine.connect() as conn, schema._foreign_keys_deferred(conn):
        with conn.begin():  # what a batch "recreate" does
            conn.execute(text("CREATE TABLE parent_new (id INTEGER PRIMARY KEY)"))
            conn.execute(text("INSERT INTO parent_new SELECT id FROM parent"))
            conn.execute(text("DROP TABLE parent"))
            conn.execute(text("ALTER TABLE parent_new RENAME TO parent"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM child")).scalar() == 1
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # on again
    engine.dispose()


def test_0004_strips_the_progress_from_old_errors_so_they_group(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = schema.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
    old = ["upstream service answered 503 Service Unavailable (at 72%)",
           "upstream service answered 503 Service Unavailable (at 5%)",
           "connection reset while working (at 40%); a retry resumes",
           "ValueError: a value (at 5%) of its own, mid-sentence is kept"]
    with engine.begin() as conn:
        for i, error in enumerate(old, start=1):
            conn.execute(text("INSERT INTO tasks (id, position, kind, args, status, attempts, max_attempts, progress, "
                              "created_at, error) VALUES (:i, :i, 'sleep', '{}', 'failed', 1, 3, 0, '2026-01-01', :e)"),
                         {"i": i, "e": error})
            conn.execute(text("INSERT INTO task_attempts (task_id, attempt, started_at, outcome, error) "
                              "VALUES (:i, 1, '2026-01-01', 'failed', :e)"), {"i": i, "e": error})
    schema.migrate(engine)
    with engine.connect() as conn:
        groups = conn.execute(text("SELECT error, count(*) FROM tasks GROUP BY error ORDER BY 2 DESC, 1")).all()
        attempts = conn.execute(text("SELECT error FROM task_attempts ORDER BY task_id")).scalars().all()
    engine.dispose()
    assert [tuple(g) for g in groups] == [
        ("upstream service answered 503 Service Unavailable", 2),
        ("ValueError: a value (at 5%) of its own, mid-sentence is kept", 1),
        ("connection reset while working; a retry resumes", 1),
    ]
    assert attempts[0] == "upstream service answered 503 Service Unavailable"


def test_the_quick_head_reading_agrees_with_alembic() -> None:
    # The worker's start-up recognises a current database without importing Alembic.
    assert schema.quick_head() == schema.head_revision()


def test_an_older_revision_is_not_taken_for_current(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    schema.migrate(engine)
    downgrade(engine, "0003")
    assert schema.inspect_database(engine) is schema.SchemaState.BEHIND
    engine.dispose()
