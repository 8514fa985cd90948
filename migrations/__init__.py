"""Alembic migrations: the only way tenure's tables come to exist."""
