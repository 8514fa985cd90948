"""Alembic environment: runs migrations against tenure's database.

The URL comes from, in order: a connection handed over by `tenure migrate`
(``config.attributes["connection"]``), ``alembic -x db=URL``, the ``TENURE_DB``
environment variable, ``./tenure.db``.
"""

from alembic import context

from service.storage.db import enable_wal, make_engine, normalize_url
from service.storage.models import Base
from service.storage.schema import inspect_database

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = normalize_url(context.get_x_argument(as_dictionary=True).get("db"))
    engine = make_engine(url)
    try:
        inspect_database(engine)  # refuses a foreign or newer database before writing anything
        enable_wal(engine)
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("tenure migrations run online only: give a database with -x db=URL")
run_migrations_online()
