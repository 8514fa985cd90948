"""``GET /metrics``: this process in Prometheus's text format (README "Metrics").

One scrape of ``tenure serve`` gives three parts, each from the prometheus-client library:

* the database's figures (:class:`service.supervisor.metrics.DatabaseCollector`), right across every worker;
* the embedded supervisor's own counters and histograms, if it runs one (not with ``--no-worker``);
* this web process's: the status fragment's latency (``tenure_status_fragment_seconds``, by
  answer code, so 304s and full renders show apart), and the ``process_*`` figures.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service.supervisor.metrics import Together

FRAGMENT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
TIMED_ROUTE = "status_fragment"  # the route whose latency is measured: the one every open run page polls


class WebMetrics:
    """The web process's own figures, in a registry of its own (an app's, not the global one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.fragment = Histogram("tenure_status_fragment_seconds", "How long the server took to answer a poll of a "
                                  "run's status fragment, by HTTP status code (304: unchanged)", ["code"],
                                  buckets=FRAGMENT_BUCKETS_S, registry=self.registry)
        ProcessCollector(registry=self.registry)
        self.database: Collector | None = None  # the database's figures, set once the lifespan opened it


def timed(routes: Iterable[BaseRoute], metrics: WebMetrics) -> list[BaseRoute]:
    """``routes`` with the status fragment's endpoint timed into ``metrics.fragment``."""
    out = []
    for route in routes:
        if isinstance(route, Route) and route.name == TIMED_ROUTE:
            route = Route(route.path, _timing(route.endpoint, metrics.fragment), methods=route.methods,
                          name=route.name)
        out.append(route)
    return out


Endpoint = Callable[[Request], Awaitable[Response]]


def _timing(endpoint: Endpoint, histogram: Histogram) -> Endpoint:
    async def timed_endpoint(request: Request) -> Response:
        started, code = time.perf_counter(), "500"
        try:
            response = await endpoint(request)
            code = str(response.status_code)
            return response
        finally:
            histogram.labels(code).observe(time.perf_counter() - started)

    return timed_endpoint


async def metrics(request: Request) -> Response:
    """The exposition in the format the scraper asks for (``Accept``), as prometheus-client's own
    server chooses it: OpenMetrics for Prometheus, else the classic text format 0.0.4."""
    state = request.app.state
    parts: list[Collector] = [state.web_metrics.registry]
    if state.web_metrics.database is not None:
        parts.append(state.web_metrics.database)
    if state.supervisor is not None:
        parts.append(state.supervisor.metrics.registry)
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    body = await run_in_threadpool(encode, Together(*parts))  # the database's read blocks: off the event loop
    return Response(body, headers={"Content-Type": content_type})


routes = [Route("/metrics", metrics, methods=["GET"], name="metrics")]
