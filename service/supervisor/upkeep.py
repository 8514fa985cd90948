"""A supervisor's upkeep: judging other supervisors dead, and reporting its own storage trouble.

* **Silent supervisors** anywhere: their leases are reclaimed once their heartbeat has not
  changed for a lease TTL on this supervisor's monotonic clock (:class:`liveness.HeartbeatWatch`).
* **Dead supervisors on this host**: reclaimed at once when their process is gone.
* **Stepped clocks**: a due time beyond any honest backoff is made due now.
* **Retention**, when ``prune_after_s`` is set: what ended longer ago is deleted at start and
  every ``prune_every_s``, on a thread of its own, in the small batches of ``tenure prune``.
* **Storage trouble**: claims, heartbeats and finishes fail together when the database is
  away; they share one episode in the log (unavailable, still unavailable, recovered).
* **Orphaned leases**: a lease this supervisor holds but runs no attempt of is handed back.

What it does is counted in the supervisor's metrics (:mod:`service.supervisor.metrics`): leases reaped,
heartbeats and their lag, attempts released.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from service.config import Settings
from service.errors import TenureError
from service.storage import Store
from service.storage.endings import End
from service.storage.leases import Key, Leases
from service.storage.models import Outcome
from service.supervisor import liveness
from service.supervisor.attempt import Execution
from service.supervisor.liveness import HeartbeatWatch

if TYPE_CHECKING:
    from service.supervisor.metrics import SupervisorMetrics

log = logging.getLogger("tenure.supervisor")

QUIET_S = 30.0  # while the database stays away, a reminder at most this often


class Upkeep:
    def __init__(self, leases: Leases, settings: Settings, clock: Any,
                 metrics: SupervisorMetrics | None = None) -> None:
        self.leases, self.settings, self.clock = leases, settings, clock
        if metrics is None:
            from service.supervisor.metrics import SupervisorMetrics

            metrics = SupervisorMetrics(clock.monotonic, lambda: 0, settings.concurrency)
        self.metrics = metrics
        self._watch: HeartbeatWatch | None = None
        self.host = ""
        self.stopping = threading.Event()  # set before the supervisor marks its own row stopped
        self._trouble_since: float | None = None  # when the database became unreachable (monotonic)
        self._trouble_logged = 0.0
        self._trouble_lock = threading.Lock()

    def register(self, host: str) -> int:
        """Insert this supervisor's row (with its heartbeat interval and lease TTL); its id."""
        self.host = host
        boot_id, start_ticks = liveness.process_identity(os.getpid())
        supervisor_id = self.leases.register(host, os.getpid(), boot_id, start_ticks,
                                             heartbeat_s=self.settings.heartbeat_s,
                                             lease_ttl_s=self.settings.lease_ttl_s)
        self.watch_as(supervisor_id)
        return supervisor_id

    def register_again(self, supervisor_id: int) -> None:
        """Its heartbeat found its row stopped or gone: others judged it dead. Say so, and be alive again."""
        log.warning("supervisor.judged_dead supervisor=%s: another supervisor judged it dead (no heartbeat seen for "
                    "its %g s TTL: a stall, a partition?) or its row was deleted; its leases were handed back "
                    "and its running attempts stop; registering again", supervisor_id, self.settings.lease_ttl_s)
        boot_id, start_ticks = liveness.process_identity(os.getpid())
        self.leases.register_again(supervisor_id, self.host, os.getpid(), boot_id, start_ticks,
                                   heartbeat_s=self.settings.heartbeat_s, lease_ttl_s=self.settings.lease_ttl_s)
        self.metrics.judged_dead()

    def watch_as(self, supervisor_id: int) -> None:
        """Start watching the others' heartbeats, as ``supervisor_id`` (who never judges itself)."""
        # Blind after missing two looks or more (a database outage): far above the look interval.
        blind = max(2.5 * self.settings.reclaim_every_s, self.settings.lease_ttl_s / 2)
        self._watch = HeartbeatWatch(self.settings.lease_ttl_s, supervisor_id, blind_s=blind)
        self.metrics.registered(self.settings.heartbeat_s)  # registering wrote its first heartbeat

    def beat(self, supervisor_id: int, inflight: list[Execution]) -> set[Key]:
        """One heartbeat, carrying the progress, checkpoints and output that changed; the leases it holds."""
        updates, versions, logs, log_totals = [], [], [], []
        for ex in inflight:
            version, progress, saved = ex.snapshot()
            if version != ex.flushed_version:
                updates.append((ex.key[0], ex.key[1], progress, saved))
                versions.append((ex, version))
            fresh = ex.new_logs()
            if fresh is not None:
                total, text, whole = fresh
                logs.append((ex.key[0], ex.key[1], text, total, whole))
                log_totals.append((ex, total))
        beat = self.leases.heartbeat(supervisor_id, updates, logs)
        if not beat.alive and not self.stopping.is_set():  # stopping: it marked itself stopped
            self.register_again(supervisor_id)
        self.metrics.beat()
        self.no_trouble(supervisor_id)
        for ex, version in versions:
            ex.flushed_version = version
        for ex, total in log_totals:
            ex.flushed_logs_total = total
        return beat.held

    def lost_leases(self, supervisor_id: int, active: set[Key]) -> set[Key]:
        """Which ``active`` attempts lost their lease (a cancel, most often), from one read."""
        return active - self.leases.held(supervisor_id)

    def hand_back(self, supervisor_id: int, orphans: list[Key]) -> None:
        """Hand back, lost and uncounted, leases this supervisor holds but runs no attempt of."""
        log.error("supervisor.orphaned_leases supervisor=%s tasks=%s: handing them back (a claim whose answer "
                  "was lost?)", supervisor_id, orphans)
        ends = [End(task_id=task_id, attempt=attempt, run_id=None, outcome=Outcome.LOST,
                    error="its supervisor held its lease without running it (a claim whose answer was lost)")
                for task_id, attempt in orphans]
        handed = self.leases.end_attempts(supervisor_id, ends)
        self.metrics.reaped("orphaned", len(handed))

    def reclaim_silent(self, supervisor_id: int) -> None:
        """Reclaim the leases of supervisors whose heartbeat stopped changing (see :mod:`liveness`)."""
        assert self._watch is not None
        holders = self.leases.lease_holders()
        for dead in self._watch.dead(holders, self.clock.monotonic()):
            ttl = holders[dead].lease_ttl_s or self.settings.lease_ttl_s
            lost = self.leases.reclaim_supervisor(
                dead, f"its supervisor (supervisor {dead}) stopped heartbeating for its {ttl:g} s TTL "
                      "(crashed, hung or cut off)", judged=holders[dead].heartbeat_at,
            )
            self._watch.forget(dead)  # its next leases, if it lives on, are judged afresh
            log.warning("supervisor.reclaimed dead=%s tasks=%s supervisor=%s: no heartbeat for its %g s TTL",
                        dead, len(lost), supervisor_id, ttl)
            self.metrics.reaped("silent", len(lost))
        # A due time far ahead was set by a clock that stepped back since (or by a process whose
        # clock runs ahead, on SQLite): make it due now rather than hold the task for hours.
        horizon = 2 * self.settings.retry_cap_s + 60.0
        stepped = self.leases.requeue_stepped(horizon)
        if stepped:
            log.warning("supervisor.requeued_stepped tasks=%s: due more than %g s ahead, so a clock stepped",
                        stepped, horizon)

    def recover_dead_on_host(self, supervisor_id: int, host: str) -> None:
        """Reclaim at once the leases of supervisors on this host whose process is gone."""
        for other in self.leases.live_supervisors_on(host, except_id=supervisor_id):
            if liveness.process_alive(other.pid, other.boot_id, other.start_ticks):
                continue
            lost = self.leases.reclaim_supervisor(
                other.id, f"its supervisor (supervisor {other.id}, pid {other.pid} on {other.host}) died",
            )
            log.warning("supervisor.reclaimed dead=%s pid=%s tasks=%s supervisor=%s: its process is gone",
                        other.id, other.pid, len(lost), supervisor_id)
            self.metrics.reaped("dead", len(lost))

    def trouble(self, supervisor_id: int | None, event: str, exc: BaseException) -> None:
        """A storage error repeats every beat and poll while it lasts: one episode, logged once.

        Claims, heartbeats, finishes and checks all fail together when the database is away, so
        they share one episode: a line when it starts (naming what hit it first), one every
        ``QUIET_S`` while it lasts, and one when a heartbeat goes through again.
        """
        now = self.clock.monotonic()
        with self._trouble_lock:
            if self._trouble_since is None:
                self._trouble_since = self._trouble_logged = now
                log.warning("supervisor.storage_unavailable supervisor=%s while=%s error=%s: running tasks go on; "
                            "their outcomes, heartbeats and claims wait for the database", supervisor_id,
                            event, exc)
            elif now - self._trouble_logged >= QUIET_S:
                self._trouble_logged = now
                log.warning("supervisor.storage_still_unavailable supervisor=%s for_s=%.0f error=%s",
                            supervisor_id, now - self._trouble_since, exc)

    def guard(self, supervisor_id: int | None, what: str, fn: Any) -> None:
        """Run one duty of the loop: a storage error is an episode of trouble, any other is logged;
        neither ends the loop."""
        try:
            fn()
        except TenureError as exc:
            self.trouble(supervisor_id, f"{what}.failed", exc)
        except Exception:
            log.exception("%s.crashed supervisor=%s", what, supervisor_id)

    def no_trouble(self, supervisor_id: int | None) -> None:
        with self._trouble_lock:
            if self._trouble_since is not None:
                log.warning("supervisor.storage_recovered supervisor=%s after_s=%.1f", supervisor_id,
                            self.clock.monotonic() - self._trouble_since)
                self._trouble_since = None



def prune_loop(leases: Leases, settings: Settings, halt: threading.Event) -> None:
    """Prune what ended over ``settings.prune_after_s`` ago, now and every ``prune_every_s``, until ``halt``.

    Several supervisors may prune at once: each batch locks what it deletes, so they take turns.
    """
    assert settings.prune_after_s is not None
    store = Store(leases.engine)
    while not halt.is_set():
        try:
            report = store.prune(settings.prune_after_s, stop=halt)
            if report.runs or report.tasks or report.supervisors:
                log.info("prune.done runs=%s tasks=%s attempts=%s supervisors=%s seconds=%.1f longest_batch_ms=%.0f",
                         report.runs, report.tasks, report.attempts, report.supervisors, report.seconds,
                         report.longest_batch_s * 1000)
        except TenureError as exc:
            log.warning("prune.failed error=%s (will try again in %.0f s)", exc, settings.prune_every_s)
        halt.wait(settings.prune_every_s)
