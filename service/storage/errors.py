"""Translating database errors into tenure's own, at the storage boundary."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from service.errors import Conflict, StorageError, StorageFull, StorageReadOnly

P = ParamSpec("P")
R = TypeVar("R")


def describe(exc: DBAPIError) -> str:
    """One line saying what the database refused, for people."""
    orig = exc.orig if exc.orig is not None else exc
    text = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    lowered = text.lower()
    if "locked" in lowered or "busy" in lowered:
        return f"the database is busy (another writer holds its lock): {text}"
    if "readonly" in lowered or "read-only" in lowered or "read only" in lowered:
        return f"the database is read-only: {text}"
    if "full" in lowered or "no space" in lowered:
        return f"the database's disk is full: {text}"
    return f"the database refused the operation: {text}"


def translated(fn: Callable[P, R]) -> Callable[P, R]:
    """Re-raise SQLAlchemy errors from a storage verb as :class:`StorageError` or :class:`Conflict`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except IntegrityError as exc:
            raise Conflict(describe(exc)) from exc
        except (OperationalError, DBAPIError) as exc:
            message = describe(exc)
            if message.startswith("the database's disk is full"):
                raise StorageFull(message) from exc
            if message.startswith("the database is read-only"):
                raise StorageReadOnly(message) from exc
            raise StorageError(message) from exc

    return wrapper
