"""The supervisor: registers itself, claims due tasks, runs them, heartbeats, reaps, stops cleanly.

Three kinds of threads:

* the **loop** (one): claims, dispatches, handles finished ``run()``/``check_output()`` calls,
  enforces timeouts, schedules polls, reaps expired leases and reclaims the leases of dead
  supervisors on this host. Every database write for an attempt happens here.
* the **heartbeat** (one): every ``heartbeat_s`` one statement extends all of this
  supervisor's leases, carrying the progress and checkpoints task code recorded. It belongs
  to the supervisor, never to task code, so a busy task cannot starve it.
* **task threads**: one per ``run()`` call and one per ``check_output()`` call; a polling task
  waiting between checks holds none.

Side loops are supervised: if the heartbeat thread dies, the supervisor stops (releasing its
leases) rather than run on without them. An error inside one iteration is logged with its
traceback and the loop goes on.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from service import executor, liveness, wakeup
from service.clock import Clock, SystemClock
from service.config import Settings
from service.errors import PermanentError, TenureError
from service.executor import Execution
from service.leases import Lease, Leases
from service.models import Outcome
from service.protocol import TaskContext
from service.reaper import HeartbeatWatch
from service.retry import RetryPolicy

log = logging.getLogger("tenure.supervisor")

FINISH_RETRY_S = 0.5  # a finish write the database refused is tried again this often
SCAN_HOST_EVERY_S = 5.0  # how often to look for dead supervisors on this host
QUIET_S = 30.0  # a repeating storage warning is logged at most this often
IDLE_POLL_LISTENING_S = 2.0  # with LISTEN/NOTIFY (PostgreSQL), an idle supervisor polls only this often


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
        self.worker_id: int | None = None
        self.fatal: BaseException | None = None
        self._events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._inflight: dict[int, Execution] = {}
        self._inflight_lock = threading.Lock()
        self._stopping = threading.Event()  # stop claiming; finish or release what runs
        self._grace_s = self.settings.shutdown_grace_s
        self._halt = threading.Event()  # side loops end
        self._threads: list[threading.Thread] = []
        self._watch: HeartbeatWatch | None = None
        self._warned: dict[str, float] = {}  # event → when it was last logged (monotonic)
        self._claim_now = False  # a slot came free or work was announced: claim at once
        self._idle_s = self.settings.idle_poll_s
        self._retry_due = float("inf")  # when the soonest retry this supervisor scheduled is due
        self.stopped = threading.Event()  # set once the loop has ended and leases are released

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Supervisor:
        """Register, reclaim dead supervisors' leases on this host, start the loop and heartbeat."""
        self.worker_id = self.leases.register_worker(self.host, os.getpid(), self.clock.now())
        log.info("supervisor.started worker=%s host=%s pid=%s concurrency=%s",
                 self.worker_id, self.host, os.getpid(), self.settings.concurrency)
        self._watch = HeartbeatWatch(self.settings.lease_ttl_s, self.worker_id)
        self._recover_dead_on_host()
        loops = [(self._loop, "loop"), (self._heartbeat_loop, "heartbeat")]
        if wakeup.supported(self.leases.engine):
            listener = wakeup.Listener(self.leases.engine, lambda: self._events.put(("work",)), self._halt)
            loops.append((listener.run, "listen"))
            self._idle_s = max(self.settings.idle_poll_s, IDLE_POLL_LISTENING_S)
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
        self._events.put(("wake",))

    def stop(self, grace_s: float | None = None, timeout_s: float | None = 30.0) -> bool:
        """Stop gracefully and wait for it; True if the supervisor ended within ``timeout_s``."""
        self.request_stop(grace_s)
        return self.stopped.wait(timeout_s)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def _supervised(self, target: Any) -> Any:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                log.exception("supervisor.loop_died worker=%s thread=%s", self.worker_id,
                              threading.current_thread().name)
                self.fatal = exc
                self._stopping.set()
                self._grace_s = 0.0
                self._events.put(("wake",))
                if threading.current_thread().name == "tenure-loop":
                    self._halt.set()
                    self.stopped.set()

        return run

    # -- the loop -------------------------------------------------------------------------

    def _loop(self) -> None:
        mono = self.clock.monotonic
        next_claim = next_reap = next_scan = mono()
        stop_deadline: float | None = None
        while True:
            now = mono()
            if self._stopping.is_set():
                if stop_deadline is None:
                    stop_deadline = now + self._grace_s
                    log.info("supervisor.stopping worker=%s running=%s grace_s=%s",
                             self.worker_id, len(self._inflight), self._grace_s)
                if not self._inflight or now >= stop_deadline:
                    break
            self._drain_events()
            self._service_inflight(now)
            if self._claim_now:
                self._claim_now = False
                next_claim = now
            if self._retry_due <= now:  # a task this supervisor failed is due again
                self._retry_due = float("inf")
                next_claim = now
            next_claim = min(next_claim, self._retry_due)
            if not self._stopping.is_set() and now >= next_claim:
                next_claim = now + self._claim()
            if now >= next_reap:
                next_reap = now + self.settings.reap_every_s
                self._guard("reap", self._reap)
            if now >= next_scan:
                next_scan = now + SCAN_HOST_EVERY_S
                self._guard("scan", self._recover_dead_on_host)
            wake_at = min(next_claim, next_reap, next_scan, self._next_deadline(),
                          stop_deadline if stop_deadline is not None else float("inf"))
            self._wait(max(0.0, wake_at - mono()))
        self._shutdown()

    def _wait(self, timeout_s: float) -> None:
        try:
            event = self._events.get(timeout=timeout_s)
        except queue.Empty:
            return
        self._handle(event)

    def _drain_events(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            self._handle(event)

    def _handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "wake":
            return
        if kind == "work":
            self._claim_now = True  # new work was announced: claim at once
            return
        ex: Execution = event[1]
        if self._inflight.get(ex.lease.task_id) is not ex:
            return  # abandoned (timed out, lost, released): its news changes nothing
        if kind == "lost":
            log.warning("attempt.lease_lost task=%s attempt=%s worker=%s: stopping it, writes fenced",
                        ex.lease.task_id, ex.lease.attempt, self.worker_id)
            self._forget(ex)
        elif kind == "ran":
            _, _, value, error = event
            if error is not None:
                self._fail(ex, error)
            elif value is not None or not executor.is_polling(ex.task):
                self._succeed(ex, value)
            else:
                executor.start_check(ex, self._events.put)
        elif kind == "checked":
            _, _, value, error = event
            if error is None and value is not None:
                self._succeed(ex, value)
            elif error is not None and (isinstance(error, PermanentError) or
                                        ex.check_errors + 1 >= executor.MAX_CHECK_ERRORS):
                self._fail(ex, error)
            else:
                if error is not None:
                    ex.check_errors += 1
                    log.warning("attempt.check_error task=%s attempt=%s error=%s (will check again)",
                                ex.lease.task_id, ex.lease.attempt, executor.describe_error(error))
                else:
                    ex.check_errors = 0
                self._schedule_check(ex)

    def _schedule_check(self, ex: Execution) -> None:
        s = self.settings
        asked = getattr(ex.task, "poll_interval_s", None)
        if isinstance(asked, (int, float)) and asked > 0:
            ex.poll_interval_s = float(asked)
        elif ex.poll_interval_s == 0.0:
            ex.poll_interval_s = s.poll_first_s
        else:
            ex.poll_interval_s = min(s.poll_max_s, ex.poll_interval_s * s.poll_factor)
        ex.phase = "wait"
        ex.next_check_mono = self.clock.monotonic() + ex.poll_interval_s

    def _service_inflight(self, now: float) -> None:
        """Timeouts, due polls, finish writes to try again."""
        for ex in list(self._inflight.values()):
            if ex.phase == "finishing":
                if now >= ex.next_check_mono and ex.pending is not None:
                    self._write_finish(ex, **ex.pending)
            elif now >= ex.deadline_mono:
                limit = ex.deadline_mono - ex.started_mono
                self._fail(ex, TimeoutError(f"the task ran past its timeout of {limit:g} s"),
                           outcome=Outcome.TIMED_OUT)
            elif ex.phase == "wait" and now >= ex.next_check_mono:
                executor.start_check(ex, self._events.put)

    def _next_deadline(self) -> float:
        soonest = float("inf")
        for ex in self._inflight.values():
            soonest = min(soonest, ex.deadline_mono)
            if ex.phase in ("wait", "finishing"):
                soonest = min(soonest, ex.next_check_mono)
        return soonest

    def _claim(self) -> float:
        """Claim into free slots; returns seconds until the next claim should be tried."""
        room = self.settings.concurrency - len(self._inflight)
        if room <= 0:
            return self._idle_s
        assert self.worker_id is not None
        try:
            leases = self.leases.claim(self.worker_id, room, self.clock.now(), self.settings.lease_ttl_s)
        except TenureError as exc:
            self._warn_once("claim.failed", exc)
            return self._idle_s
        for lease in leases:
            self._dispatch(lease)
        # Nothing more is due now, or no slot is free; a freed slot or a notification claims at once.
        return self._idle_s

    def _dispatch(self, lease: Lease) -> None:
        ctx = TaskContext(task_id=lease.task_id, attempt=lease.attempt, run_id=lease.run_id,
                          position=lease.position, saved=lease.checkpoint)
        now = self.clock.monotonic()
        timeout = lease.timeout_s or self.settings.task_timeout_s
        ex = Execution(lease=lease, ctx=ctx, started_mono=now, deadline_mono=now + timeout)
        with self._inflight_lock:
            self._inflight[lease.task_id] = ex
        log.info("attempt.started task=%s attempt=%s run=%s position=%s kind=%s worker=%s",
                 lease.task_id, lease.attempt, lease.run_id, lease.position, lease.kind, self.worker_id)
        executor.start_run(ex, self._events.put)

    # -- finishing ------------------------------------------------------------------------

    def _succeed(self, ex: Execution, value: Any) -> None:
        problem = executor.check_result(value)
        if problem is not None:
            self._fail(ex, PermanentError(problem))
            return
        self._write_finish(ex, outcome=Outcome.SUCCEEDED, result=value)

    def _fail(self, ex: Execution, error: BaseException, outcome: Outcome = Outcome.FAILED) -> None:
        message = executor.describe_error(error)
        retry_at = None
        if outcome is Outcome.FAILED:
            decision = self.retry.decide(error, ex.lease.budget_used, ex.lease.max_attempts)
            if decision.retry:
                retry_at = self.clock.now() + timedelta(seconds=decision.delay_s)
                self._retry_due = min(self._retry_due, self.clock.monotonic() + decision.delay_s)
        _, progress, saved = ex.ctx.snapshot()
        self._write_finish(ex, outcome=outcome, error=message, retry_at=retry_at,
                           progress=progress, checkpoint=saved)

    def _write_finish(self, ex: Execution, **kwargs: Any) -> bool:
        """Write the attempt's end; on a storage error keep the lease and try again later."""
        assert self.worker_id is not None
        try:
            applied = self.leases.finish(ex.lease, self.worker_id, self.clock.now(), **kwargs)
        except TenureError as exc:
            if ex.pending is None:
                log.info("finish.deferred task=%s attempt=%s error=%s (retrying every %s s)",
                         ex.lease.task_id, ex.lease.attempt, exc, FINISH_RETRY_S)
                self._warn_once("finish.deferred", exc)
            ex.phase, ex.pending = "finishing", kwargs
            ex.next_check_mono = self.clock.monotonic() + FINISH_RETRY_S
            return False
        outcome = kwargs["outcome"]
        if applied:
            log.info("attempt.%s task=%s attempt=%s worker=%s%s", outcome.value, ex.lease.task_id,
                     ex.lease.attempt, self.worker_id,
                     f" error={kwargs.get('error')!r}" if kwargs.get("error") else "")
        self._forget(ex)
        return True

    def _forget(self, ex: Execution) -> None:
        ex.ctx.stop_event.set()
        with self._inflight_lock:
            if self._inflight.get(ex.lease.task_id) is ex:
                del self._inflight[ex.lease.task_id]
                self._claim_now = True

    # -- heartbeat, reaping, recovery -----------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self._halt.wait(self.settings.heartbeat_s):
            self._guard("heartbeat", self._beat)

    def _beat(self) -> None:
        assert self.worker_id is not None
        with self._inflight_lock:
            snapshot = list(self._inflight.values())
        updates, versions = [], []
        for ex in snapshot:
            version, progress, saved = ex.ctx.snapshot()
            if version != ex.flushed_version:
                updates.append((ex.lease.task_id, ex.lease.attempt, progress, saved))
                versions.append((ex, version))
        held = self.leases.heartbeat(self.worker_id, self.clock.now(), self.settings.lease_ttl_s, updates)
        for ex, version in versions:
            ex.flushed_version = version
        for ex in snapshot:
            if (ex.lease.task_id, ex.lease.attempt) not in held:
                self._events.put(("lost", ex))

    def _reap(self) -> None:
        """Reap the leases of supervisors whose heartbeat stopped changing (see :mod:`reaper`)."""
        assert self._watch is not None
        for dead in self._watch.dead(self.leases.lease_holders(), self.clock.monotonic()):
            lost = self.leases.reclaim_worker(
                dead, self.clock.now(),
                f"lease expired: supervisor {dead} stopped heartbeating for {self.settings.lease_ttl_s:g} s "
                "(crashed, hung or cut off)",
            )
            log.warning("supervisor.reaped dead_worker=%s tasks=%s worker=%s: no heartbeat for %s s",
                        dead, len(lost), self.worker_id, self.settings.lease_ttl_s)

    def _recover_dead_on_host(self) -> None:
        assert self.worker_id is not None
        for worker in self.leases.live_workers_on(self.host, except_id=self.worker_id):
            if liveness.process_alive(worker.pid, worker.started_at):
                continue
            lost = self.leases.reclaim_worker(
                worker.id, self.clock.now(),
                f"its supervisor (worker {worker.id}, pid {worker.pid} on {worker.host}) died",
            )
            log.warning("supervisor.reclaimed dead_worker=%s pid=%s tasks=%s worker=%s: its process is gone",
                        worker.id, worker.pid, len(lost), self.worker_id)

    def _warn_once(self, event: str, exc: BaseException) -> None:
        """A storage error repeats every beat and poll while it lasts: log it once per episode."""
        now = self.clock.monotonic()
        if now - self._warned.get(event, -float("inf")) >= QUIET_S:
            self._warned[event] = now
            log.warning("%s worker=%s error=%s (repeats in the next %g s are not logged)",
                        event, self.worker_id, exc, QUIET_S)

    def _guard(self, what: str, fn: Any) -> None:
        try:
            fn()
        except TenureError as exc:
            self._warn_once(f"{what}.failed", exc)
        except Exception:
            log.exception("%s.crashed worker=%s", what, self.worker_id)

    def _shutdown(self) -> None:
        with self._inflight_lock:
            remaining = list(self._inflight.values())
            self._inflight.clear()
        for ex in remaining:
            ex.ctx.stop_event.set()
        assert self.worker_id is not None
        try:
            if remaining:
                released = self.leases.release(self.worker_id, [ex.lease for ex in remaining],
                                               self.clock.now())
                log.info("supervisor.released worker=%s tasks=%s", self.worker_id, released)
            self.leases.stop_worker(self.worker_id, self.clock.now())
        except TenureError as exc:
            log.warning("supervisor.release_failed worker=%s error=%s (leases expire in %s s)",
                        self.worker_id, exc, self.settings.lease_ttl_s)
        self._halt.set()
        for thread in self._threads:  # the listener closes its connection within a second
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)
        log.info("supervisor.stopped worker=%s", self.worker_id)
        self.stopped.set()
