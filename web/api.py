"""The JSON API: the HTTP face of the task manager. Errors are ``{"error": "..."}``.

Bodies are checked by the models of :mod:`web.schemas` (what ``/openapi.json`` describes),
then planned by :mod:`service.faces.plans` (the rules every face shares), then written in one
transaction: a refused request writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.errors import InvalidInput, TenureError
from service.faces import plans as plans
from service.faces.flow import plan_flow, with_flow
from service.storage.submit import Created
from service.storage.views import AttemptView, RunView, TaskDetail, TaskView
from service.task_process.protocol import get_kind
from service.validation import check, check_as
from web import schemas
from web.http import BigBodies, BodyTooLarge, Busy, read_body, run_id, status_for, task_id, tenure_of
from web.openapi import spec

MAX_RUN_BODY_BYTES = 16 * 1024 * 1024  # 100,000 tasks of about 160 bytes each
MAX_TASK_BODY_BYTES = 128 * 1024  # one task's args may be 64 KiB of JSON
_KEY: TypeAdapter[str] = TypeAdapter(schemas.IdempotencyKey)


def error(message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


Handler = Callable[[Request], Awaitable[Response]]


class Unsupported(InvalidInput):
    """The body is not JSON (answer 415)."""


class MalformedJson(InvalidInput):
    """The body does not parse as JSON (answer 400)."""


def guarded(handler: Handler) -> Handler:
    """Engine errors become JSON errors with their status; nothing leaks as a 500."""

    async def wrapper(request: Request) -> Response:
        try:
            return await handler(request)
        except BodyTooLarge as exc:
            return error(str(exc), 413)
        except Unsupported as exc:
            return error(str(exc), 415)
        except MalformedJson as exc:
            return error(str(exc), 400)
        except Busy as exc:
            return error(str(exc), 503, {"Retry-After": str(exc.retry_after_s)})
        except TenureError as exc:
            return error(str(exc), status_for(exc))

    return wrapper


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def run_json(request: Request, run: RunView) -> dict[str, Any]:
    return {
        "id": run.id, "name": run.name, "status": run.status, "kind": run.kind, "total": run.total,
        "params": run.params, "counts": run.counts, "created_at": _iso(run.created_at),
        "finished_at": _iso(run.finished_at), "on_complete": run.on_complete,
        "hook_task_id": run.hook_task_id, "scheduled_for": _iso(run.scheduled_for), "queue": run.queue,
        "paused": run.paused_at is not None, "paused_at": _iso(run.paused_at),
        "url": str(request.url_for("run_page", run_id=run.id)),
    }


def task_json(request: Request, task: TaskView) -> dict[str, Any]:
    return {
        "id": task.id, "run_id": task.run_id, "position": task.position, "kind": task.kind, "label": task.label,
        "args": task.args, "status": task.status, "attempts": task.attempts, "max_attempts": task.max_attempts,
        "charged": task.charged, "lost": task.lost, "progress": task.progress, "result": task.result,
        "error": task.error, "created_at": _iso(task.created_at), "started_at": _iso(task.started_at),
        "finished_at": _iso(task.finished_at), "scheduled_for": _iso(task.scheduled_for), "queue": task.queue,
        "priority": task.priority, "key": task.limit_key, "unique_key": task.unique_key,
        "url": str(request.url_for("task_page", task_id=task.id)),
    }


def attempt_json(attempt: AttemptView) -> dict[str, Any]:
    return {
        "attempt": attempt.attempt, "outcome": attempt.outcome, "charged": attempt.charged, "error": attempt.error,
        "supervisor_id": attempt.supervisor_id, "started_at": _iso(attempt.started_at),
        "finished_at": _iso(attempt.finished_at), "logs": attempt.logs, "logs_cut": attempt.logs_cut,
        "traceback": attempt.traceback,
    }


def detail_json(request: Request, detail: TaskDetail) -> dict[str, Any]:
    return {**task_json(request, detail.task), "history": [attempt_json(a) for a in detail.attempts]}


def check_media(request: Request) -> None:
    """Raises Unsupported for a body sent as something other than JSON (none at all is fine)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise Unsupported(f"the body must be JSON (Content-Type: application/json), not {media[:60]}")


def parse_json(body: bytes) -> Any:
    """The body as JSON; None when there is none. CPU-bound: called off the event loop.

    Raises:
        MalformedJson: not UTF-8, not JSON (or NaN, Infinity).
    """
    if not body.strip():
        return None
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise MalformedJson("the body is not valid UTF-8") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise MalformedJson(f"the body is not valid JSON: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise MalformedJson(f"the body is not valid JSON: {name} is not a JSON number")


def idempotency_key(request: Request) -> str | None:
    """The ``Idempotency-Key`` header, checked as the description says. Raises InvalidInput."""
    raw = request.headers.get("idempotency-key")
    if raw is None:
        return None
    try:
        check_as(_KEY, raw)
    except InvalidInput:
        raise InvalidInput("Idempotency-Key must be 1 to 190 visible ASCII characters (spaces inside only)") from None
    return raw


def _object(data: Any, example: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidInput(f"the body must be a JSON object, like {example}")
    kind = data.get("kind")
    if kind is not None:
        if not isinstance(kind, str):
            raise InvalidInput(f"kind must be text, got {kind!r}"[:120])
        get_kind(kind)  # an unknown kind: one sentence listing the known ones
    return data


def plan_run(data: Any) -> plans.RunPlan:
    """A run request's body, checked by its model, as a plan. Raises InvalidInput."""
    catalog = schemas.catalog()
    body = _object({} if data is None else data, '{"tasks": 50, "kind": "sleep"}')
    request: BaseModel = check_as(catalog.run, body, hidden=catalog.hidden, owners=catalog.owners)
    options = request.model_dump(include={"name", "max_attempts", "timeout_s", "memory_limit_mb", "on_complete"})
    kind = str(body.get("kind", schemas.DEFAULT_KIND))
    start = request.model_dump(include=set(schemas.START))
    flow = plan_flow(**request.model_dump(include=set(schemas.FLOW)))
    if isinstance(request, catalog.explicit):
        entries = [entry.model_dump(exclude_none=True) if isinstance(entry, BaseModel) else entry
                   for entry in request.tasks]  # type: ignore[attr-defined]
        plan = plans.plan_tasks(kind, entries, where=lambda i: f"tasks[{i}]", **options)
        return with_flow(plans.with_start(plan, **start), flow)
    taken = set(type(request).model_fields) - {"tasks", "kind", *options, *schemas.START, *schemas.FLOW}
    params = request.model_dump(include=taken, exclude_unset=True)
    plan = plans.plan_simulation(request.tasks, kind, params, **options)  # type: ignore[attr-defined]
    return with_flow(plans.with_start(plan, **start), flow)


def plan_task(data: Any) -> plans.TaskPlan:
    """A single task's body, checked by its model, as a plan. Raises InvalidInput."""
    catalog = schemas.catalog()
    body = _object(data, '{"kind": "echo", "args": {"x": 1}}')
    request = check(catalog.task, body)
    flow = plan_flow(**request.model_dump(include={*schemas.FLOW, "unique_key"}))
    plan = plans.plan_task(**request.model_dump(exclude={*schemas.START, *schemas.FLOW, "unique_key"}))
    return with_flow(plans.with_start(plan, **request.model_dump(include=set(schemas.START))), flow)


def _created(body: dict[str, Any], made: Created, url: str) -> JSONResponse:
    return JSONResponse(body, status_code=201 if made.new else 200, headers={"Location": url})


async def _create_run(request: Request) -> Response:
    """Read the body on the event loop; parse, check, plan and write it on a worker thread.

    A run of 100,000 tasks takes seconds to plan and write: on the event loop, that would hold
    up every other request of the server. A big body also takes one of the app's
    :class:`~web.http.BigBodies` slots for as long as it is handled.
    """
    t = tenure_of(request)
    key = idempotency_key(request)
    check_media(request)
    big: BigBodies = request.app.state.big_bodies
    try:
        body = await read_body(request, MAX_RUN_BODY_BYTES, big)
        made = await run_in_threadpool(lambda: t.start_run(plan_run(parse_json(body)), key))
    finally:
        big.leave(request)
    run = await run_in_threadpool(t.run, made.id)
    return _created(run_json(request, run), made, str(request.url_for("api_run", run_id=made.id)))


@guarded
async def runs(request: Request) -> Response:
    if request.method == "POST":
        return await _create_run(request)
    t = tenure_of(request)
    page = check(schemas.Page, dict(request.query_params), strict=False)
    found = await run_in_threadpool(lambda: t.runs(limit=page.limit, offset=page.offset))
    total = await run_in_threadpool(t.store.count_runs)
    return JSONResponse({"runs": [run_json(request, r) for r in found], "total": total,
                         "limit": page.limit, "offset": page.offset})


@guarded
async def get_run(request: Request) -> Response:
    t = tenure_of(request)
    rid, which = run_id(request), check(schemas.TaskSlice, dict(request.query_params), strict=False)
    run, tasks = await run_in_threadpool(lambda: t.store.run_tasks(rid, limit=which.limit, offset=which.offset))
    return JSONResponse({**run_json(request, run), "tasks": [task_json(request, task) for task in tasks]})


@guarded
async def cancel_run(request: Request) -> Response:
    return await _act(request, "cancel_run", "cancelled")


@guarded
async def retry_run(request: Request) -> Response:
    return await _act(request, "retry_run", "queued")


async def _act(request: Request, verb: str, key: str) -> Response:
    """Apply a run verb; answer how many tasks it touched and the run as it is now."""
    t = tenure_of(request)
    rid = run_id(request)
    count = await run_in_threadpool(getattr(t, verb), rid)
    return JSONResponse({key: count, "run": run_json(request, await run_in_threadpool(t.run, rid))})


@guarded
async def tasks(request: Request) -> Response:
    t = tenure_of(request)
    if request.method == "POST":
        key = idempotency_key(request)
        check_media(request)
        body = await read_body(request, MAX_TASK_BODY_BYTES)
        made = await run_in_threadpool(lambda: t.start_task(plan_task(parse_json(body)), key))
        detail = await run_in_threadpool(t.store.task_detail, made.id)
        answer = detail_json(request, detail)
        if made.unique:  # nothing was queued: the answer is the task that holds the key
            answer.update(unique=True, message=f"task {made.id} with unique key {detail.task.unique_key!r} is "
                                               f"already {detail.task.status}")
        return _created(answer, made, str(request.url_for("api_task", task_id=made.id)))
    page = check(schemas.Page, dict(request.query_params), strict=False)
    found, total = await run_in_threadpool(lambda: t.store.single_tasks(limit=page.limit, offset=page.offset))
    return JSONResponse({"tasks": [task_json(request, task) for task in found], "total": total,
                         "limit": page.limit, "offset": page.offset})


@guarded
async def get_task(request: Request) -> Response:
    detail = await run_in_threadpool(tenure_of(request).store.task_detail, task_id(request))
    return JSONResponse(detail_json(request, detail))


@guarded
async def task_result(request: Request) -> Response:
    task = await run_in_threadpool(tenure_of(request).task, task_id(request))
    body = {"id": task.id, "status": task.status, "progress": task.progress, "result": task.result,
            "error": task.error}
    if task.status == "succeeded":
        return JSONResponse(body, status_code=200)
    return JSONResponse(body, status_code=409 if task.terminal else 202)


@guarded
async def cancel_task(request: Request) -> Response:
    t = tenure_of(request)
    tid = task_id(request)
    await run_in_threadpool(t.cancel_task, tid)
    return JSONResponse(detail_json(request, await run_in_threadpool(t.store.task_detail, tid)))


async def healthz(request: Request) -> Response:
    t = tenure_of(request)
    supervisor = request.app.state.supervisor
    body: dict[str, Any] = {"status": "ok", "database": "ok",
                            "supervisor": "off" if supervisor is None else "running"}
    if supervisor is not None and supervisor.stopped.is_set():
        body.update(status="degraded", supervisor="stopped")
    try:
        await run_in_threadpool(t.store.count_runs)
    except TenureError as exc:
        body.update(status="unavailable", database=str(exc))
        return JSONResponse(body, status_code=503)
    return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)


async def openapi(request: Request) -> Response:
    return JSONResponse(spec())


routes = [
    Route("/api/runs", runs, methods=["GET", "POST"], name="api_runs"),
    Route("/api/runs/{run_id:int}", get_run, methods=["GET"], name="api_run"),
    Route("/api/runs/{run_id:int}/cancel", cancel_run, methods=["POST"], name="api_cancel"),
    Route("/api/runs/{run_id:int}/retry", retry_run, methods=["POST"], name="api_retry"),
    Route("/api/tasks", tasks, methods=["GET", "POST"], name="api_tasks"),
    Route("/api/tasks/{task_id:int}", get_task, methods=["GET"], name="api_task"),
    Route("/api/tasks/{task_id:int}/result", task_result, methods=["GET"], name="api_task_result"),
    Route("/api/tasks/{task_id:int}/cancel", cancel_task, methods=["POST"], name="api_task_cancel"),
    Route("/healthz", healthz, methods=["GET"], name="healthz"),
    Route("/openapi.json", openapi, methods=["GET"], name="openapi"),
]
