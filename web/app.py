"""The Starlette app factory. Its lifespan opens the database and runs the embedded supervisor.

``GET /metrics`` (:mod:`web.metrics`) exposes the database's figures, the embedded supervisor's
and this process's, the status fragment's latency among them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

import service
from service.config import Settings
from service.supervisor.metrics import DatabaseCollector
from web import api, guard, http, metrics, pages, queue_pages, queues_api, schedule_pages, schedules_api

log = logging.getLogger("tenure.web")
HERE = Path(__file__).resolve().parent


def create_app(
    db: str | None = None,
    *,
    supervise: bool = True,
    settings: Settings | None = None,
    allowed_hosts: Iterable[str] = (),
    allowed_origins: Iterable[str] = (),
    fragment_ttl_s: float = 0.0,
) -> Starlette:
    """The web app over the database ``db`` (URL or path; default TENURE_DB, then ./tenure.db).

    With ``supervise`` an embedded supervisor runs tasks in this process, started and stopped
    by the lifespan; without it the app only shows what separate ``tenure worker``s do.
    ``allowed_hosts`` and ``allowed_origins`` add to the defaults of :mod:`web.guard`.
    ``fragment_ttl_s`` shares one status answer among everyone polling a run (:mod:`web.shared`);
    ``tenure serve`` sets 0.25 s, the default 0 shows every poll the database as it is.
    """
    hosts = [*guard.DEFAULT_HOSTS, *guard.from_env("TENURE_ALLOWED_HOSTS"), *allowed_hosts]
    origins = [*guard.from_env("TENURE_ALLOWED_ORIGINS"), *allowed_origins]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        t = service.open(db)
        app.state.tenure = t
        app.state.big_bodies = http.BigBodies()
        chosen = settings or Settings.from_env()
        web_metrics.database = DatabaseCollector(t.engine, alive_within_s=chosen.lease_ttl_s)
        app.state.supervisor = t.start_supervisor(chosen) if supervise else None
        try:
            yield
        finally:
            if app.state.supervisor is not None:
                app.state.supervisor.stop()
            t.close()

    web_metrics = metrics.WebMetrics()
    routes = [
        *metrics.timed(pages.routes, web_metrics),
        *schedule_pages.routes,
        *queue_pages.routes,
        *api.routes,
        *schedules_api.routes,
        *queues_api.routes,
        *metrics.routes,
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(guard.Guard, hosts=hosts, origins=origins),
                                Middleware(GZipMiddleware, minimum_size=1024)],
                    exception_handlers={HTTPException: http_error, 500: server_error})
    app.state.fragment_ttl_s = fragment_ttl_s
    app.state.web_metrics = web_metrics
    return app


def wants_json(path: str) -> bool:
    return path.startswith("/api") or path in ("/healthz", "/openapi.json")


async def http_error(request: Request, exc: Exception) -> Response:
    """404, 405 and friends: JSON under /api and for /healthz, a readable page elsewhere."""
    assert isinstance(exc, HTTPException)
    message = {404: "there is nothing at this address", 405: f"{request.method} is not allowed here"}.get(
        exc.status_code, str(exc.detail))
    if wants_json(request.url.path):
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)
    return pages.error_page(request, message, exc.status_code, headers=exc.headers)


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("web.error path=%s", request.url.path, exc_info=exc)
    message = "tenure hit an internal error; the log has the details"
    if wants_json(request.url.path):
        return JSONResponse({"error": message}, status_code=500)
    return pages.error_page(request, message, 500)
