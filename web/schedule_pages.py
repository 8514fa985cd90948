"""The schedules page: every schedule in words, its next fire times, its latest fires, its buttons.

Times of a schedule are shown in its own zone ("2026-12-04 02:00 CET"), as its expression
means them, with how far away they are by the database's clock. Pause, resume, fire now and
delete are forms that POST and come back here (303), so they work without JavaScript.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from service.errors import InvalidInput, TenureError
from service.faces.schedules import plan_schedule
from service.storage.schedules import FireView, ScheduleView
from service.task_process.protocol import kinds
from web import when
from web.board import STATUS
from web.http import BodyTooLarge, read_body, status_for, tenure_of
from web.pages import FORM_TYPES, MAX_FORM_BYTES, error_page, templates
from web.schedules_api import _call, schedule_ref, starts

OUTCOMES = {  # fire outcome → (icon, what it means); never colour alone
    "fired": ("▶", "fired"),
    "queued": ("…", "queued behind the previous fire"),
    "skipped": ("⤼", "skipped"),
    "missed": ("○", "missed"),
    "failed": ("✗", "could not start"),
}
VERBS = ("pause", "resume", "fire", "delete")
RUN_STATUS = {"running": "▶", "completed": "✓", "cancelled": "⊘", "deleting": "⌫"}


def fire_row(request: Request, fire: FireView, timezone: str, now: datetime) -> dict[str, Any]:
    """One fire as the page says it: what it stands for, what came of it, and why."""
    icon, words = OUTCOMES.get(fire.outcome, ("?", fire.outcome))
    if fire.slot_at is None:
        slot = "fired by hand"
    elif fire.slots > 1 and fire.last_slot_at is not None:
        slot = f"{fire.slots} slots, {when.local(fire.slot_at, timezone)} to {when.local(fire.last_slot_at, timezone)}"
    else:
        slot = when.local(fire.slot_at, timezone)
    work = None
    if fire.run_id is not None:
        work = {"text": f"run #{fire.run_id}", "url": request.url_for("run_page", run_id=fire.run_id),
                "icon": RUN_STATUS.get(fire.status or "", "?")}
    elif fire.task_id is not None:
        work = {"text": f"task {fire.task_id}", "url": request.url_for("task_page", task_id=fire.task_id),
                "icon": STATUS.get(fire.status or "", ("?", ""))[0]}
    reason = None if fire.reason == slot else fire.reason  # "fired by hand" is said once
    return {"f": fire, "icon": icon, "words": words, "slot": slot, "work": work, "reason": reason,
            "ago": when.starts_in(fire.fired_at, now)}


def schedule_row(request: Request, view: ScheduleView, now: datetime) -> dict[str, Any]:
    what = starts(view)
    if view.target == "task":
        target = f"one {view.kind} task" + (f" with {json.dumps(what['args'])}" if what.get("args") else "")
    else:
        target = f"a run of {what.get('total')} {view.kind} tasks"
    return {
        "s": view, "target": target,
        "upcoming": [(when.local(at, view.timezone), when.starts_in(at, now)) for at in view.upcoming],
        "fires": [fire_row(request, f, view.timezone, now) for f in view.fires],
        "policies": f"catch-up {view.catch_up}" + (f" (at most {view.catch_up_max})" if view.catch_up == "all" else "")
                    + f" · overlap {view.overlap} · grace {view.grace_s:g} s",
    }


async def schedules_page(request: Request) -> Response:
    return await _render(request, {}, None, 200)


async def _render(request: Request, values: dict[str, Any], message: str | None, status: int) -> Response:
    t = tenure_of(request)
    try:
        found, now = await run_in_threadpool(lambda: (t.schedules(), t.store.database_now()))
    except TenureError as exc:
        return error_page(request, str(exc), status_for(exc))
    return templates.TemplateResponse(request, "schedules.html", {
        "schedules": [schedule_row(request, v, now) for v in found], "now": now, "values": values,
        "message": message, "kinds": kinds(),
    }, status_code=status)


def plan_form(form: dict[str, str]) -> dict[str, Any]:
    """The create form's text as a schedule's row. Raises InvalidInput naming the field."""
    kind = form.get("kind", "")
    if form.get("target") == "run":
        count = form.get("count", "")
        if not count.isdigit():
            raise InvalidInput(f"count must be a whole number of tasks for each run, got {count[:20]!r}")
        target: dict[str, Any] = {"run": {"kind": kind, "count": int(count), "params": _json(form, "args")}}
    else:
        target = {"task": {"kind": kind, "args": _json(form, "args")}}
    return plan_schedule(form.get("name", ""), form.get("cron", ""), timezone=form.get("timezone", "") or "UTC",
                         catch_up=form.get("catch_up", "latest"), overlap=form.get("overlap", "skip"), **target)


def _json(form: dict[str, str], field: str) -> dict[str, Any]:
    text = form.get(field, "").strip() or "{}"
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"{field} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f'{field} must be a JSON object such as {{"x": 1}}')
    return value


async def _form(request: Request) -> dict[str, str] | Response:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in FORM_TYPES:
        return error_page(request, "this address takes the schedules page's forms; the JSON API is "
                                   "/api/schedules", 415)
    try:
        await read_body(request, MAX_FORM_BYTES)
        form: FormData = await request.form(max_files=0, max_fields=50)
    except BodyTooLarge:
        return error_page(request, f"the form is larger than {MAX_FORM_BYTES} bytes", 413)
    except Exception:  # noqa: BLE001 - any unreadable form body is the client's mistake
        return error_page(request, "the form could not be read; send it from the schedules page", 400)
    return {k: v.strip() for k, v in form.items() if isinstance(v, str)}


async def create(request: Request) -> Response:
    form = await _form(request)
    if isinstance(form, Response):
        return form
    t = tenure_of(request)
    try:
        made = await run_in_threadpool(lambda: t.store.create_schedule(plan_form(form)))
    except TenureError as exc:
        return await _render(request, form, str(exc), status_for(exc))
    return RedirectResponse(str(request.url_for("schedules_page")) + f"#schedule-{made}", status_code=303)


async def act(request: Request) -> Response:
    """Pause, resume, fire now or delete; back to the page (at the schedule, unless deleted)."""
    verb = request.path_params["verb"]
    if verb not in VERBS:
        return error_page(request, "there is nothing at this address", 404)
    t = tenure_of(request)
    try:
        view = await run_in_threadpool(_call, t, "schedule", schedule_ref(request))
        await run_in_threadpool(getattr(t, f"{verb}_schedule"), view.id)
    except TenureError as exc:
        return error_page(request, str(exc), status_for(exc))
    anchor = "" if verb == "delete" else f"#schedule-{view.id}"
    return RedirectResponse(str(request.url_for("schedules_page")) + anchor, status_code=303)


routes = [
    Route("/schedules", schedules_page, methods=["GET"], name="schedules_page"),
    Route("/schedules", create, methods=["POST"], name="create_schedule"),
    Route("/schedules/{ref}/{verb:str}", act, methods=["POST"], name="schedule_action"),
]
