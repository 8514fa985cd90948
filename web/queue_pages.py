"""The queues page: each queue's depth, running against its limit, rate, oldest wait, and its pause button.

Pause and resume are forms that POST and come back here (303), so they work without JavaScript;
a run's page has its own pause and resume beside cancel (the routes are here, the buttons in
``_actions.html``). The page renders what the database says when it is loaded: no polling.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from service.errors import TenureError
from service.faces import summary
from service.storage.flow import QueueView
from web.http import status_for, tenure_of
from web.pages import _act, error_page, templates
from web.queues_api import queue_name

VERBS = ("pause", "resume")
_ANCHOR = datetime(2000, 1, 1)  # any instant: only the span is said


def wait_words(seconds: float | None) -> str:
    """"3 min", "40 s", "2 days" (as :func:`summary.starts_in` says a span); "—" for nothing waiting."""
    if seconds is None:
        return "—"
    if seconds < 0.5:
        return "under 1 s"
    return summary.starts_in(_ANCHOR - timedelta(seconds=seconds), _ANCHOR, past="{}")


def queue_row(q: QueueView) -> dict[str, Any]:
    """One queue as the page says it: never by colour alone, so a state has its words too."""
    full = q.concurrency is not None and q.running >= q.concurrency
    return {
        "q": q, "full": full,
        "running": f"{q.running} / {q.concurrency}" if q.concurrency is not None else str(q.running),
        "limit": "its limit" if q.concurrency is not None else "no limit",
        "rate": q.rate or "—", "oldest": wait_words(q.oldest_wait_s),
        "later": q.waiting - q.due,  # held back until a start time, or a retry's
    }


async def queues_page(request: Request) -> Response:
    try:
        found = await run_in_threadpool(tenure_of(request).queues)
    except TenureError as exc:
        return error_page(request, str(exc), status_for(exc))
    return templates.TemplateResponse(request, "queues.html", {"queues": [queue_row(q) for q in found]})


async def act(request: Request) -> Response:
    """Pause or resume a queue; back to the page, at the queue."""
    verb = request.path_params["verb"]
    if verb not in VERBS:
        return error_page(request, "there is nothing at this address", 404)
    t = tenure_of(request)
    try:
        name = queue_name(request)
        await run_in_threadpool(getattr(t, f"{verb}_queue"), name)
    except TenureError as exc:
        return error_page(request, str(exc), status_for(exc))
    return RedirectResponse(str(request.url_for("queues_page")) + f"#queue-{name}", status_code=303)


async def pause_run(request: Request) -> Response:
    return await _act(request, "pause_run")


async def resume_run(request: Request) -> Response:
    return await _act(request, "resume_run")


routes = [
    Route("/queues", queues_page, methods=["GET"], name="queues_page"),
    Route("/queues/{name}/{verb:str}", act, methods=["POST"], name="queue_action"),
    Route("/runs/{run_id:int}/pause", pause_run, methods=["POST"], name="pause_run"),
    Route("/runs/{run_id:int}/resume", resume_run, methods=["POST"], name="resume_run"),
]
