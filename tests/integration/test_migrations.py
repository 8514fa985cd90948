"""The schema comes from Alembic, agrees with the models, and foreign databases are refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, text

from service import schema
from service.db import make_engine
from service.errors import SchemaError, StorageError
from service.models import Base


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
    cfg = schema.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
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
