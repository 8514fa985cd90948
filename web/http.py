"""HTTP helpers shared by the pages and the API: the engine handle, errors as statuses, bodies, ids."""

from __future__ import annotations

from starlette.requests import Request

import service
from service.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    SchemaError,
    StorageError,
    StorageFull,
    TenureError,
)

MAX_ID = 2**63 - 1


def tenure_of(request: Request) -> service.Tenure:
    """The database handle the app's lifespan opened."""
    t: service.Tenure = request.app.state.tenure
    return t


def status_for(exc: TenureError) -> int:
    if isinstance(exc, InvalidInput):
        return 422
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, StorageFull):
        return 507
    if isinstance(exc, (StorageError, SchemaError)):
        return 503
    return 400


class BodyTooLarge(InvalidInput):
    """The request body is over the endpoint's limit (answer 413)."""


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing it once it passes ``limit`` bytes (chunked bodies included).

    The body is kept on the request, so ``request.form()`` parses what was read here.

    Raises:
        BodyTooLarge: the declared or actual length is over ``limit``.
    """
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge(f"the body is larger than {limit} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"the body is larger than {limit} bytes")
    request._body = body  # Starlette's own cache: form() and json() read it instead of the stream
    return body


def run_id(request: Request) -> int:
    """The ``{run_id:int}`` path parameter. Raises NotFound past any row id."""
    return _row_id(request, "run")


def task_id(request: Request) -> int:
    """The ``{task_id:int}`` path parameter. Raises NotFound past any row id."""
    return _row_id(request, "task")


def _row_id(request: Request, what: str) -> int:
    value = int(request.path_params[f"{what}_id"])
    if value > MAX_ID:
        raise NotFound(f"there is no {what} {value}")
    return value
