"""HTML pages and the status fragment that HTMX polls.

Each handler parses its input, calls the engine, renders one template. The fragment answers
``304`` when the run's fingerprint (two cheap queries) matches the browser's ``ETag``; otherwise
it reads the run, its tiles and its attempt outcomes (a fixed number of queries, whatever the
run's size) and renders. A big run's page shows a map and one page of tiles (see :mod:`web.board`).
"""

from __future__ import annotations

import gzip
import hashlib
import math
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from service.errors import InvalidInput, NotFound, TenureError
from service.faces import summary
from service.storage.history import RunHistory
from service.storage.views import RunStatusView, RunView, TaskView
from service.task_process.protocol import kinds
from web import charts, forms, when
from web.board import STATUS, BadView, attempts_used, pages_of, parse_view, status_context, tile
from web.http import MAX_ID, BodyTooLarge, read_body, run_id, status_for, task_id, tenure_of
from web.shared import Answer, SharedAnswers, kept_for
from web.timeline import timeline

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["duration"] = summary.format_seconds
templates.env.filters["run_status"] = summary.run_status_words
templates.env.filters["local"] = when.local
HISTORY_PAGE = 15
RECENT_RUNS = 20  # bars of the home page's chart
FINAL_HISTORIES = 32  # finished runs whose pictures' history is kept in memory (see _history)
CHART_SHARE = 8  # a run's charts are shared 8× as long as its status answer (2 s under `tenure serve`)
MAX_FORM_BYTES = 16 * 1024

templates.env.globals["STATUS"] = STATUS


def error_page(request: Request, message: str, status: int, headers: Any = None) -> Response:
    return templates.TemplateResponse(request, "error.html", {"message": message, "status": status},
                                      status_code=status, headers=headers)


async def index(request: Request) -> Response:
    return await _render_index(request, {}, None, 200)


async def _render_index(request: Request, values: dict[str, Any], message: str | None, status: int) -> Response:
    t = tenure_of(request)
    page = _page(request)

    def read() -> tuple[list[RunView], list[RunView], int, list[RunView]]:
        live = t.store.list_runs(limit=50, live=True)
        history = t.store.list_runs(limit=HISTORY_PAGE, offset=(page - 1) * HISTORY_PAGE, live=False)
        return live, history, t.store.count_runs(), t.runs(limit=RECENT_RUNS)

    try:
        live, history, total, recent = await run_in_threadpool(read)
    except TenureError as exc:
        return error_page(request, str(exc), status_for(exc))
    context = {
        "live": live, "history": history, "page": page, "pages": max(1, math.ceil(total / HISTORY_PAGE)),
        "values": values, "message": message, "kinds": kinds(), "runs_chart": charts.runs_chart(recent),
    }
    return templates.TemplateResponse(request, "index.html", context, status_code=status)


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


async def create_run(request: Request) -> Response:
    t = tenure_of(request)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in FORM_TYPES:
        return error_page(request, f"this address takes the start page's form, not {media or 'a body without a type'};"
                                   " to start a run with JSON, POST it to /api/runs", 415)
    try:
        await read_body(request, MAX_FORM_BYTES)
    except BodyTooLarge:
        return error_page(request, f"the form is larger than {MAX_FORM_BYTES} bytes", 413)
    try:
        form: FormData = await request.form(max_files=0, max_fields=50)
    except Exception:  # noqa: BLE001 - any unreadable form body is the client's mistake
        return error_page(request, "the form could not be read; send it from the start page", 400)
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    try:  # planning may make 100,000 rows: off the event loop, as the JSON API does
        new_id = (await run_in_threadpool(lambda: t.start_run(forms.plan_form(form)))).id
    except InvalidInput as exc:
        return await _render_index(request, values, str(exc), 422)
    except TenureError as exc:
        return await _render_index(request, values, str(exc), status_for(exc))
    return RedirectResponse(request.url_for("run_page", run_id=new_id), status_code=303)


async def run_page(request: Request) -> Response:
    """The run's page; ``?status=failed&page=2`` picks a big run's tiles (400 or 404 for none such)."""
    t = tenure_of(request)
    try:
        view = parse_view(request.query_params)
        status = await run_in_threadpool(lambda: t.store.run_status(run_id(request), page=view.tile_page()))
        history = await _history(request, status)
        origin = await run_in_threadpool(lambda: t.store.fire_of(run_id=status.run.id))
        pages = pages_of(status, view)
        if view.page > pages:
            what = f"{view.status} tasks" if view.status else "tasks"
            raise BadView(f"there is no page {view.page} of run {status.run.id}'s {what}: "
                          f"there {'is' if pages == 1 else 'are'} {pages} (page 1 to {pages})", 404)
    except BadView as exc:
        return error_page(request, str(exc), exc.status)
    except TenureError as exc:
        return error_page(request, str(exc), status_for(exc))
    return templates.TemplateResponse(request, "run.html", status_context(request, status, view)
                                      | chart_context(request, history) | {"origin": origin})


async def _history(request: Request, status: RunStatusView) -> RunHistory:
    """The run's history for its pictures. A final run's never changes (a retry makes it live, and
    its ETag new), so the last FINAL_HISTORIES are kept: a finished 100,000-task run's page does not
    read half a second of history on every visit."""
    t = tenure_of(request)
    if not status.final:
        return await run_in_threadpool(t.run_history, status.run.id)
    kept: OrderedDict[tuple[int, str], RunHistory] | None = getattr(request.app.state, "final_histories", None)
    if kept is None:
        kept = request.app.state.final_histories = OrderedDict()
    key = (status.run.id, status.etag)
    if key in kept:
        kept.move_to_end(key)
        return kept[key]
    history = await run_in_threadpool(t.run_history, status.run.id)
    if not history.live:
        kept[key] = history
        while len(kept) > FINAL_HISTORIES:
            kept.popitem(last=False)
    return history


def chart_context(request: Request, history: RunHistory) -> dict[str, Any]:
    """What the timeline and the durations' histogram draw (see :mod:`web.timeline` and :mod:`web.charts`)."""
    tl = timeline(history)
    return {"charts": {
        "run_id": history.run_id, "live": history.live, "timeline": tl,
        "histogram": charts.histogram(history), "slowest": history.slowest, "truncated": history.truncated,
        "url": request.url_for("run_charts", run_id=history.run_id),
        # A run of tiles costs a few milliseconds to draw: its pictures keep closer to the tiles.
        "every_s": 5 if tl.grouped else 2,
    }}


async def run_charts(request: Request) -> Response:
    """The run's timeline and histogram; polled every 5 s while it is live, 304 when the browser has it.

    Its own read (:meth:`Tenure.run_history`, four to six statements at any size), never the status
    fragment's. Everyone asking for a run's charts within ``CHART_SHARE`` × the status TTL
    shares one read and render.
    """
    t = tenure_of(request)
    try:
        rid = run_id(request)
    except TenureError as exc:
        return Response(str(exc), status_code=status_for(exc), media_type="text/plain")

    def render() -> Answer:
        response = templates.TemplateResponse(request, "_charts.html", chart_context(request, t.run_history(rid)))
        body = bytes(response.body)
        return Answer(hashlib.sha256(body).hexdigest()[:20], 200, body, "text/html; charset=utf-8")

    async def compute() -> Answer:
        return await run_in_threadpool(render)

    state = request.app.state
    if getattr(state, "chart_answers", None) is None:
        state.chart_answers = SharedAnswers(CHART_SHARE * getattr(state, "fragment_ttl_s", 0.0))
    try:
        answer = await state.chart_answers.get(("charts", rid, str(request.base_url)), compute)
    except TenureError as exc:
        return Response(str(exc), status_code=status_for(exc), media_type="text/plain")
    headers = _fragment_headers(answer.etag)
    sent = [tag.strip().removeprefix("W/").strip('"') for tag in request.headers.get("if-none-match", "").split(",")]
    if answer.etag in sent:
        return Response(status_code=304, headers=headers)
    return Response(answer.body, headers=headers, media_type=answer.media_type)


async def runs_chart(request: Request) -> Response:
    """The home page's chart of recent runs, polled while one of them is live."""
    try:
        recent = await run_in_threadpool(tenure_of(request).runs, RECENT_RUNS)
    except TenureError as exc:
        return Response(str(exc), status_code=status_for(exc), media_type="text/plain")
    return templates.TemplateResponse(request, "_runs_chart.html", {"runs_chart": charts.runs_chart(recent)},
                                      headers={"Cache-Control": "no-cache"})


async def status_fragment(request: Request) -> Response:
    """The bar, the grid and the summary, or 304 when the browser's copy is current.

    One read of one snapshot computes the ETag and, only when it changed, everything else. The
    view (``?status=…&page=…``) is checked as the run page checks it, except that a page past
    the end answers an empty page: while the page polls, the tasks of a status may dwindle.
    """
    t = tenure_of(request)
    sent = [tag.strip().removeprefix("W/").strip('"') for tag in request.headers.get("if-none-match", "").split(",")]
    try:
        view = parse_view(request.query_params)
        rid = run_id(request)
    except BadView as exc:
        return Response(str(exc), status_code=exc.status, media_type="text/plain")
    except TenureError as exc:
        return Response(str(exc), status_code=status_for(exc), media_type="text/plain")
    shared = kept_for(request.app.state)
    key = (rid, view, str(request.base_url))

    def read(etag: str | None) -> RunStatusView:
        return t.store.run_status(rid, etag, page=view.tile_page())

    def render(status: RunStatusView) -> Answer:
        response = templates.TemplateResponse(request, "_status.html", status_context(request, status, view))
        body = bytes(response.body)
        return Answer(status.etag, response.status_code, body, "text/html; charset=utf-8",
                      gzip.compress(body, compresslevel=6, mtime=0))

    async def compute() -> Answer:
        return await run_in_threadpool(lambda: render(read(None)))

    try:
        answer = shared.fresh(key)
        etag = sent[0] if len(sent) == 1 and sent[0] else None
        if answer is None and etag is not None and shared.ttl_s == 0:
            status = await run_in_threadpool(read, etag)  # unshared: the cheap check first, two statements
            if not status.changed:
                return Response(status_code=304, headers=_fragment_headers(status.etag))
            answer = shared.put(key, await run_in_threadpool(render, status))
        elif answer is None:
            answer = await shared.get(key, compute)  # shared with whoever asks meanwhile
    except TenureError as exc:
        return Response(str(exc), status_code=status_for(exc), media_type="text/plain")
    headers = _fragment_headers(answer.etag)
    if answer.etag in sent:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", "") and len(answer.body) >= 1024:
        headers.update({"Content-Encoding": "gzip", "Vary": "HX-Request, Accept-Encoding"})
        return Response(answer.gzipped, status_code=answer.status_code, headers=headers, media_type=answer.media_type)
    return Response(answer.body, status_code=answer.status_code, headers=headers, media_type=answer.media_type)


def _fragment_headers(etag: str) -> dict[str, str]:
    return {"ETag": f'W/"{etag}"', "Cache-Control": "no-cache", "Vary": "HX-Request"}


async def run_task(request: Request) -> Response:
    """``/runs/{id}/tasks/{number}``: the page of a run's task by its number (from 1), as a big run's map links."""
    t = tenure_of(request)
    number = int(request.path_params["number"])
    try:
        rid = run_id(request)
        if not 1 <= number <= MAX_ID:
            raise NotFound(f"there is no task {number} in run {rid}: tasks are numbered from 1")
        found = await run_in_threadpool(t.store.task_at, rid, number - 1)
    except TenureError as exc:
        return error_page(request, str(exc), status_for(exc))
    return RedirectResponse(request.url_for("task_page", task_id=found.id), status_code=303)


async def cancel(request: Request) -> Response:
    return await _act(request, "cancel_run")


async def retry(request: Request) -> Response:
    return await _act(request, "retry_run")


async def _act(request: Request, verb: str) -> Response:
    t = tenure_of(request)
    try:
        rid = run_id(request)
        await run_in_threadpool(getattr(t, verb), rid)
    except TenureError as exc:
        return error_page(request, str(exc), status_for(exc))
    return RedirectResponse(request.url_for("run_page", run_id=rid), status_code=303)


async def task_page(request: Request) -> Response:
    t = tenure_of(request)
    try:
        detail = await run_in_threadpool(t.store.task_detail, task_id(request))
        origin = await run_in_threadpool(lambda: t.store.fire_of(task_id=detail.task.id))
    except TenureError as exc:
        return error_page(request, str(exc), status_for(exc))
    task = detail.task
    icon, label = STATUS.get(task.status, ("?", task.status))
    return templates.TemplateResponse(request, "task.html", {
        "task": task, "attempts": detail.attempts, "icon": icon, "label": label, "used": attempts_used(task),
        "pct": round(100 * task.progress), "now": detail.now, "final": task.terminal, "origin": origin,
        "scheduled": when.scheduled(task.scheduled_for, task.attempts > 0 or task.terminal, detail.now),
    })


async def tasks_page(request: Request) -> Response:
    t = tenure_of(request)
    page = _page(request)

    def read() -> tuple[list[TaskView], int, datetime]:
        found, total = t.store.single_tasks(limit=HISTORY_PAGE, offset=(page - 1) * HISTORY_PAGE)
        return found, total, t.store.database_now()

    try:
        found, total, now = await run_in_threadpool(read)
    except TenureError as exc:
        return error_page(request, str(exc), status_for(exc))
    return templates.TemplateResponse(request, "tasks.html", {
        "tasks": [tile(task, now) for task in found], "page": page,
        "pages": max(1, math.ceil(total / HISTORY_PAGE)), "total": total,
    })


def _page(request: Request) -> int:
    try:
        page = max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        page = 1
    return min(page, 10**6)


routes = [
    Route("/", index, methods=["GET"], name="index"),
    Route("/tasks", tasks_page, methods=["GET"], name="tasks_page"),
    Route("/tasks/{task_id:int}", task_page, methods=["GET"], name="task_page"),
    Route("/runs", create_run, methods=["POST"], name="create_run"),
    Route("/runs/{run_id:int}", run_page, methods=["GET"], name="run_page"),
    Route("/runs/{run_id:int}/status", status_fragment, methods=["GET"], name="status_fragment"),
    Route("/runs/{run_id:int}/charts", run_charts, methods=["GET"], name="run_charts"),
    Route("/charts/runs", runs_chart, methods=["GET"], name="runs_chart"),
    Route("/runs/{run_id:int}/tasks/{number:int}", run_task, methods=["GET"], name="run_task"),
    Route("/runs/{run_id:int}/cancel", cancel, methods=["POST"], name="cancel_run"),
    Route("/runs/{run_id:int}/retry", retry, methods=["POST"], name="retry_run"),
]
