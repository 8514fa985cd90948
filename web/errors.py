"""Engine errors as HTTP statuses, and the guard on ids taken from a URL."""

from __future__ import annotations

from starlette.requests import Request

from service.errors import Conflict, InvalidInput, NotFound, SchemaError, StorageError, TenureError

MAX_ID = 2**63 - 1


def status_for(exc: TenureError) -> int:
    if isinstance(exc, InvalidInput):
        return 422
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, (StorageError, SchemaError)):
        return 503
    return 400


def run_id(request: Request) -> int:
    """The ``{run_id:int}`` path parameter.

    Raises:
        NotFound: the id is larger than any row id can be.
    """
    value = int(request.path_params["run_id"])
    if value > MAX_ID:
        raise NotFound(f"there is no run {value}")
    return value
