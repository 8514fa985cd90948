"""The supervisor: registers itself, claims due tasks, runs them in its processes, heartbeats, reclaims.

Task code never runs here: it runs in host processes that this supervisor owns (see
:mod:`service.supervisor.pool`), so a task that crashes, hangs in C code, or eats memory fails alone,
and the threads of this process are never starved.

Threads:

* the **loop** (one): claims, places attempts in hosts, handles what hosts report (outputs,
  errors, deaths), enforces timeouts, schedules polls, looks for cancelled leases, and does the
  upkeep (:mod:`service.supervisor.upkeep`). Every database write for an attempt happens here.
* the **heartbeat** (one): every ``heartbeat_s`` one write keeps all of this supervisor's
  leases alive, carrying the progress and checkpoints the tasks reported.
* the **listener** (PostgreSQL only): wakes the loop when new work is announced.

Side loops are supervised: if the heartbeat thread dies, the supervisor stops (releasing its
leases); an error inside one iteration is logged, and it goes on.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from typing import Any

from sqlalchemy import Engine

from service.clock import Clock, SystemClock
from service.config import Settings
from service.errors import TenureError, describe
from service.storage import notify
from service.storage.leases import Lease, Leases
from service.storage.models import Outcome
from service.supervisor import liveness, upkeep
from service.supervisor.attempt import MAX_CHECK_ERRORS, Execution, Failure
from service.supervisor.commits import GroupCommit
from service.supervisor.pool import Event, Pool
from service.supervisor.retry import RetryPolicy
from service.supervisor.upkeep import Upkeep
from service.task_process import wire

log = logging.getLogger("tenure.supervisor")

FINISH_RETRY_S = 0.5  # a finish write the database refused is tried again this often
SCAN_HOST_EVERY_S = 5.0  # how often to look for dead supervisors on this host
IDLE_POLL_LISTENING_S = 2.0  # with LISTEN/NOTIFY (PostgreSQL), an idle supervisor polls only this often
IDLE_POLL_DOORBELL_S = 1.0  # with a doorbell (SQLite), for work that becomes due by the clock

Key = tuple[int, int]


class Supervisor:
    """Runs tasks from the database until stopped. Start with :meth:`start`, end with :meth:`stop`."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings | None = None,
        *,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
        host: str | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.clock = clock or SystemClock()
        self.leases = Leases(engine)
        self.retry = retry or RetryPolicy(self.settings.retry_base_s, self.settings.retry_cap_s)
        # TENURE_HOST names the host where hostnames repeat (containers) or to simulate hosts.
        self.host = host or os.environ.get("TENURE_HOST") or socket.gethostname()
        self.supervisor_id: int | None = None
        self.fatal: BaseException | None = None
        self.pool = Pool(memory_limit_mb=self.settings.memory_limit_mb,
                         kill_grace_s=self.settings.kill_grace_s, clock=self.clock)
        self._events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._inflight: dict[Key, Execution] = {}
        self._inflight_lock = threading.Lock()
        self._stopping = threading.Event()  # stop claiming; finish or release what runs
        self._grace_s = self.settings.shutdown_grace_s
        self._halt = threading.Event()  # side loops end
        self._threads: list[threading.Thread] = []
        from service.supervisor.metrics import SupervisorMetrics  # prometheus_client takes ~20 ms: only where one runs
        self.metrics = SupervisorMetrics(self.clock.monotonic, lambda: len(self._inflight), self.settings.concurrency)
        self.upkeep = Upkeep(self.leases, self.settings, self.clock, self.metrics)
        self._claim_now = False  # a slot came free or work was announced: claim at once
        self._commits = GroupCommit()  # ended attempts waiting for their group commit
        self._idle_s = self.settings.idle_poll_s
        self._retry_due = float("inf")  # when the soonest retry this supervisor scheduled is due
        self.stopped = threading.Event()  # set once the loop has ended and leases are released
        self.loop_turns = 0  # how often the loop woke: an idle supervisor must not spin

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Supervisor:
        """Start the task processes, register, reclaim dead supervisors' leases on this host, loop."""
        self.pool.start()  # the zygote boots while the database work below goes on
        try:
            boot_id, start_ticks = liveness.process_identity(os.getpid())
            self.supervisor_id = self.leases.register(self.host, os.getpid(), boot_id, start_ticks)
        except BaseException:
            self.pool.close()
            raise
        log.info("supervisor.started supervisor=%s host=%s pid=%s concurrency=%s memory_limit_mb=%s",
                 self.supervisor_id, self.host, os.getpid(), self.settings.concurrency,
                 self.settings.memory_limit_mb)
        self.upkeep.watch_as(self.supervisor_id)
        self._recover_dead_on_host()
        loops = [(self._loop, "loop"), (self._heartbeat_loop, "heartbeat")]
        if self.settings.prune_after_s is not None:
            loops.append((lambda: upkeep.prune_loop(self.leases, self.settings, self._halt), "prune"))
        engine, on_work = self.leases.engine, lambda: self._post(("work",))
        if notify.supported(engine):
            loops.append((notify.Listener(engine, on_work, self._halt).run, "listen"))
            self._idle_s = max(self.settings.idle_poll_s, IDLE_POLL_LISTENING_S)
        elif notify.doorbells(engine):
            loops.append((notify.Doorbell(engine, self.supervisor_id, on_work, self._halt).run, "doorbell"))
            self._idle_s = max(self.settings.idle_poll_s, IDLE_POLL_DOORBELL_S)
        for target, name in loops:
            thread = threading.Thread(target=self._supervised(target), name=f"tenure-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def request_stop(self, grace_s: float | None = None) -> None:
        """Ask for a graceful stop (safe from a signal handler: it only sets flags).

        The supervisor stops claiming, lets running attempts end for up to ``grace_s``
        (default ``shutdown_grace_s``), then releases the rest of its leases.
        """
        if grace_s is not None:
            self._grace_s = grace_s
        self._stopping.set()
        self._post(("wake",))

    def stop(self, grace_s: float | None = None, timeout_s: float | None = 30.0) -> bool:
        """Stop gracefully and wait for it; True if the supervisor ended within ``timeout_s``."""
        self.request_stop(grace_s)
        return self.stopped.wait(timeout_s)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def _post(self, event: tuple[Any, ...]) -> None:
        self._events.put(event)
        self.pool.wake()

    def _supervised(self, target: Any) -> Any:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                log.exception("supervisor.loop_died supervisor=%s thread=%s", self.supervisor_id,
                              threading.current_thread().name)
                self.fatal = exc
                self._stopping.set()
                self._grace_s = 0.0
                self._post(("wake",))
                if threading.current_thread().name == "tenure-loop":
                    self._halt.set()
                    self.pool.close()
                    self.stopped.set()

        return run

    # -- the loop -------------------------------------------------------------------------

    def _loop(self) -> None:
        mono, supervisor_id = self.clock.monotonic, self.supervisor_id
        assert supervisor_id is not None
        next_claim = next_reclaim = next_scan = next_check = mono()
        stop_deadline: float | None = None
        while True:
            now = mono()
            if self._stopping.is_set():
                if stop_deadline is None:
                    stop_deadline = now + self._grace_s
                    log.info("supervisor.stopping supervisor=%s running=%s grace_s=%s",
                             self.supervisor_id, len(self._inflight), self._grace_s)
                if not self._inflight or now >= stop_deadline:
                    break
            self._drain_events()
            self._service_inflight(now)
            if self._commits.due(now, others_running=len(self._inflight) > len(self._commits)):
                self._flush_finishes()
            if self._claim_now:
                self._claim_now = False
                next_claim = now
            if self._retry_due <= now:  # a task this supervisor failed is due again
                self._retry_due = float("inf")
                next_claim = now
            next_claim = min(next_claim, self._retry_due)
            if not self._stopping.is_set() and now >= next_claim:
                next_claim = now + self._claim()
            if self._inflight and now >= next_check:
                next_check = now + self.settings.lease_check_s
                self._guard("lease_check", self._check_leases)
            if now >= next_reclaim:
                next_reclaim = now + self.settings.reclaim_every_s
                self._guard("reclaim", lambda: self.upkeep.reclaim_silent(supervisor_id))
            if now >= next_scan:
                next_scan = now + SCAN_HOST_EVERY_S
                self._guard("scan", self._recover_dead_on_host)
            wake_at = min(next_claim, next_reclaim, next_scan, self._next_deadline(), self.pool.next_deadline(),
                          self._commits.deadline,
                          next_check if self._inflight else float("inf"),
                          stop_deadline if stop_deadline is not None else float("inf"))
            self.loop_turns += 1
            for event in self.pool.wait(max(0.0, wake_at - mono())):
                self._on_pool(event)
            if self.pool.broken is not None and not self._stopping.is_set():
                log.error("supervisor.cannot_run_tasks supervisor=%s: %s; stopping (its leases are released)",
                          self.supervisor_id, self.pool.broken)
                self.fatal = RuntimeError(self.pool.broken)
                self.request_stop(grace_s=0.0)
        self._shutdown()

    def _drain_events(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            kind = event[0]
            if kind == "work":
                self._claim_now = True  # new work was announced: claim at once
            elif kind == "lost":
                ex = self._inflight.get(event[1])
                if ex is not None:
                    self._lease_lost(ex)

    def _on_pool(self, event: Event) -> None:
        ex = event.ex
        if self._inflight.get(ex.key) is not ex:
            return  # already stopped or finished: its news changes nothing
        if event.kind == "ran":
            if event.failure is not None:
                self._fail(ex, event.failure)
            elif event.polling:
                ex.phase = "check"
                self.pool.check(ex)  # the first check comes right after run() returns
            else:
                self._write_finish(ex, outcome=Outcome.SUCCEEDED, result=event.value, record=ex.record())
        elif event.kind == "checked":
            if event.failure is None and event.value is not None:
                self._write_finish(ex, outcome=Outcome.SUCCEEDED, result=event.value, record=ex.record())
            elif event.failure is not None and (event.failure.permanent or
                                                ex.check_errors + 1 >= MAX_CHECK_ERRORS):
                self.pool.stop(ex, "failed its check")
                self._fail(ex, event.failure)
            else:
                if event.failure is not None:
                    ex.check_errors += 1
                    log.warning("attempt.check_error task=%s attempt=%s error=%s (will check again)",
                                ex.key[0], ex.key[1], event.failure.message)
                else:
                    ex.check_errors = 0
                ex.schedule_check(self.settings, self.clock.monotonic())
        elif event.kind == "crashed":
            self._fail(ex, Failure(f"crashed: {event.reason}"), outcome=Outcome.CRASHED)
        elif event.kind == "lost":
            self._lose(ex, event.reason, isolate=event.isolate)

    def _service_inflight(self, now: float) -> None:
        """Timeouts, due polls, finish writes to try again."""
        for ex in list(self._inflight.values()):
            if ex.phase == "finishing":
                if now >= ex.next_check_mono and ex.pending is not None:
                    pending = dict(ex.pending)
                    if pending.pop("verb", "finish") == "lose":
                        self._lose(ex, **pending)
                    else:
                        self._write_finish(ex, **pending)
            elif now >= ex.deadline_mono:
                why, failure, timed_out = ex.overdue()
                self.pool.stop(ex, why, force_check=True)
                self._fail(ex, failure, outcome=Outcome.TIMED_OUT if timed_out else Outcome.FAILED)
            elif ex.phase == "wait" and now >= ex.next_check_mono:
                ex.phase = "check"
                self.pool.check(ex)

    def _next_deadline(self) -> float:
        soonest = float("inf")
        for ex in self._inflight.values():
            if ex.phase != "finishing":
                soonest = min(soonest, ex.deadline_mono)
            if ex.phase in ("wait", "finishing"):
                soonest = min(soonest, ex.next_check_mono)
        return soonest

    def _claim(self) -> float:
        """Claim into free slots; returns seconds until the next claim should be tried."""
        room = self.settings.concurrency - len(self._inflight)
        if room <= 0:
            return self._idle_s
        assert self.supervisor_id is not None
        try:
            # A read first: an idle supervisor asks without taking the database's write lock.
            leases = self.leases.claim(self.supervisor_id, room) if self.leases.anything_due() else []
        except TenureError as exc:
            self._warn_once("claim.failed", exc)
            return self._idle_s
        for lease in leases:
            self._dispatch(lease)
        # Nothing more is due now, or no slot is free; a freed slot or a notification claims at once.
        return self._idle_s

    def _dispatch(self, lease: Lease) -> None:
        now = self.clock.monotonic()
        timeout = lease.timeout_s or self.settings.task_timeout_s
        ex = Execution(lease=lease, started_mono=now, deadline_mono=now + timeout)
        with self._inflight_lock:
            self._inflight[ex.key] = ex
        self.metrics.started(lease.kind, lease.waited_s)
        log.info("attempt.started task=%s attempt=%s run=%s position=%s kind=%s supervisor=%s",
                 lease.task_id, lease.attempt, lease.run_id, lease.position, lease.kind, self.supervisor_id)
        try:
            self.pool.run(ex)
        except (wire.FrameTooLarge, TypeError, ValueError) as exc:
            self._fail(ex, Failure(f"its args or checkpoint cannot be sent to a task process: {describe(exc)}",
                                   permanent=True))

    # -- finishing ------------------------------------------------------------------------

    def _fail(self, ex: Execution, failure: Failure, outcome: Outcome = Outcome.FAILED) -> None:
        retry_in_s = None
        if outcome in (Outcome.FAILED, Outcome.CRASHED):
            decision = self.retry.decide(failure.permanent, ex.lease.charged + 1, ex.lease.max_attempts)
            if decision.retry:
                retry_in_s = decision.delay_s
                self._retry_due = min(self._retry_due, self.clock.monotonic() + decision.delay_s)
        _, progress, saved = ex.snapshot()
        self._write_finish(ex, outcome=outcome, error=failure.message, retry_in_s=retry_in_s,
                           progress=progress, checkpoint=saved, record=ex.record(failure.traceback))

    def _write_finish(self, ex: Execution, **kwargs: Any) -> None:
        """Queue the attempt's end for the next group commit (see :mod:`service.supervisor.commits`)."""
        self._commits.add(ex, self.clock.monotonic(), **kwargs)

    def _flush_finishes(self) -> None:
        """Write the queued ends in one transaction; on a storage error they are tried again later."""
        assert self.supervisor_id is not None
        try:
            written = self._commits.write(self.leases, self.supervisor_id, self.clock.monotonic() + FINISH_RETRY_S)
        except TenureError as exc:
            self._warn_once("finish.deferred", exc)
            return
        for ex, end, applied in written:
            if applied:
                log.info("attempt.%s task=%s attempt=%s supervisor=%s%s", end.outcome.value, ex.key[0], ex.key[1],
                         self.supervisor_id, f" error={end.error!r}" if end.error else "")
                self.metrics.ended(ex.lease.kind, end.outcome, self.clock.monotonic() - ex.started_mono)
            self._forget(ex)

    def _lose(self, ex: Execution, reason: str, *, isolate: bool) -> None:
        """The attempt's process died for someone else's sake: hand the task back, uncharged."""
        assert self.supervisor_id is not None
        _, progress, saved = ex.snapshot()
        try:
            lost = self.leases.lose(ex.lease, self.supervisor_id, reason, isolate=isolate,
                                    progress=progress, checkpoint=saved, record=ex.record())
        except TenureError as exc:
            # Keep the attempt (its lease is ours, its process gone) and hand it back later.
            if ex.pending is None:
                self._warn_once("lose.deferred", exc)
            ex.phase, ex.pending = "finishing", {"verb": "lose", "reason": reason, "isolate": isolate}
            ex.next_check_mono = self.clock.monotonic() + FINISH_RETRY_S
            return
        log.info("attempt.lost task=%s attempt=%s supervisor=%s isolate=%s reason=%r applied=%s",
                 ex.key[0], ex.key[1], self.supervisor_id, isolate, reason, lost)
        if lost:  # fenced out (the lease was already gone): someone else ended it, and counts it
            self.metrics.ended(ex.lease.kind, Outcome.LOST, self.clock.monotonic() - ex.started_mono)
        self._forget(ex)
        self._claim_now = True  # it is due again at once; we may as well take it

    def _lease_lost(self, ex: Execution) -> None:
        """Cancelled or reclaimed: stop its code now; any write of it would be fenced."""
        log.warning("attempt.lease_lost task=%s attempt=%s supervisor=%s: stopping it", ex.key[0], ex.key[1],
                    self.supervisor_id)
        self.pool.stop(ex, "lost its lease (cancelled, or reclaimed by another supervisor)")
        self.metrics.lease_lost(ex.lease.kind)
        self._forget(ex)

    def _forget(self, ex: Execution) -> None:
        self.pool.stop(ex, "ended")  # a no-op once the host has let it go
        with self._inflight_lock:
            if self._inflight.get(ex.key) is ex:
                del self._inflight[ex.key]
                self._claim_now = True

    # -- heartbeat, leases, reaping, recovery ---------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self._halt.wait(self.settings.heartbeat_s):
            self._guard("heartbeat", self._beat)

    def _beat(self) -> None:
        assert self.supervisor_id is not None
        with self._inflight_lock:
            snapshot = list(self._inflight.values())
        for key in self.upkeep.beat(self.supervisor_id, snapshot):
            self._post(("lost", key))

    def _check_leases(self) -> None:
        assert self.supervisor_id is not None
        active = {key for key, ex in self._inflight.items() if ex.phase != "finishing"}
        for key in self.upkeep.check_leases(self.supervisor_id, active, set(self._inflight)):
            self._lease_lost(self._inflight[key])

    def _recover_dead_on_host(self) -> None:
        assert self.supervisor_id is not None
        self.upkeep.recover_dead_on_host(self.supervisor_id, self.host)

    def _warn_once(self, event: str, exc: BaseException) -> None:
        self.upkeep.trouble(self.supervisor_id, event, exc)

    def _guard(self, what: str, fn: Any) -> None:
        try:
            fn()
        except TenureError as exc:
            self._warn_once(f"{what}.failed", exc)
        except Exception:
            log.exception("%s.crashed supervisor=%s", what, self.supervisor_id)

    def _shutdown(self) -> None:
        if len(self._commits):
            self._guard("finish", self._flush_finishes)  # ended attempts are written, not handed back
        with self._inflight_lock:
            remaining = list(self._inflight.values())
            self._inflight.clear()
        # Their code must not run on beside the next holder: end every task process first.
        self.pool.close()
        assert self.supervisor_id is not None
        try:
            self.upkeep.release(self.supervisor_id, remaining)  # uncharged, with their checkpoints
            self.leases.stop_supervisor(self.supervisor_id)
        except TenureError as exc:
            log.warning("supervisor.release_failed supervisor=%s error=%s (leases expire in %s s)",
                        self.supervisor_id, exc, self.settings.lease_ttl_s)
        self._halt.set()
        notify.ring(self.leases.engine, [self.supervisor_id])  # its doorbell ends now, not at its 1 s poll
        for thread in self._threads:  # the listener closes its connection within a second
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)
        log.info("supervisor.stopped supervisor=%s", self.supervisor_id)
        self.stopped.set()
