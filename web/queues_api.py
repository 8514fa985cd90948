"""Flow control's JSON API: queues (list, read, declare, pause, resume), concurrency keys, paused runs.

A queue's limits hold across every host; pausing one stops new starts of its tasks on every
worker (what runs finishes), and a run can be paused alone. Bodies are checked by
:mod:`web.queue_schemas`; names, limits and rates by :mod:`service.faces.flow`, whose errors
name the field (422). A name that cannot be a queue's is no queue (404), except when declaring one.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.config import check_queue_name
from service.errors import InvalidInput, NotFound
from service.faces.flow import plan_flow
from service.storage.flow import KeyView, QueueView
from service.validation import check
from web import queue_schemas
from web.api import _iso, check_media, guarded, parse_json, run_json
from web.http import read_body, run_id, tenure_of

MAX_BODY_BYTES = 16 * 1024


def queue_name(request: Request, declaring: bool = False) -> str:
    """The ``{name}`` path parameter. Raises NotFound for a name no queue can have (InvalidInput
    when ``declaring`` one: the name is what was wrong)."""
    name = str(request.path_params["name"])
    try:
        return check_queue_name(name, "queue")
    except InvalidInput:
        if declaring:
            raise
        raise NotFound(f"there is no queue {name[:100]!r}") from None


def key_name(request: Request, setting: bool = False) -> str:
    """The ``{name}`` of a concurrency key (it may hold a ``/``), as :func:`queue_name` does."""
    name = str(request.path_params["name"])
    try:
        plan_flow(key=name)
    except InvalidInput:
        if setting:
            raise
        raise NotFound(f"there is no concurrency key {name[:100]!r} with limits") from None
    return name


def queue_json(request: Request, q: QueueView) -> dict[str, Any]:
    return {
        "name": q.name, "paused": q.paused, "paused_at": _iso(q.paused_at), "concurrency": q.concurrency,
        "rate": q.rate, "rate_count": q.rate_count, "rate_period_s": q.rate_period_s, "age_s": q.age_s,
        "declared": q.declared, "waiting": q.waiting, "due": q.due, "running": q.running,
        "oldest_wait_s": q.oldest_wait_s, "url": f"{request.url_for('queues_page')}#queue-{q.name}",
    }


def key_json(k: KeyView) -> dict[str, Any]:
    return {"name": k.name, "concurrency": k.concurrency, "rate": k.rate, "rate_count": k.rate_count,
            "rate_period_s": k.rate_period_s, "running": k.running}


async def _limits(request: Request, model: type[queue_schemas.KeyRequest | queue_schemas.QueueRequest]
                  ) -> dict[str, Any]:
    """The body's limits, only those it gives (a field left out keeps its value). Raises InvalidInput."""
    check_media(request)
    body = await read_body(request, MAX_BODY_BYTES)
    data = await run_in_threadpool(parse_json, body) if body.strip() else {}  # no body: no limit changes
    if not isinstance(data, dict):
        raise InvalidInput('the body must be a JSON object, like {"concurrency": 4, "rate": "10/s"}')
    return check(model, data).model_dump(exclude_unset=True)


@guarded
async def queues(request: Request) -> Response:
    found = await run_in_threadpool(tenure_of(request).queues)
    return JSONResponse({"queues": [queue_json(request, q) for q in found]})


@guarded
async def one(request: Request) -> Response:
    t = tenure_of(request)
    if request.method == "PUT":
        name = queue_name(request, declaring=True)
        limits = await _limits(request, queue_schemas.QueueRequest)
        view = await run_in_threadpool(lambda: t.set_queue(name, **limits))
    else:
        view = await run_in_threadpool(t.queue, queue_name(request))
    return JSONResponse(queue_json(request, view))


@guarded
async def pause(request: Request) -> Response:
    view = await run_in_threadpool(tenure_of(request).pause_queue, queue_name(request))
    return JSONResponse(queue_json(request, view))


@guarded
async def resume(request: Request) -> Response:
    view = await run_in_threadpool(tenure_of(request).resume_queue, queue_name(request))
    return JSONResponse(queue_json(request, view))


@guarded
async def key(request: Request) -> Response:
    t = tenure_of(request)
    if request.method == "PUT":
        name = key_name(request, setting=True)
        limits = await _limits(request, queue_schemas.KeyRequest)
        return JSONResponse(key_json(await run_in_threadpool(lambda: t.set_key(name, **limits))))
    return JSONResponse(key_json(await run_in_threadpool(t.store.key, key_name(request))))


@guarded
async def pause_run(request: Request) -> Response:
    return await _pause_run(request, "pause_run")


@guarded
async def resume_run(request: Request) -> Response:
    return await _pause_run(request, "resume_run")


async def _pause_run(request: Request, verb: str) -> Response:
    """Pause or resume a live run; answer whether that changed it, and the run as it is now."""
    t, rid = tenure_of(request), run_id(request)
    changed = await run_in_threadpool(getattr(t, verb), rid)
    return JSONResponse({"changed": changed, "run": run_json(request, await run_in_threadpool(t.run, rid))})


routes = [
    Route("/api/queues", queues, methods=["GET"], name="api_queues"),
    Route("/api/queues/{name}", one, methods=["GET", "PUT"], name="api_queue"),
    Route("/api/queues/{name}/pause", pause, methods=["POST"], name="api_queue_pause"),
    Route("/api/queues/{name}/resume", resume, methods=["POST"], name="api_queue_resume"),
    Route("/api/keys/{name:path}", key, methods=["GET", "PUT"], name="api_key"),
    Route("/api/runs/{run_id:int}/pause", pause_run, methods=["POST"], name="api_run_pause"),
    Route("/api/runs/{run_id:int}/resume", resume_run, methods=["POST"], name="api_run_resume"),
]
