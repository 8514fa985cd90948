"""HTTP helpers shared by the pages and the API: the engine handle, errors as statuses, bodies, ids."""

from __future__ import annotations

import anyio
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

MAX_ID = 2**31 - 1  # ids are 32-bit INTEGER columns on PostgreSQL: no row has a greater id on either backend
BIG_BODY_BYTES = 1024 * 1024  # thousands of explicit tasks: a body whose planning takes a noticeable time
BIG_BODIES_AT_ONCE = 2
BIG_BODY_WAIT_S = 30.0


def tenure_of(request: Request) -> service.Tenure:
    """The database handle the app's lifespan opened."""
    t: service.Tenure = request.app.state.tenure
    return t


def status_for(exc: TenureError) -> int:
    if isinstance(exc, Busy):
        return 503
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


class Busy(TenureError):
    """Too many big bodies are being handled; the request was not read (answer 503 with Retry-After)."""

    retry_after_s = 5


async def read_body(request: Request, limit: int, big: BigBodies | None = None) -> bytes:
    """The request body, refusing it once it passes ``limit`` bytes (chunked bodies included).

    Chunks are joined once at the end, so reading costs time in proportion to the body's size
    however finely it arrives. With ``big``, a body over :data:`BIG_BODY_BYTES` (declared, or
    found while reading) first takes one of its slots (see :class:`BigBodies`); the caller
    releases it. The body is kept on the request, so ``request.form()`` parses what was read.

    Raises:
        BodyTooLarge: the declared or actual length is over ``limit``.
        Busy: ``big`` had no slot free within its wait.
    """
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge(f"the body is larger than {limit} bytes")
    if big is not None and declared is not None and int(declared) > BIG_BODY_BYTES:
        await big.enter(request)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is larger than {limit} bytes")
        if big is not None and size > BIG_BODY_BYTES:
            await big.enter(request)
    body = b"".join(chunks)
    request._body = body  # Starlette's own cache: form() and json() read it instead of the stream
    return body


class BigBodies:
    """At most ``slots`` big bodies are read, parsed, planned and written at once; the rest wait.

    A 100,000-task body is up to 16 MiB read and several times that parsed, and takes seconds of a
    core to plan and write: a handful at once could exhaust memory, and would slow everyone.
    A request over the bound waits for a slot *before its body is read* (a chunked body once
    it passes :data:`BIG_BODY_BYTES`), so waiting costs a connection, not memory: the server
    stops reading that socket and TCP holds the sender back. Waiting rather than refusing
    at once means a client that sends a few big runs together needs no retry logic; after
    ``wait_s`` the request is refused with 503 and Retry-After (:class:`Busy`), so a flood
    of them cannot queue without end. Smaller bodies never wait.
    """

    def __init__(self, slots: int = BIG_BODIES_AT_ONCE, wait_s: float = BIG_BODY_WAIT_S) -> None:
        self.slots, self.wait_s = slots, wait_s
        self.waiting = 0  # requests waiting for a slot now (for tests and metrics)
        self._semaphore = anyio.Semaphore(slots)

    async def enter(self, request: Request) -> None:
        """Take a slot for ``request`` (once; :meth:`leave` gives it back). Raises Busy."""
        if request.scope.get(_HELD):
            return
        self.waiting += 1
        try:
            with anyio.move_on_after(self.wait_s):
                await self._semaphore.acquire()
                request.scope[_HELD] = True
                return
        finally:
            self.waiting -= 1
        raise Busy(f"tenure is busy with as many large submissions as it handles at once ({self.slots}) and "
                   f"none ended within {self.wait_s:g} s; send this one again in {Busy.retry_after_s} s")

    def leave(self, request: Request) -> None:
        """Give back the slot ``request`` took, if it took one."""
        if request.scope.pop(_HELD, False):
            self._semaphore.release()


_HELD = "tenure.big_body"


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
