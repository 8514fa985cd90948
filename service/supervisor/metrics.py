"""Prometheus metrics: what one process did, and what the database holds (README "Metrics").

Two kinds of figure, kept apart so that a scrape of every process adds up:

* **Per process** (:class:`SupervisorMetrics`): counters and histograms of what *this*
  supervisor did — attempts it started and ended, how long they ran, how long their tasks had
  waited, leases it reaped, how late its heartbeats were. Each supervisor has a
  ``CollectorRegistry`` of its own (never the global one), so several supervisors in one
  process, or in one test run, never mix. Summed over every process, they are the cluster's.
* **From the database** (:class:`DatabaseCollector`): tasks by status and kind, attempts by
  outcome, runs by status, supervisors alive, the oldest due task's wait. Read at scrape time in
  one snapshot (:mod:`service.storage.gauges`), right however many workers there are: expose
  them from one process only (``tenure serve``, or one ``tenure worker --metrics-db``).

Observations are a lookup and an add under a lock (about a microsecond); nothing here touches
the database on a task's path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from service.errors import InvalidInput, TenureError
from service.storage.gauges import Figures, Gauges
from service.storage.models import Outcome, RunStatus, TaskStatus

log = logging.getLogger("tenure.metrics")

DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
WAIT_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
LAG_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60)
DB_FRESH_S = 5.0  # a database read is shared by every scrape for this long at least
DB_COST_SHARE = 20  # ... and for this many times what the last read took, so reads cost at most 1/20 of a core


class SupervisorMetrics:
    """What one supervisor did, in a registry of its own (``self.registry``).

    ``running`` is called at scrape time for the attempts in flight; ``monotonic`` is the
    supervisor's clock (heartbeat lag and age are judged on it, never on a wall clock).
    """

    def __init__(self, monotonic: Callable[[], float], running: Callable[[], int], concurrency: int) -> None:
        self.registry = r = CollectorRegistry()
        self._mono = monotonic
        self._started = Counter("tenure_attempts_started", "Attempts this process claimed and started, by kind",
                                ["kind"], registry=r)
        self._ended = Counter("tenure_attempts_finished", "Attempts this process ended, by kind and outcome "
                              "(cancelled ones are ended by whoever cancels; see tenure_attempts)",
                              ["kind", "outcome"], registry=r)
        self._duration = Histogram("tenure_attempt_duration_seconds", "How long the attempts this process ended "
                                   "ran, from the start of their code to their end, by kind and outcome",
                                   ["kind", "outcome"], buckets=DURATION_BUCKETS_S, registry=r)
        self._wait = Histogram("tenure_queue_wait_seconds", "How long tasks waited from submission to their first "
                               "claim, by the database's clock, for the tasks this process claimed, by kind",
                               ["kind"], buckets=WAIT_BUCKETS_S, registry=r)
        self._reaped = Counter("tenure_leases_reaped", "Leases of other supervisors this process took back, "
                               "each attempt ending lost: why=silent (no heartbeat for a lease TTL), dead (its "
                               "process is gone, same host), orphaned (held but untracked)", ["why"], registry=r)
        self._lease_lost = Counter("tenure_leases_lost", "Attempts this process stopped because their lease was "
                                   "gone (cancelled, or reclaimed by another supervisor)", ["kind"], registry=r)
        self._judged_dead = Counter("tenure_supervisor_judged_dead", "Times this supervisor found at its heartbeat "
                                    "that others had judged it dead (or its row was deleted), and registered again",
                                    registry=r)
        self._lag = Histogram("tenure_heartbeat_lag_seconds", "How late each heartbeat of this supervisor came: "
                              "the time since its previous one beyond the heartbeat interval",
                              buckets=LAG_BUCKETS_S, registry=r)
        Gauge("tenure_heartbeat_age_seconds", "Seconds since this supervisor's last heartbeat went through",
              registry=r).set_function(lambda: 0.0 if self._beat_at is None else self._mono() - self._beat_at)
        Gauge("tenure_running_attempts", "Attempts in flight in this process", registry=r).set_function(running)
        Gauge("tenure_concurrency", "Attempts this process runs at once at most", registry=r).set(concurrency)
        self._fires = Counter("tenure_schedule_fires", "Slots of schedules this process handled, by schedule and "
                              "outcome (fired, queued, skipped, missed) and whether it was a catch-up",
                              ["schedule", "outcome", "catch_up"], registry=r)
        self._fire_lag = Histogram("tenure_schedule_fire_lag_seconds", "From a slot's time to the creation of its "
                                   "task or run, by the database's clock, by schedule", ["schedule"],
                                   buckets=WAIT_BUCKETS_S, registry=r)
        self._beat_at: float | None = None
        self._interval_s = 0.0
        # Labelled children, looked up once: (kind, outcome) for ends, (kind, "") for starts.
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def started(self, kind: str, waited_s: float | None) -> None:
        """An attempt was claimed; ``waited_s`` since its task's submission, for a first attempt."""
        children = self._children.get((kind, ""))
        if children is None:
            children = self._children[(kind, "")] = (self._started.labels(kind), self._wait.labels(kind))
        children[0].inc()
        if waited_s is not None:
            children[1].observe(max(0.0, waited_s))

    def ended(self, kind: str, outcome: Outcome | str, ran_s: float) -> None:
        """This process wrote an attempt's end."""
        key = (kind, str(outcome))
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self._ended.labels(*key), self._duration.labels(*key))
        children[0].inc()
        children[1].observe(max(0.0, ran_s))

    def fired(self, schedule: str, outcome: str, catch_up: bool, slots: int, lag_s: float | None) -> None:
        """This process handled ``slots`` slots of a schedule in one transaction."""
        self._fires.labels(schedule, outcome, "true" if catch_up else "false").inc(slots)
        if lag_s is not None and not catch_up:
            self._fire_lag.labels(schedule).observe(max(0.0, lag_s))

    def judged_dead(self) -> None:
        self._judged_dead.inc()

    def lease_lost(self, kind: str) -> None:
        self._lease_lost.labels(kind).inc()

    def reaped(self, why: str, leases: int) -> None:
        self._reaped.labels(why).inc(leases)

    def registered(self, interval_s: float) -> None:
        """The supervisor's row was written (its first heartbeat); beats come every ``interval_s``."""
        self._interval_s, self._beat_at = interval_s, self._mono()

    def beat(self) -> None:
        """A heartbeat went through."""
        now = self._mono()
        if self._beat_at is not None:
            self._lag.observe(max(0.0, now - self._beat_at - self._interval_s))
        self._beat_at = now


class DatabaseCollector(Collector):
    """The figures that must be right across workers, read from the database at scrape time.

    One read (:meth:`Gauges.figures`, one snapshot) is shared by every scrape for ``fresh_s``, or
    for ``cost_share`` times what it took if that is longer, so many scrapers, or a huge history,
    cost the database a bounded share of its time. A database that cannot be read gives
    ``tenure_database_up 0`` and no other figure, never a failed scrape.
    """

    def __init__(self, engine: Engine, alive_within_s: float, fresh_s: float = DB_FRESH_S,
                 cost_share: float = DB_COST_SHARE) -> None:
        self.gauges, self.alive_within_s = Gauges(engine), alive_within_s
        self.fresh_s, self.cost_share = fresh_s, cost_share
        self._lock = threading.Lock()
        self._read: tuple[float, Figures | None, float] | None = None  # (when, figures, seconds it took)

    def describe(self) -> Iterator[Metric]:
        return iter(self._families(None, 0.0, with_samples=False))

    def collect(self) -> Iterator[Metric]:
        with self._lock:  # scrapes that arrive together share the one read
            now = time.monotonic()
            if self._read is None or now >= self._read[0] + max(self.fresh_s, self.cost_share * self._read[2]):
                figures: Figures | None = None
                try:
                    figures = self.gauges.figures(self.alive_within_s)
                except TenureError as exc:
                    log.warning("metrics.database_unreadable error=%s", exc)
                self._read = (now, figures, time.monotonic() - now)
            _, figures, took = self._read
        return iter(self._families(figures, took))

    def _families(self, figures: Figures | None, took_s: float, with_samples: bool = True) -> list[Metric]:
        up = GaugeMetricFamily("tenure_database_up", "1 if the last read of the database's figures worked")
        read = GaugeMetricFamily("tenure_database_read_seconds", "How long the last read of the database's "
                                 "figures took (it is shared by the scrapes of the next few seconds)")
        tasks = GaugeMetricFamily("tenure_tasks", "Tasks in the database by status and kind", labels=["status", "kind"])
        attempts = GaugeMetricFamily("tenure_attempts", "Attempts in the database by outcome (running: still open)",
                                     labels=["outcome"])
        runs = GaugeMetricFamily("tenure_runs", "Runs in the database by status", labels=["status"])
        alive = GaugeMetricFamily("tenure_supervisors_alive", "Supervisors not stopped whose heartbeat changed within "
                                  "the lease TTL, by the database's clock")
        oldest = GaugeMetricFamily("tenure_oldest_due_seconds", "How long the task that has been due the longest "
                                   "has waited for a claim (0 when nothing is due)")
        per_queue = {name: GaugeMetricFamily(f"tenure_queue_{name}", about, labels=["queue"]) for name, about in (
            ("waiting", "Tasks waiting in the queue (queued or retrying, due now or later)"),
            ("running", "Attempts of the queue's tasks running now, on every worker"),
            ("limit", "The queue's limit of running attempts (absent: none)"),
            ("paused", "1 while the queue is paused"),
            ("oldest_wait_seconds", "How long the queue's longest-waiting task due at once has waited (0: none)"))}
        families: list[Metric] = [up, read, tasks, attempts, runs, alive, oldest, *per_queue.values()]
        if not with_samples:
            return families
        up.add_metric([], 0.0 if figures is None else 1.0)
        read.add_metric([], took_s)
        if figures is None:
            return families[:2]
        for kind in sorted({kind for _, kind in figures.tasks}):
            for status in TaskStatus:  # every status of a kind, zeros too, so a series falls to 0, not away
                tasks.add_metric([status.value, kind], figures.tasks.get((status.value, kind), 0))
        for outcome in Outcome:
            attempts.add_metric([outcome.value], figures.attempts.get(outcome.value, 0))
        for run_status in RunStatus:
            runs.add_metric([run_status.value], figures.runs.get(run_status.value, 0))
        alive.add_metric([], figures.supervisors_alive)
        oldest.add_metric([], figures.oldest_due_s)
        for q in figures.queues:
            per_queue["waiting"].add_metric([q.name], q.waiting)
            per_queue["running"].add_metric([q.name], q.running)
            if q.concurrency is not None:
                per_queue["limit"].add_metric([q.name], q.concurrency)
            per_queue["paused"].add_metric([q.name], 1.0 if q.paused else 0.0)
            per_queue["oldest_wait_seconds"].add_metric([q.name], q.oldest_wait_s or 0.0)
        return families


class Together(Collector):
    """Several collectors (registries too) exposed as one; more can be added after it is served."""

    def __init__(self, *collectors: Collector) -> None:
        self.collectors = list(collectors)

    def add(self, collector: Collector) -> None:
        self.collectors.append(collector)

    def collect(self) -> Iterator[Metric]:
        for collector in list(self.collectors):
            yield from collector.collect()


def serve(host: str, port: int, collector: Collector) -> Any:
    """Serve ``collector`` at ``http://host:port/metrics`` on a daemon thread; returns the server
    (``.shutdown()`` it). Raises InvalidInput, in one sentence, for a port that is out of range or taken."""
    if not 0 < port < 65536:
        raise InvalidInput(f"--metrics-port must be between 1 and 65535, got {port}")
    try:
        server, _thread = start_http_server(port, addr=host, registry=collector)
    except OSError as exc:
        raise InvalidInput(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; choose another "
                           "--metrics-port") from None
    return server
