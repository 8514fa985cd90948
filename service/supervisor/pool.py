"""The supervisor's task processes: one zygote, and the processes it forks to run task code.

Task code runs in task processes, never in the supervisor (see
:mod:`service.task_process.runner`). The pool places attempts in them (:mod:`placement`),
carries messages both ways (:mod:`inbox`), and watches them die (:mod:`processes`, which says
who is to blame). It is driven by the supervisor's loop thread alone: :meth:`Pool.wait` blocks
on every socket at once and returns what happened, so nothing here needs a lock; other threads
only call :meth:`wake`. Nothing here blocks either: messages to a task process or to the zygote
wait in an outbox until its socket takes them, so a stuck process or a busy zygote never
stalls the loop.

A task process runs one ``run()`` at a time; polling tasks between checks stay in the process
that ran them (*parked*), as do async tasks, on its event loop (see
:mod:`service.task_process.event_loop`), so a process may hold several attempts. A process is
reused for the next ``run()`` unless its last occupant left something running in it (a thread,
a child process, an alarm): then it *retires*, taking no one new and exiting once empty.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import signal
import socket
from typing import Any

from service.supervisor import placement
from service.supervisor.attempt import Execution, Failure, Phase
from service.supervisor.inbox import Inbox
from service.supervisor.placement import Modes, choose, choose_async
from service.supervisor.processes import Event, TaskProcess
from service.supervisor.spawner import Spawner
from service.task_process import wire

log = logging.getLogger("tenure.pool")

EXIT_REPORT_WAIT_S = 2.0  # after a process's socket closes, how long to wait for its exit status
EOF_AFTER_EXIT_S = 0.5  # after a process's exit status, how long to wait for the rest of its messages
IDLE_PROCESS_S = 30.0  # an idle process beyond the spares is retired after this long
SPARE_PROCESSES = 2  # idle processes kept warm for the next claims


class Pool:
    def __init__(self, *, memory_limit_mb: int | None, kill_grace_s: float, process_start_s: float,
                 clock: Any) -> None:
        self.memory_limit_mb = memory_limit_mb
        self.kill_grace_s = kill_grace_s
        self.process_start_s = process_start_s
        self.clock = clock
        self.selector = selectors.DefaultSelector()
        self.spawner = Spawner(self.selector, clock)
        self.processes: dict[int, TaskProcess] = {}
        self.by_pid: dict[int, TaskProcess] = {}
        self._next_id = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._wake_r.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self.modes = Modes()  # kinds' shapes (async or blocking, parking), and the executions held till known
        self.inbox = Inbox(self)
        self.closed = False

    @property
    def broken(self) -> str | None:
        """Why this pool cannot run tasks any more (its zygote keeps dying), or None."""
        return self.spawner.broken

    @property
    def process_count(self) -> int:
        return len(self.processes)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the zygote; task processes are forked from it on demand (a couple are kept warm)."""
        self.spawner.start()
        for _ in range(SPARE_PROCESSES):
            self.fork(self.memory_limit_mb)

    def close(self) -> None:
        """Stop every task process at once and the zygote with them. Idempotent."""
        if self.closed:
            return
        self.closed = True
        for p in list(self.processes.values()):
            p.signal(signal.SIGKILL)
            self.drop(p)
        self.spawner.close()
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def wake(self) -> None:
        """Make :meth:`wait` return now (safe from any thread)."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"!")

    # -- placing work ---------------------------------------------------------------------

    def run(self, ex: Execution) -> None:
        """Start ``ex``'s run() in a task process (at once, or as soon as the zygote has forked one).

        Raises:
            wire.FrameTooLarge: its args or checkpoint cannot be sent to a task process (one held
                till its kind's shape is known fails later, as a ``ran`` event).
        """
        self.spawner.ensure_module(ex.lease.kind)
        if self.modes.admit(ex):
            self.place(ex, self._frame(ex))
        else:  # held until its kind's shape is known (not its time either); a frame too large fails it then
            ex.await_process(self.process_start_s)

    def _frame(self, ex: Execution) -> bytes:
        return placement.frame(ex, on_loop=self.modes.on_loop(ex))

    def place(self, ex: Execution, frame: bytes) -> None:
        """An async kind's execution waits on a process's event loop (parked); any other runs on its main thread."""
        lease = ex.lease
        limit = lease.memory_limit_mb or self.memory_limit_mb
        if self.modes.on_loop(ex):
            target = choose_async(self.processes.values(), limit) or self.fork(limit)
            target.parked[ex.key] = ex
            target.asyncs.add(ex.key)
        else:
            target = choose(self.processes.values(), limit, isolated=lease.isolated,
                            parks=self.modes.parks(ex)) or self.fork(limit)
            target.running = ex
            target.isolated = target.isolated or lease.isolated
        if not target.greeted:
            ex.await_process(self.process_start_s)
        else:
            ex.restart_clock(self.clock.monotonic())  # it was held: that wait was not its time
        target.admit(ex)
        target.send(frame, self.selector)

    def _place_ready(self) -> list[Event]:
        """Place what the pool held until its kind's shape was known."""
        events = []
        for ex in self.modes.ready():
            try:
                self.place(ex, self._frame(ex))
            except (wire.FrameTooLarge, TypeError, ValueError) as exc:
                failure = Failure(f"its args or checkpoint cannot be sent to a task process: {exc}", permanent=True)
                events.append(Event("ran", ex, failure=failure))
        return events

    def check(self, ex: Execution) -> None:
        """Ask the process that holds ``ex`` for one check_output() call."""
        p: TaskProcess | None = ex.process
        if p is not None:
            ex.to(Phase.CHECKING)
            p.checks[ex.key] = self.clock.monotonic()
            self.send(p, {"op": "check", "key": list(ex.key)})

    def stop(self, ex: Execution, why: str, *, force: bool = False) -> None:
        """Stop ``ex`` for real: end the process running its ``run()``, or drop a parked task.

        ``why`` completes "task 5 (attempt 1) …", e.g. "ran past its timeout". A process that is
        executing the attempt's ``run()`` is terminated (SIGTERM, then SIGKILL after
        ``kill_grace_s``; whatever its task started goes with it); any other attempt in it
        dies ``stopped`` (lost, never counted). A parked task is dropped from its process; with
        ``force`` a ``check_output()`` call still executing on a thread (a hung one, past its
        timeout) ends the process too. ``ex`` itself is let go at once: no event about it follows.
        A no-op for an attempt no process holds.
        """
        p: TaskProcess | None = ex.process
        ex.process = None
        if self.closed:
            return  # every process is gone already
        if p is None:
            self.modes.release(ex)  # held, not placed yet: nothing of it runs
            return
        culprit = f"task {ex.key[0]} (attempt {ex.key[1]}) {why}"
        checking = p.checks.pop(ex.key, None) is not None
        if p.running is ex:
            p.running = None
            self.doom(p, culprit)
        elif ex.key in p.parked:
            del p.parked[ex.key]
            on_loop = ex.key in p.asyncs
            p.asyncs.discard(ex.key)
            # A check executing on a thread runs on: only ending the process stops it. On the event
            # loop the process cancels it, and says "stuck" if the loop is blocked by it.
            if force and checking and not on_loop:
                self.doom(p, culprit)
            else:
                self.send(p, {"op": "drop", "key": list(ex.key)})
        self.maybe_idle(p)

    # -- the loop's wait ------------------------------------------------------------------

    def wait(self, timeout_s: float) -> list[Event]:
        """Block up to ``timeout_s`` for messages from task processes and the zygote; returns the events."""
        events: list[Event] = []
        if self.closed:
            return events
        for key, mask in self.selector.select(max(0.0, timeout_s)):
            if key.data == "wake":
                with contextlib.suppress(BlockingIOError):
                    while self._wake_r.recv(4096):
                        pass
            elif key.data == "zygote":
                if mask & selectors.EVENT_WRITE:
                    self.spawner.writable()
                if mask & selectors.EVENT_READ:
                    events.extend(self.inbox.from_zygote())
            else:
                p = self.processes.get(key.data)
                if p is None:
                    continue
                if mask & selectors.EVENT_WRITE:
                    p.flush(self.selector)
                if mask & selectors.EVENT_READ:
                    events.extend(self.inbox.from_process(p))
        events.extend(self.tick())
        events.extend(self._place_ready())
        return events

    def tick(self) -> list[Event]:
        """Deadlines: SIGKILL after the grace, deaths whose last news never came, idle processes."""
        now = self.clock.monotonic()
        events: list[Event] = []
        for p in list(self.processes.values()):
            if p.kill_at is not None and now >= p.kill_at:
                p.signal(signal.SIGKILL)
                p.kill_at = None
            if p.eof_mono is not None and (p.exited_mono is not None or now - p.eof_mono >= EXIT_REPORT_WAIT_S):
                events.extend(self.bury(p))
            elif p.exited_mono is not None and now - p.exited_mono >= EOF_AFTER_EXIT_S:
                # Gone, though something still holds its socket open: do not wait for it.
                events.extend(self.bury(p))
        for p in self._retirable():
            if now - p.idle_since >= IDLE_PROCESS_S:
                self.retire(p, "idle")
        if not self.closed:
            self.spawner.tick(now)
        return events

    def next_deadline(self) -> float:
        soonest = float("inf")
        for p in self.processes.values():
            if p.kill_at is not None:
                soonest = min(soonest, p.kill_at)
            if p.eof_mono is not None:
                soonest = min(soonest, p.eof_mono + EXIT_REPORT_WAIT_S)
            elif p.exited_mono is not None:
                soonest = min(soonest, p.exited_mono + EOF_AFTER_EXIT_S)
        for p in self._retirable():  # the spares kept warm have no deadline: a loop must not spin on them
            soonest = min(soonest, p.idle_since + IDLE_PROCESS_S)
        return min(soonest, self.spawner.next_deadline())

    def _retirable(self) -> list[TaskProcess]:
        """Idle processes beyond the spares, longest idle first: what idleness retires."""
        idle = sorted((p for p in self.processes.values() if p.open_to_new and p.empty), key=lambda p: p.idle_since)
        return idle[:max(0, len(idle) - SPARE_PROCESSES)]

    # -- task processes -------------------------------------------------------------------

    def fork(self, limit: int | None) -> TaskProcess:
        self._next_id += 1
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        now = self.clock.monotonic()
        p = TaskProcess(id=self._next_id, sock=ours, memory_limit_mb=limit, born_mono=now, idle_since=now)
        self.processes[p.id] = p
        self.selector.register(ours, selectors.EVENT_READ, p.id)
        if not self.spawner.fork(p.id, limit, theirs):
            # No zygote: the process's socket reads EOF at once, and its attempts are handed back.
            p.doomed = "the process that forks task processes is not running"
        return p

    def learn_pid(self, p: TaskProcess, pid: int) -> None:
        if p.pid is not None:
            return
        p.pid = pid
        self.by_pid[pid] = p
        log.debug("pool.forked process=%s pid=%s", p.id, pid)
        if p.doomed is not None and p.kill_at is None:  # stopped before we knew whom to signal
            p.signal(signal.SIGTERM)
            p.kill_at = self.clock.monotonic() + self.kill_grace_s

    def send(self, p: TaskProcess, message: dict[str, Any]) -> None:
        p.send(wire.encode(message), self.selector)

    def doom(self, p: TaskProcess, why: str, *, on_purpose: bool = True) -> None:
        p.doom(why, self.clock.monotonic() + self.kill_grace_s, on_purpose=on_purpose)

    def retire(self, p: TaskProcess, why: str) -> None:
        """Take no one new into ``p``; it exits as soon as it is empty (at once if it is)."""
        if p.retiring is None:
            p.retiring = why
            log.info("pool.retiring process=%s pid=%s: %s", p.id, p.pid, why)
        self.maybe_idle(p)

    def maybe_idle(self, p: TaskProcess) -> None:
        p.maybe_idle(self.clock.monotonic())
        if p.empty and p.retiring is not None and p.doomed is None:
            self.send(p, {"op": "exit"})
            p.doomed = f"retired: {p.retiring}"

    def bury(self, p: TaskProcess) -> list[Event]:
        """The process is gone: say what became of each attempt still in it."""
        self.drop(p)
        occupants = p.occupants
        p.running, p.parked, p.asyncs = None, {}, set()
        for ex in occupants:
            ex.process = None
        if not occupants:
            if p.doomed is None:
                log.warning("pool.process_died process=%s pid=%s %s (it was idle)", p.id, p.pid, p.death())
            return []
        more = f" and {len(occupants) - 20} more" if len(occupants) > 20 else ""
        log.warning("pool.process_died process=%s pid=%s tasks=%s%s %s%s", p.id, p.pid,
                    [ex.key for ex in occupants[:20]], more, p.death(), f" (stopped: {p.doomed})" if p.doomed else "")
        return p.fates(occupants)

    def drop(self, p: TaskProcess) -> None:
        self.processes.pop(p.id, None)
        if p.pid is not None and self.by_pid.get(p.pid) is p:
            del self.by_pid[p.pid]
        if p.eof_mono is None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(p.sock)
        p.sock.close()
