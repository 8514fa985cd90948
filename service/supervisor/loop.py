"""The supervisor: registers itself, claims due tasks, runs them in its processes, heartbeats, reclaims.

Task code never runs here: it runs in task processes that this supervisor owns (see
:mod:`service.supervisor.pool`), so a task that crashes, hangs in C code, or eats memory fails
alone, and the threads of this process are never starved.

Threads:

* the **loop** (one) only schedules: it claims, hands attempts to the pool, passes what the
  pool reports to :mod:`service.supervisor.endings` (which decides what it means), enforces
  deadlines, writes recorded ends in group commits, compares the leases it holds with the
  attempts it runs, and does the upkeep (:mod:`service.supervisor.upkeep`).
* the **heartbeat** (one): every ``heartbeat_s`` one write keeps all of this supervisor's
  leases alive, carrying the progress, checkpoints and output the tasks reported, and reads
  back which leases it still holds.
* the **listener** (PostgreSQL) or the **doorbell** (SQLite): wakes the loop when new work is
  announced.

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
from service.errors import TenureError
from service.storage import notify
from service.storage.endings import End
from service.storage.leases import Key, Lease, Leases
from service.storage.models import Outcome
from service.supervisor import upkeep
from service.supervisor.attempt import Execution
from service.supervisor.endings import Endings, EndWriter, Next
from service.supervisor.holdings import Holdings
from service.supervisor.pool import Pool
from service.supervisor.processes import Event
from service.supervisor.retry import RetryPolicy
from service.supervisor.timers import Timers
from service.supervisor.upkeep import Upkeep
from service.task_process import wire

log = logging.getLogger("tenure.supervisor")

SCAN_HOST_EVERY_S = 5.0  # how often to look for dead supervisors on this host


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
        self.endings = Endings(self.settings, self.retry)
        # TENURE_HOST names the host where hostnames repeat (containers) or to simulate hosts.
        self.host = host or os.environ.get("TENURE_HOST") or socket.gethostname()
        self.supervisor_id: int | None = None
        self.fatal: BaseException | None = None
        self.pool = Pool(memory_limit_mb=self.settings.memory_limit_mb, kill_grace_s=self.settings.kill_grace_s,
                         process_start_s=self.settings.process_start_s, clock=self.clock)
        self._events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._inflight: dict[Key, Execution] = {}
        self._inflight_lock = threading.Lock()
        self._holdings = Holdings()  # what it runs against what it holds, compared at each heartbeat
        self._stopping = threading.Event()  # stop claiming; finish or release what runs
        self._grace_s = self.settings.shutdown_grace_s
        self._halt = threading.Event()  # side loops end
        self._threads: list[threading.Thread] = []
        from service.supervisor.metrics import SupervisorMetrics  # prometheus_client takes ~20 ms: only where one runs
        self.metrics = SupervisorMetrics(self.clock.monotonic, lambda: len(self._inflight), self.settings.concurrency)
        self.upkeep = Upkeep(self.leases, self.settings, self.clock, self.metrics)
        self._claim_now = False  # a slot came free or work was announced: claim at once
        self._writer = EndWriter(self.leases, self.metrics, self.clock.monotonic)  # ends waiting for their commit
        self._idle_s = self.settings.idle_poll_s
        self.timers = Timers(engine, self.metrics, self._idle_s)  # delayed tasks and schedule slots
        self.stopped = threading.Event()  # set once the loop has ended and leases are released
        self.loop_turns = 0  # how often the loop woke: an idle supervisor must not spin

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Supervisor:
        """Start the task processes, register, reclaim dead supervisors' leases on this host, loop."""
        self.pool.start()  # the zygote boots while the database work below goes on
        try:
            self.supervisor_id = self.upkeep.register(self.host)
        except BaseException:
            self.pool.close()
            raise
        log.info("supervisor.started supervisor=%s host=%s pid=%s concurrency=%s memory_limit_mb=%s",
                 self.supervisor_id, self.host, os.getpid(), self.settings.concurrency,
                 self.settings.memory_limit_mb)
        self._recover_dead_on_host()
        loops = [(self._loop, "loop"), (self._heartbeat_loop, "heartbeat")]
        if self.settings.prune_after_s is not None:
            loops.append((lambda: upkeep.prune_loop(self.leases, self.settings, self._halt), "prune"))
        waker = notify.waker(self.leases.engine, self.supervisor_id, lambda: self._post(("work",)), self._halt,
                             self.settings.idle_poll_s)
        if waker is not None:  # new work rings: the idle poll is only for work due by the clock
            run, name, self._idle_s = waker
            self.timers.idle_s = self._idle_s
            loops.append((run, name))
        for target, name in loops:
            thread = threading.Thread(target=self._supervised(target), name=f"tenure-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)  # only once started: a stop right after start joins what runs
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
            if self._writer.due(now, others_running=len(self._inflight) > len(self._writer)):
                self._write_ends()
            if self._claim_now:
                self._claim_now = False
                next_claim = now
            next_claim = min(next_claim, self.timers.task_due)  # a retry or a delayed task comes due
            if not self._stopping.is_set() and now >= next_claim:
                next_claim = now + self._claim(now)
            if not self._stopping.is_set() and now >= self.timers.slot_due:
                self._guard("schedules", lambda: self.timers.fire(mono(), supervisor_id))
            if self._inflight and now >= next_check:
                next_check = now + self.settings.lease_check_s
                self._guard("lease_check", self._check_leases)
            if now >= next_reclaim:
                next_reclaim = now + self.settings.reclaim_every_s
                self._guard("reclaim", lambda: self.upkeep.reclaim_silent(supervisor_id))
            if now >= next_scan:
                next_scan = now + SCAN_HOST_EVERY_S
                self._guard("scan", self._recover_dead_on_host)
            wake_at = min(next_claim, self.timers.task_due, self.timers.slot_due, next_reclaim, next_scan,
                          self._next_deadline(), self.pool.next_deadline(),
                          self._writer.deadline,
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
            elif kind == "held":
                self._compare_held(event[1], event[2], event[3])

    def _on_pool(self, event: Event) -> None:
        """What a task process said: the attempt goes on (a check now or later), or it has ended."""
        ex = event.ex
        if self._inflight.get(ex.key) is not ex or ex.ending:
            return  # let go of already: its news changes nothing
        step = self.endings.after(ex, event)
        if step is Next.CHECK:
            self.pool.check(ex)  # the first check comes right after run() returns
        elif step is Next.WAIT:
            ex.schedule_check(self.settings, self.clock.monotonic())
        else:
            assert isinstance(step, End)
            self._end(ex, step, "ended")

    def _service_inflight(self, now: float) -> None:
        """Deadlines and due checks."""
        for ex in list(self._inflight.values()):
            if ex.ending:
                continue
            if now >= ex.deadline_mono:
                end = self.endings.overdue(ex)
                self._end(ex, end, "ran past its timeout" if end.outcome is Outcome.TIMED_OUT
                          else "found no task process to run in", force=True)
            elif ex.phase == "waiting" and now >= ex.next_check_mono:
                self.pool.check(ex)

    def _next_deadline(self) -> float:
        return min((ex.wake_at for ex in self._inflight.values()), default=float("inf"))

    def _claim(self, now: float) -> float:
        """Claim into free slots; returns seconds until the next claim should be tried (a slot left
        free looks ahead: the loop wakes when the next delayed task or schedule slot is due, or
        when a rate window that holds work back frees a start)."""
        self.timers.task_due = float("inf")  # set again by the look ahead below; a freed slot claims at once
        room = self.settings.concurrency - len(self._inflight)
        if room <= 0:
            return self._idle_s
        assert self.supervisor_id is not None
        try:
            # A read first: an idle supervisor asks without taking the database's write lock.
            found = self.leases.anything_due(self.settings.queues)
            leases, got = self.leases.claim_within(self.supervisor_id, room, found)
        except TenureError as exc:
            self.upkeep.trouble(self.supervisor_id, "claim.failed", exc)
            return self._idle_s
        for lease in leases:
            self._dispatch(lease)
        if len(leases) < room:  # nothing more can start now: when can it?
            self._guard("look_ahead", lambda: self.timers.after_claim(now, found, got, self.settings.queues))
        # A freed slot or a notification claims at once.
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
            self._end(ex, self.endings.unsendable(ex, exc), "ended")

    # -- ending ---------------------------------------------------------------------------

    def _end(self, ex: Execution, end: End, why: str, *, force: bool = False) -> None:
        """Record how ``ex`` ended, let go of whatever still runs of it, and queue the write."""
        if not ex.record(end, self.clock.monotonic()):
            return
        self.pool.stop(ex, why, force=force)  # a no-op once its process has let it go
        self._writer.add(ex)

    def _write_ends(self) -> None:
        """Write the recorded ends in one transaction; when the database is away they wait."""
        try:
            self._write_batch()
        except TenureError as exc:
            self.upkeep.trouble(self.supervisor_id, "end.deferred", exc)

    def _write_batch(self) -> None:
        """Raises TenureError when the database is away (the ends wait in the writer)."""
        assert self.supervisor_id is not None
        written, error = self._writer.write(self.supervisor_id, self.clock.monotonic())
        for w in written:
            self._let_go(w.ex)  # a slot is free: claim at once (a task lost just now may be the one taken)
        if error is not None:
            raise error

    def _lease_lost(self, ex: Execution) -> None:
        """Cancelled or reclaimed: stop its code now; whoever took the lease wrote its end."""
        if ex.ending:
            return  # its own end is recorded: the write will be fenced off, and let it go then
        log.warning("attempt.lease_lost task=%s attempt=%s supervisor=%s: stopping it", ex.key[0], ex.key[1],
                    self.supervisor_id)
        self.pool.stop(ex, "lost its lease (cancelled, or reclaimed by another supervisor)")
        self.metrics.lease_lost(ex.lease.kind)
        self._let_go(ex)

    def _let_go(self, ex: Execution) -> None:
        self.pool.stop(ex, "ended")  # a no-op once its process has let it go
        with self._inflight_lock:
            if self._inflight.get(ex.key) is ex:
                del self._inflight[ex.key]
                self._holdings.let_go(ex.key)
                self._claim_now = True

    # -- heartbeat, leases, reaping, recovery ---------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self._halt.wait(self.settings.heartbeat_s):
            self._guard("heartbeat", self._beat)

    def _beat(self) -> None:
        assert self.supervisor_id is not None
        with self._inflight_lock:
            snapshot = list(self._inflight.values())
            let_go = self._holdings.let_go_count
        held = self.upkeep.beat(self.supervisor_id, snapshot)
        self._post(("held", held, {ex.key for ex in snapshot}, let_go))

    def _compare_held(self, held: set[Key], beaten: set[Key], let_go_before: int) -> None:
        """What a heartbeat read against what runs (see :mod:`service.supervisor.holdings`)."""
        stop, orphans = self._holdings.compare(held, beaten, let_go_before, self._inflight)
        for ex in stop:
            self._lease_lost(ex)
        if orphans:
            assert self.supervisor_id is not None
            self._guard("orphans", lambda: self.upkeep.hand_back(self.supervisor_id, orphans))

    def _check_leases(self) -> None:
        assert self.supervisor_id is not None
        active = {key for key, ex in self._inflight.items() if not ex.ending}
        for key in self.upkeep.lost_leases(self.supervisor_id, active):
            self._lease_lost(self._inflight[key])

    def _recover_dead_on_host(self) -> None:
        self.upkeep.recover_dead_on_host(self.supervisor_id, self.host)  # type: ignore[arg-type]

    def _guard(self, what: str, fn: Any) -> None:
        self.upkeep.guard(self.supervisor_id, what, fn)

    def _shutdown(self) -> None:
        with self._inflight_lock:
            remaining = [ex for ex in self._inflight.values() if not ex.ending]
        # Their code must not run on beside the next holder: end every task process first.
        self.pool.close()
        now = self.clock.monotonic()
        for ex in remaining:  # uncharged, with their progress and checkpoints
            ex.record(self.endings.released(ex), now)
            self._writer.add(ex)
        assert self.supervisor_id is not None
        try:
            while len(self._writer):  # ended attempts are written, the rest handed back
                self._write_batch()
            self.upkeep.stopping.set()  # a heartbeat from now on must not take the stop for a judgment
            self.leases.stop_supervisor(self.supervisor_id)
            log.info("supervisor.released supervisor=%s tasks=%s", self.supervisor_id, len(remaining))
        except TenureError as exc:
            log.warning("supervisor.release_failed supervisor=%s error=%s (leases expire in %s s)",
                        self.supervisor_id, exc, self.settings.lease_ttl_s)
        with self._inflight_lock:
            self._inflight.clear()
        self._halt.set()
        notify.ring(self.leases.engine, [self.supervisor_id])  # its doorbell ends now, not at its 1 s poll
        for thread in list(self._threads):  # the listener closes its connection within a second
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)
        log.info("supervisor.stopped supervisor=%s", self.supervisor_id)
        self.stopped.set()

