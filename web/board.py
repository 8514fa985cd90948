"""What the run page shows of a run's status, whatever its size.

A run of up to ``TILES_UP_TO`` tasks shows one tile per task, as it always has. A bigger one
shows a *map* instead, one small cell per task painted in the browser from a string of one
letter per task (no markup per task), and one page of ``TILE_PAGE`` tiles, of every task or
of one status ("the 12 failed"), each tile linking to its task's page.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.datastructures import URL, QueryParams
from starlette.requests import Request

from service.faces import summary
from service.storage.views import CELL, RunStatusView, RunView, TaskView, TilePage
from web import when

TILES_UP_TO = 500  # runs of up to this many tasks show every tile
TILE_PAGE = 100  # tiles on one page of a bigger run
MAX_OFFSET = 10**9  # past any run (100,000 tasks at most): a page beyond is empty, not an overflow

STATUS = {  # status → (icon, label); colour comes from CSS, never alone
    "queued": ("·", "queued"),
    "running": ("▶", "running"),
    "retrying": ("↻", "retrying"),
    "succeeded": ("✓", "succeeded"),
    "failed": ("✗", "failed"),
    "cancelled": ("⊘", "cancelled"),
}
FILTER_ORDER = ("failed", "running", "retrying", "queued", "succeeded", "cancelled")
PLAIN_ERRORS = ("PermanentError: ", "TransientError: ")  # a tile's reason line shows what follows


class BadView(Exception):
    """The query asks for a view of a run that does not exist; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class View:
    """Which tiles of a big run a reader asked for (``?status=failed&page=2``)."""

    status: str | None = None  # None: tasks of every status
    page: int = 1

    def tile_page(self) -> TilePage:
        offset = min((self.page - 1) * TILE_PAGE, MAX_OFFSET)
        return TilePage(over=TILES_UP_TO, status=self.status, limit=TILE_PAGE, offset=offset)

    def query(self, **changes: Any) -> dict[str, str]:
        status, page = changes.get("status", self.status), changes.get("page", self.page)
        params = {"status": status} if status else {}
        if page != 1:
            params["page"] = str(page)
        return params


def parse_view(query: QueryParams) -> View:
    """``status`` (one task status, or absent or ``all`` for every task) and ``page`` (from 1).

    Raises:
        BadView: (400) an unknown status, or a page that is not a whole number from 1.
    """
    status = query.get("status", "").strip().lower() or None
    if status == "all":
        status = None
    if status is not None and status not in STATUS:
        shown = query.get("status", "")[:40]
        raise BadView(f"there is no task status {shown!r}: show one of {', '.join(STATUS)}, "
                      "or leave status out for every task", 400)
    raw = query.get("page", "1").strip()
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise BadView(f"page must be a whole number from 1, got {raw[:40]!r}", 400)
    return View(status, min(int(raw), MAX_OFFSET))


def pages_of(status: RunStatusView, view: View) -> int:
    """How many pages of tiles the view has (1 for a run that shows every tile, and for none)."""
    if status.compact is None:
        return 1
    run = status.run
    matched = run.total if view.status is None else run.counts.get(view.status, 0)
    return max(1, math.ceil(matched / TILE_PAGE))


def status_context(request: Request, status: RunStatusView, view: View | None = None) -> dict[str, Any]:
    """Everything the bar, the grid (or map) and the summary show, from one snapshot."""
    view = view or View()
    run, tasks, now = status.run, status.tasks or [], status.now
    compact = status.compact
    if compact is not None:
        running = compact.running
    else:
        running = [(task.progress, task.started_at) for task in tasks if task.status == "running"]
    progress = summary.progress_of(run, running, now)
    ended = None
    if not run.live:
        if compact is not None:
            ended = summary.summarize_grouped(run, compact.errors, compact.slowest, status.outcomes or {})
        else:
            ended = summary.summarize(run, tasks, status.outcomes or {})
    counts = run.counts
    total = max(run.total, 1)
    running_share = sum(done for done, _ in running)
    shares = {
        "succeeded": 100 * counts["succeeded"] / total,
        "failed": 100 * counts["failed"] / total,
        "cancelled": 100 * counts["cancelled"] / total,  # its own colour: a person stopped them, nothing broke
        "running": 100 * running_share / total,
    }
    status_url = request.url_for("status_fragment", run_id=run.id).include_query_params(**view.query())
    context = {
        "run": run, "tasks": [tile(task, now) for task in tasks], "progress": progress, "shares": shares,
        "summary": ended, "hook": status.hook, "title": page_title(run), "final": status.final,
        "status_url": status_url, "compact": compact is not None,
        "scheduled": when.scheduled(run.scheduled_for, bool(run.done or running), now) if run.live else None,
        "waiting": summary.waiting(status.ahead, status.workers, status.held),
    }
    if compact is not None:
        context.update(map_context(request, status, view))
    return context


def map_context(request: Request, status: RunStatusView, view: View) -> dict[str, Any]:
    """A big run's map, its status filters and its pager."""
    assert status.compact is not None
    run = status.run
    page_url = request.url_for("run_page", run_id=run.id)
    pages = pages_of(status, view)

    def link(**changes: Any) -> URL:
        return page_url.replace_query_params(**view.query(**changes))

    filters = [{"label": "all", "icon": "", "count": run.total, "url": link(status=None, page=1),
                "current": view.status is None}]
    for name in FILTER_ORDER:
        if run.counts.get(name, 0) or name == view.status:
            icon, label = STATUS[name]
            filters.append({"label": label, "icon": icon, "count": run.counts.get(name, 0),
                            "url": link(status=name, page=1), "current": view.status == name})
    matched = run.total if view.status is None else run.counts.get(view.status, 0)
    first = (view.page - 1) * TILE_PAGE + 1
    return {
        "cells": status.compact.cells, "codes": json.dumps({letter: name for name, letter in CELL.items()}),
        "map_label": map_label(run), "filters": filters, "view": view, "page": view.page, "pages": pages,
        "matched": matched, "first": first, "last": min(matched, first + TILE_PAGE - 1),
        "prev_url": link(page=view.page - 1) if view.page > 1 else None,
        "next_url": link(page=view.page + 1) if view.page < pages else None,
        "last_url": link(page=pages), "task_url": request.url_for("run_task", run_id=run.id, number=0),
    }


def map_label(run: RunView) -> str:
    """The map's text alternative: what its colours and shapes say, in words."""
    parts = [f"{run.counts[name]:,} {STATUS[name][1]}" for name in FILTER_ORDER if run.counts.get(name, 0)]
    return f"{run.total:,} tasks, one cell each in order: " + ", ".join(parts)


def page_title(run: RunView) -> str:
    c = run.counts
    label = run.name or f"run {run.id}"
    state = "" if run.live else f" · {summary.run_status_words(run.status)}"
    return f"{c['succeeded']}/{run.total} ✓ {c['failed']} ✗{state} · {label} · tenure"


def tile(task: TaskView, now: datetime) -> dict[str, Any]:
    icon, label = STATUS.get(task.status, ("?", task.status))
    duration = None
    if task.started_at is not None:
        duration = ((task.finished_at or now) - task.started_at).total_seconds()
    waiting = None
    if task.status == "retrying" and task.next_attempt_at is not None:
        waiting = max(0.0, (task.next_attempt_at - now).total_seconds())
    said, shown = reason(task)
    return {"t": task, "icon": icon, "label": label, "pct": round(100 * task.progress), "number": task.position + 1,
            "name": task.label or f"task {task.position + 1}",
            "duration": duration, "retry_in": waiting, "used": attempts_used(task),
            # Retries of a failing task: charged attempts that another attempt followed.
            "retries": max(0, task.charged - (1 if task.status == "failed" else 0)),
            "reason_said": said, "reason": shown}


def reason(task: TaskView) -> tuple[str, str]:
    """A failed or retrying tile's one line: (what only a screen reader hears first, what is shown).

    The shown part drops tenure's own exception names, which the tile's status already says
    ("PermanentError: quota exceeded" shows "quota exceeded"); the two together are the whole error.
    """
    if task.error is None or task.status not in ("failed", "retrying"):
        return "", ""
    for prefix in PLAIN_ERRORS:
        if task.error.startswith(prefix) and len(task.error) > len(prefix):
            return prefix, task.error[len(prefix):]
    return "", task.error


def attempts_used(task: TaskView) -> str:
    """"attempt 2 of 3, re-run 1× after a crash (not counted)": crash re-runs are not attempts used."""
    if task.attempts == 0:
        return f"not started yet, {task.max_attempts} attempts allowed"
    ended_charged = task.status == "failed" and task.charged > 0
    text = f"attempt {task.charged + (0 if ended_charged else 1)} of {task.max_attempts}"
    if task.lost:
        text += f", re-run {task.lost}× after a crash (not counted)"
    return text
