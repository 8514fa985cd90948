"""The JSON API: the HTTP face of the task manager. Errors are ``{"error": "..."}``."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.errors import InvalidInput, TenureError
from service.storage.views import RunView, TaskView
from web import forms
from web.http import BodyTooLarge, read_body, run_id, status_for, tenure_of
from web.openapi import SPEC

MAX_BODY_BYTES = 64 * 1024
MAX_PAGE = 100


def error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


Handler = Callable[[Request], Awaitable[Response]]


def guarded(handler: Handler) -> Handler:
    """Engine errors become JSON errors with their status; nothing leaks as a 500."""

    async def wrapper(request: Request) -> Response:
        try:
            return await handler(request)
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
        "hook_task_id": run.hook_task_id, "url": str(request.url_for("run_page", run_id=run.id)),
    }


def task_json(task: TaskView) -> dict[str, Any]:
    return {
        "id": task.id, "position": task.position, "status": task.status, "attempts": task.attempts,
        "max_attempts": task.max_attempts, "charged": task.charged, "lost": task.lost,
        "progress": task.progress, "result": task.result,
        "error": task.error, "started_at": _iso(task.started_at), "finished_at": _iso(task.finished_at),
    }


async def read_json(request: Request) -> Any:
    body = await read_body(request, MAX_BODY_BYTES)
    if not body.strip():
        return {}
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise InvalidInput("the body is not valid UTF-8") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise MalformedJson(f"the body is not valid JSON: {exc}") from None


class MalformedJson(InvalidInput):
    pass


def _reject_constant(name: str) -> Any:
    raise MalformedJson(f"the body is not valid JSON: {name} is not a JSON number")


@guarded
async def create_run(request: Request) -> Response:
    t = tenure_of(request)
    try:
        data = await read_json(request)
    except BodyTooLarge as exc:
        return error(str(exc), 413)
    except MalformedJson as exc:
        return error(str(exc), 400)
    req = forms.parse_json(data)
    new_id = await run_in_threadpool(lambda: t.submit_run(req.count, req.kind, req.params, **req.submit_kwargs()))
    run = await run_in_threadpool(t.run, new_id)
    url = str(request.url_for("api_run", run_id=new_id))
    body = run_json(request, run)
    return JSONResponse(body, status_code=201, headers={"Location": url})


@guarded
async def list_runs(request: Request) -> Response:
    t = tenure_of(request)
    limit = _int_query(request, "limit", 20, 1, MAX_PAGE)
    offset = _int_query(request, "offset", 0, 0, 10**9)
    runs = await run_in_threadpool(lambda: t.runs(limit=limit, offset=offset))
    total = await run_in_threadpool(t.store.count_runs)
    return JSONResponse({"runs": [run_json(request, r) for r in runs], "total": total,
                         "limit": limit, "offset": offset})


@guarded
async def get_run(request: Request) -> Response:
    t = tenure_of(request)
    run, tasks = await run_in_threadpool(t.run_with_tasks, run_id(request))
    return JSONResponse({**run_json(request, run), "tasks": [task_json(task) for task in tasks]})


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
    return JSONResponse(SPEC)


def _int_query(request: Request, key: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{key} must be a whole number, got {raw[:40]!r}") from None
    if not lo <= value <= hi:
        raise InvalidInput(f"{key} must be between {lo} and {hi}, got {value}")
    return value


routes = [
    Route("/api/runs", create_run, methods=["POST"], name="api_create_run"),
    Route("/api/runs", list_runs, methods=["GET"], name="api_runs"),
    Route("/api/runs/{run_id:int}", get_run, methods=["GET"], name="api_run"),
    Route("/api/runs/{run_id:int}/cancel", cancel_run, methods=["POST"], name="api_cancel"),
    Route("/api/runs/{run_id:int}/retry", retry_run, methods=["POST"], name="api_retry"),
    Route("/healthz", healthz, methods=["GET"], name="healthz"),
    Route("/openapi.json", openapi, methods=["GET"], name="openapi"),
]
