"""The schedules' JSON API: list, create, read, page through fires, pause, resume, fire now, delete.

A path names a schedule by its id or its name (``/api/schedules/nightly``); digits are read as
an id first, then as a name. Bodies are checked by :mod:`web.schedule_schemas`, then planned by
:func:`service.faces.schedules.plan_schedule`, whose errors name the field (422).
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.errors import NotFound
from service.faces.schedules import plan_schedule
from service.storage.schedules import FireView, ScheduleView
from service.validation import check
from web import schedule_schemas, schemas
from web.api import _iso, _object, check_media, guarded, parse_json
from web.http import MAX_ID, read_body, tenure_of

MAX_SCHEDULE_BODY_BYTES = 1024 * 1024  # a schedule of a run of explicit tasks holds them all
REF_CHARS = 200


def schedule_ref(request: Request) -> int | str:
    """The ``{ref}`` path parameter: an id when it is digits (and in range), else a name."""
    ref = str(request.path_params["ref"])
    if ref.isascii() and ref.isdigit() and len(ref) <= 10 and int(ref) <= MAX_ID:
        return int(ref)
    if not ref.strip() or len(ref) > REF_CHARS:
        raise NotFound(f"no schedule {ref[:60]}")
    return ref


def _call(t: Any, verb: str, ref: int | str) -> Any:
    """``t.verb(ref)``; a name made of digits that is no schedule's id is tried as a name."""
    try:
        return getattr(t, verb)(ref)
    except NotFound:
        if isinstance(ref, int):
            return getattr(t, verb)(str(ref))
        raise


def work_url(request: Request, run_id: int | None, task_id: int | None) -> str | None:
    if run_id is not None:
        return str(request.url_for("run_page", run_id=run_id))
    if task_id is not None:
        return str(request.url_for("task_page", task_id=task_id))
    return None


def fire_json(request: Request, fire: FireView) -> dict[str, Any]:
    return {
        "id": fire.id, "schedule_id": fire.schedule_id, "slot_at": _iso(fire.slot_at), "slots": fire.slots,
        "last_slot_at": _iso(fire.last_slot_at), "outcome": fire.outcome, "catch_up": fire.catch_up,
        "reason": fire.reason, "fired_at": _iso(fire.fired_at), "run_id": fire.run_id, "task_id": fire.task_id,
        "status": fire.status, "url": work_url(request, fire.run_id, fire.task_id),
    }


def starts(view: ScheduleView) -> dict[str, Any]:
    """What each slot starts, without a big run's every row."""
    if view.target == "task":
        row = view.spec.get("row", {})
        return {k: row.get(k) for k in ("kind", "args", "label", "max_attempts", "timeout_s", "memory_limit_mb")}
    return {k: view.spec.get(k) for k in ("kind", "total", "params", "name", "on_complete")}


def schedule_json(request: Request, view: ScheduleView) -> dict[str, Any]:
    return {
        "id": view.id, "name": view.name, "cron": view.cron, "timezone": view.timezone,
        "description": view.description, "target": view.target, "kind": view.kind, "starts": starts(view),
        "catch_up": view.catch_up, "catch_up_max": view.catch_up_max, "overlap": view.overlap,
        "grace_s": view.grace_s, "paused": view.paused, "origin": view.origin,
        "next_slot_at": _iso(view.next_slot_at), "upcoming": [_iso(at) for at in view.upcoming],
        "waiting": view.waiting, "created_at": _iso(view.created_at), "updated_at": _iso(view.updated_at),
        "fires": [fire_json(request, f) for f in view.fires],
        "url": f"{request.url_for('schedules_page')}#schedule-{view.id}",
    }


def plan_body(data: Any) -> dict[str, Any]:
    """A schedule's body, checked by its model, as the values of its row. Raises InvalidInput."""
    body = _object(data, '{"name": "nightly", "cron": "0 2 * * *", "task": {"kind": "echo"}}')
    request = check(schedule_schemas.request_model(schemas.catalog()), body)
    values = request.model_dump(exclude={"name", "cron", "task", "run"})
    for which in ("task", "run"):
        part = getattr(request, which)
        if part is not None:
            values[which] = part.model_dump(exclude_none=True)
    return plan_schedule(request.name, request.cron, **values)  # type: ignore[attr-defined]


@guarded
async def schedules(request: Request) -> Response:
    t = tenure_of(request)
    if request.method == "POST":
        check_media(request)
        body = await read_body(request, MAX_SCHEDULE_BODY_BYTES)
        values = await run_in_threadpool(lambda: plan_body(parse_json(body)))
        view = await run_in_threadpool(lambda: t.store.schedule(t.store.create_schedule(values)))
        url = str(request.url_for("api_schedule", ref=str(view.id)))
        return JSONResponse(schedule_json(request, view), status_code=201, headers={"Location": url})
    found = await run_in_threadpool(t.schedules)
    return JSONResponse({"schedules": [schedule_json(request, v) for v in found]})


@guarded
async def one(request: Request) -> Response:
    t, ref = tenure_of(request), schedule_ref(request)
    if request.method == "DELETE":
        view = await run_in_threadpool(_call, t, "schedule", ref)
        await run_in_threadpool(t.delete_schedule, view.id)
        return JSONResponse({"deleted": view.name})
    return JSONResponse(schedule_json(request, await run_in_threadpool(_call, t, "schedule", ref)))


@guarded
async def fires(request: Request) -> Response:
    t, ref = tenure_of(request), schedule_ref(request)
    page = check(schedule_schemas.FirePage, dict(request.query_params), strict=False)
    view = await run_in_threadpool(_call, t, "schedule", ref)
    found = await run_in_threadpool(
        lambda: t.store.schedule_fires(view.id, limit=page.limit, before_id=page.before or None))
    return JSONResponse({"fires": [fire_json(request, f) for f in found]})


@guarded
async def pause(request: Request) -> Response:
    view = await run_in_threadpool(_call, tenure_of(request), "pause_schedule", schedule_ref(request))
    return JSONResponse(schedule_json(request, view))


@guarded
async def resume(request: Request) -> Response:
    view = await run_in_threadpool(_call, tenure_of(request), "resume_schedule", schedule_ref(request))
    return JSONResponse(schedule_json(request, view))


@guarded
async def fire(request: Request) -> Response:
    t = tenure_of(request)
    view = await run_in_threadpool(_call, t, "schedule", schedule_ref(request))
    fired = await run_in_threadpool(t.fire_schedule, view.id)
    after = await run_in_threadpool(t.schedule, view.id)
    return JSONResponse({"outcome": fired.outcome, "run_id": fired.run_id, "task_id": fired.task_id,
                         "url": work_url(request, fired.run_id, fired.task_id),
                         "schedule": schedule_json(request, after)})


routes = [
    Route("/api/schedules", schedules, methods=["GET", "POST"], name="api_schedules"),
    Route("/api/schedules/{ref}", one, methods=["GET", "DELETE"], name="api_schedule"),
    Route("/api/schedules/{ref}/fires", fires, methods=["GET"], name="api_schedule_fires"),
    Route("/api/schedules/{ref}/pause", pause, methods=["POST"], name="api_schedule_pause"),
    Route("/api/schedules/{ref}/resume", resume, methods=["POST"], name="api_schedule_resume"),
    Route("/api/schedules/{ref}/fire", fire, methods=["POST"], name="api_schedule_fire"),
]
