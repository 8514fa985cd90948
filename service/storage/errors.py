"""Translating database errors into tenure's own, at the storage boundary."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    StatementError,
)

from service.errors import Conflict, StorageError, StorageFull, StorageReadOnly, StorageRefused
from service.text import storable

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


def refusal(exc: BaseException) -> str:
    """One line saying which value the database (or its driver) refused, storable itself."""
    orig = getattr(exc, "orig", None) or exc
    text = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return storable(f"the database refused a value: {text}"[:500]) or "the database refused a value"


def translated(fn: Callable[P, R]) -> Callable[P, R]:
    """Re-raise errors from a storage verb as tenure's own.

    * the database is away, busy, full or read-only: :class:`StorageError` (and its kinds), worth
      retrying later;
    * it (or its driver) refused the values sent (a NUL byte, text that is not valid Unicode, a
      value out of range): :class:`StorageRefused`, which the same values would meet again;
    * a constraint said no: :class:`Conflict`.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except IntegrityError as exc:
            raise Conflict(describe(exc)) from exc
        except (DataError, ProgrammingError, NotSupportedError) as exc:
            raise StorageRefused(refusal(exc)) from exc
        except (OperationalError, InterfaceError) as exc:
            _raise_unavailable(exc)
        except DBAPIError as exc:
            _raise_unavailable(exc)
        except StatementError as exc:  # a value SQLAlchemy could not bind
            raise StorageRefused(refusal(exc)) from exc
        except UnicodeError as exc:  # the driver could not encode a value (a lone surrogate)
            raise StorageRefused(refusal(exc)) from exc

    return wrapper


def _raise_unavailable(exc: DBAPIError) -> NoReturn:
    message = describe(exc)
    if message.startswith("the database's disk is full"):
        raise StorageFull(message) from exc
    if message.startswith("the database is read-only"):
        raise StorageReadOnly(message) from exc
    raise StorageError(message) from exc
