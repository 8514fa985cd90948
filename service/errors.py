"""tenure's own exceptions. Database errors are translated into these at the storage boundary."""

from __future__ import annotations

MAX_ERROR_CHARS = 4000


class TenureError(Exception):
    """Base class: every message is one sentence a person can act on."""


class InvalidInput(TenureError):
    """A request or parameter was wrong; nothing was written."""


class NotFound(TenureError):
    """No run or task has the given id."""


class Conflict(TenureError):
    """The request does not fit the current state (for example cancelling a finished run)."""


class TaskFailed(TenureError):
    """The task asked about failed or was cancelled; ``task`` is what was read of it."""

    def __init__(self, message: str, task: object = None) -> None:
        super().__init__(message)
        self.task = task


class SchemaError(TenureError):
    """The database is not tenure's, or its schema is newer or older than this code."""


class StorageError(TenureError):
    """The database could not be read or written (locked, read-only, full, unreachable)."""


class StorageRefused(InvalidInput):
    """The database refused the values of a write (a value it cannot store), not the write itself:
    nothing was written, and the same values would be refused again. Unlike a StorageError, it
    is no reason to wait and retry: the one request or attempt that carries them fails."""


class StorageFull(StorageError):
    """The database's disk is full: nothing was written."""


class StorageReadOnly(StorageError):
    """The database cannot be written (a read-only file or filesystem): nothing was written."""


class PermanentError(Exception):
    """Raised by task code for a failure that a retry cannot fix: the task fails at once."""


class TransientError(Exception):
    """Raised by task code for a failure that a retry may fix (the default for any exception)."""


def describe(exc: BaseException) -> str:
    """``Type: message`` for people, even for exceptions whose ``str()`` itself fails."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except BaseException:  # noqa: BLE001 - an unprintable exception must still be reported
        try:
            text = repr(exc)
        except BaseException:  # noqa: BLE001
            text = "(its message could not be printed)"
    message = f"{name}: {text}" if text else name
    return message[:MAX_ERROR_CHARS]
