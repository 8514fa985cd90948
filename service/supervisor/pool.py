"""The supervisor's task processes: one zygote, and the hosts it forks to run task code.

Task code runs in hosts, never in the supervisor (see :mod:`service.task_process.runner`). The pool places
attempts in hosts, carries messages both ways, and watches hosts die. It is driven by the
supervisor's loop thread alone: :meth:`Pool.wait` blocks on every socket at once and returns
what happened, so nothing here needs a lock; other threads only call :meth:`wake`. Nothing
here blocks either: messages to a host or to the zygote wait in an outbox until its socket
takes them, so a stuck host or a busy zygote never stalls the loop.

**Blame.** A host runs one ``run()`` at a time; polling tasks between checks stay in the host
that ran them (*parked*), as do async tasks, on its event loop (see :mod:`service.task_process.event_loop`),
so a host may hold several tasks. When a host dies:

* on purpose (the supervisor stopped it: a timeout, a cancel, a lost lease), the task it
  stopped is already accounted for and any other task in it is *lost*, not charged;
* with one task in it, that task did it: the attempt *crashed*, and is charged;
* with several, nobody can tell which: each is *lost*, not charged, and *isolated*: it runs
  alone in a host of its own from then on, where a crash is its own.

When the zygote itself dies every host dies with it: their tasks are lost and isolated, as
nobody can tell whether one of them killed it.

**Placement** (:mod:`service.supervisor.placement`). A ``run()`` goes to an idle host with the same memory
limit, preferring one that already hosts parked tasks (so waiting tasks gather in few processes)
unless a check is executing there or its checks have been slow (they would compete for its GIL),
or it hosts async tasks; else to a new host. An isolated task gets an empty host and shares it
with nobody. Async tasks gather on the event loops of few hosts.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import signal
import socket
from typing import Any

from service.supervisor import placement
from service.supervisor.attempt import Execution, Failure
from service.supervisor.placement import Modes, choose, choose_async
from service.supervisor.processes import Event as Event  # the supervisor takes it from here
from service.supervisor.processes import TaskProcess
from service.supervisor.spawner import Spawner
from service.task_process import wire

log = logging.getLogger("tenure.pool")

EXIT_REPORT_WAIT_S = 2.0  # after a host's socket closes, how long to wait for its exit status
EOF_AFTER_EXIT_S = 0.5  # after a host's exit status, how long to wait for the rest of its messages
IDLE_HOST_S = 30.0  # an idle host beyond the spares is retired after this long
SPARE_HOSTS = 2  # idle hosts kept warm for the next claims


class Pool:
    def __init__(self, *, memory_limit_mb: int | None, kill_grace_s: float, clock: Any) -> None:
        self.memory_limit_mb = memory_limit_mb
        self.kill_grace_s = kill_grace_s
        self.clock = clock
        self.selector = selectors.DefaultSelector()
        self.spawner = Spawner(self.selector, clock)
        self.processes: dict[int, TaskProcess] = {}
        self._by_pid: dict[int, TaskProcess] = {}
        self._next_id = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._wake_r.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self.modes = Modes()  # kinds' shapes (async or blocking), and the executions held till known
        self.closed = False

    @property
    def broken(self) -> str | None:
        """Why this pool cannot run tasks any more (its zygote keeps dying), or None."""
        return self.spawner.broken

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the zygote; hosts are forked from it on demand (a couple are kept warm)."""
        self.spawner.start()
        for _ in range(SPARE_HOSTS):
            self._fork(self.memory_limit_mb)

    def close(self) -> None:
        """Stop every host at once and the zygote with them. Idempotent."""
        if self.closed:
            return
        self.closed = True
        for h in list(self.processes.values()):
            h.signal(signal.SIGKILL)
            self._drop_host(h)
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
        """Start ``ex``'s run() in a host (at once, or as soon as the zygote has forked one).

        Raises:
            wire.FrameTooLarge: its args or checkpoint cannot be sent to a task process (one held
                till its kind's shape is known fails later, as a ``ran`` event).
        """
        self.spawner.ensure_module(ex.lease.kind)
        if self.modes.admit(ex):
            self._place(ex, self._frame(ex))
        else:  # held until its kind's shape is known (not its time either); a frame too large fails it then
            ex.await_process()

    def _frame(self, ex: Execution) -> bytes:
        return placement.frame(ex, on_loop=self.modes.on_loop(ex))

    def _place(self, ex: Execution, frame: bytes) -> None:
        """An async kind's execution waits on a host's event loop (parked); any other runs on its main thread."""
        lease = ex.lease
        limit = lease.memory_limit_mb or self.memory_limit_mb
        hosts = self.processes.values()
        if self.modes.on_loop(ex):
            target = choose_async(hosts, limit) or self._fork(limit)
            target.parked[ex.key] = ex
            target.asyncs.add(ex.key)
        else:
            target = choose(hosts, limit, isolated=lease.isolated) or self._fork(limit)
            target.running = ex
            target.isolated = target.isolated or lease.isolated
        if not target.greeted:
            ex.await_process()
        else:
            ex.restart_clock(self.clock.monotonic())  # it was held: that wait was not its time
        ex.process = target
        target.send(frame, self.selector)

    def _place_ready(self) -> list[Event]:
        """Place what the pool held until its kind's shape was known."""
        events = []
        for ex in self.modes.ready():
            try:
                self._place(ex, self._frame(ex))
            except (wire.FrameTooLarge, TypeError, ValueError) as exc:
                failure = Failure(f"its args or checkpoint cannot be sent to a task process: {exc}", permanent=True)
                events.append(Event("ran", ex, failure=failure))
        return events

    def check(self, ex: Execution) -> None:
        """Ask the host that holds ``ex`` for one check_output() call."""
        h: TaskProcess | None = ex.process
        if h is not None:
            h.checks[ex.key] = self.clock.monotonic()
            self._send(h, {"op": "check", "key": list(ex.key)})

    def stop(self, ex: Execution, why: str, *, force_check: bool = False) -> None:
        """Stop ``ex`` for real: end the host running its ``run()``, or drop a polling task.

        ``why`` completes "task 5 (attempt 1) …", e.g. "ran past its timeout". A host that is
        executing the attempt's ``run()`` is terminated (SIGTERM, then SIGKILL after
        ``kill_grace_s``; whatever its task started goes with it); any other task it hosted is
        reported ``lost``, not charged. A polling task is dropped from its host; with
        ``force_check`` a ``check_output()`` call still executing (a hung one, past its
        timeout) ends its host too. ``ex`` itself is forgotten at once: no event about it follows.
        """
        h: TaskProcess | None = ex.process
        ex.process = None
        if h is None:
            self.modes.release(ex)  # held, not placed yet: nothing of it runs
            return
        culprit = f"task {ex.key[0]} (attempt {ex.key[1]}) {why}"
        checking = h.checks.pop(ex.key, None) is not None
        if h.running is ex:
            h.running = None
            self._doom(h, culprit)
        elif ex.key in h.parked:
            del h.parked[ex.key]
            on_loop = ex.key in h.asyncs
            h.asyncs.discard(ex.key)
            # A check executing on a thread runs on: only ending the process stops it. On the event
            # loop the host cancels it, and says "stuck" if the loop is blocked by it.
            if force_check and checking and not on_loop:
                self._doom(h, culprit)
            else:
                self._send(h, {"op": "drop", "key": list(ex.key)})
        self._maybe_idle(h)

    # -- the loop's wait ------------------------------------------------------------------

    def wait(self, timeout_s: float) -> list[Event]:
        """Block up to ``timeout_s`` for messages from hosts and the zygote; returns the events."""
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
                    events.extend(self._from_zygote())
            else:
                h = self.processes.get(key.data)
                if h is None:
                    continue
                if mask & selectors.EVENT_WRITE:
                    h.flush(self.selector)
                if mask & selectors.EVENT_READ:
                    events.extend(self._from_host(h))
        events.extend(self.tick())
        events.extend(self._place_ready())
        return events

    def tick(self) -> list[Event]:
        """Deadlines: SIGKILL after the grace, deaths whose last news never came, idle hosts."""
        now = self.clock.monotonic()
        events: list[Event] = []
        for h in list(self.processes.values()):
            if h.kill_at is not None and now >= h.kill_at:
                h.signal(signal.SIGKILL)
                h.kill_at = None
            if h.eof_mono is not None and (h.exited_mono is not None or now - h.eof_mono >= EXIT_REPORT_WAIT_S):
                events.extend(self._bury(h))
            elif h.exited_mono is not None and now - h.exited_mono >= EOF_AFTER_EXIT_S:
                # Gone, though something still holds its socket open: do not wait for it.
                events.extend(self._bury(h))
        for h in self._retirable():
            if now - h.idle_since >= IDLE_HOST_S:
                self._send(h, {"op": "exit"})
                h.doomed = "retired: idle"
        if not self.closed:
            self.spawner.tick(now)
        return events

    def next_deadline(self) -> float:
        soonest = float("inf")
        for h in self.processes.values():
            if h.kill_at is not None:
                soonest = min(soonest, h.kill_at)
            if h.eof_mono is not None:
                soonest = min(soonest, h.eof_mono + EXIT_REPORT_WAIT_S)
            elif h.exited_mono is not None:
                soonest = min(soonest, h.exited_mono + EOF_AFTER_EXIT_S)
        for h in self._retirable():  # the spares kept warm have no deadline: a loop must not spin on them
            soonest = min(soonest, h.idle_since + IDLE_HOST_S)
        return min(soonest, self.spawner.next_deadline())

    def _retirable(self) -> list[TaskProcess]:
        """Idle hosts beyond the spares, longest idle first: what idleness retires."""
        idle = sorted((h for h in self.processes.values() if h.alive and h.empty), key=lambda h: h.idle_since)
        return idle[:max(0, len(idle) - SPARE_HOSTS)]

    @property
    def process_count(self) -> int:
        return len(self.processes)

    # -- messages from hosts --------------------------------------------------------------

    def _from_host(self, h: TaskProcess) -> list[Event]:
        try:
            data = h.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(h.sock)
            h.eof_mono = self.clock.monotonic()
            return self._bury(h) if h.exited_mono is not None else []
        try:
            messages = h.reader.feed(data)
        except wire.ProtocolError as exc:
            log.error("pool.protocol_error host=%s pid=%s error=%s", h.id, h.pid, exc)
            self._doom(h, "it broke the protocol")
            return []
        events = []
        for message in messages:
            event = self._message(h, message)
            if event is not None:
                events.append(event)
        return events

    def _message(self, h: TaskProcess, message: dict[str, Any]) -> Event | None:
        op = message.get("op")
        if op == "hello":
            self._learn_pid(h, int(message["pid"]))
            h.greeted = True
            for hosted in h.occupants:  # forked for them: the wait for a process is not the tasks' time
                hosted.restart_clock(self.clock.monotonic())
            return None
        if op == "fatal":
            h.fatal = str(message.get("reason"))
            return None
        raw_key = message.get("key")
        if not isinstance(raw_key, list) or len(raw_key) != 2:
            return None
        key = (int(raw_key[0]), int(raw_key[1]))
        if op == "stuck":  # a task stopped while it blocks the event loop: only ending the host stops it
            self._doom(h, f"task {key[0]} (attempt {key[1]}) blocked its event loop past a stop request")
            return None
        ex = h.running if h.running is not None and h.running.key == key else h.parked.get(key)
        if ex is None:
            return None  # an attempt already stopped or forgotten: its news changes nothing
        if op == "began":
            return self._began(h, ex, bool(message.get("async")))
        if "v" in message:
            ex.reported(int(message["v"]), message.get("progress", 0.0), message.get("checkpoint"))
        if "log" in message or "log_cut" in message:
            ex.add_logs(message.get("log"), message.get("log_cut"))
        failure = Failure.from_wire(message["error"]) if "error" in message else None
        if op == "ran":
            if h.running is ex:
                h.running = None
            if message.get("polling") and failure is None:
                h.parked[key] = ex
                if message.get("threads"):
                    h.asyncs.discard(key)
                asked = message.get("poll_interval_s")
                ex.asked_interval_s = float(asked) if isinstance(asked, (int, float)) and asked > 0 else None
                return Event("ran", ex, polling=True)
            ex.process = None
            h.parked.pop(key, None)
            h.asyncs.discard(key)
            self._maybe_idle(h)
            return Event("ran", ex, value=message.get("value"), failure=failure)
        if op == "checked":
            started = h.checks.pop(key, None)
            if started is not None:
                h.slowest_check_s = max(h.slowest_check_s, self.clock.monotonic() - started)
            if failure is None and message.get("value") is not None:
                h.parked.pop(key, None)
                h.asyncs.discard(key)
                ex.process = None
                self._maybe_idle(h)
            return Event("checked", ex, value=message.get("value"), failure=failure)
        return None

    def _began(self, h: TaskProcess, ex: Execution, is_async: bool) -> Event | None:
        """A host built ``ex``'s task and says whether its run() is async: the pool learns the kind's shape."""
        self.modes.learn(ex.lease.kind, is_async)
        if is_async and h.running is ex:  # its run() went to the host's loop: the main thread is free
            h.running = None
            h.parked[ex.key] = ex
            h.asyncs.add(ex.key)
        elif not is_async and ex.key in h.asyncs:  # sent to a loop, its run() is not async: place it anew
            del h.parked[ex.key]
            h.asyncs.discard(ex.key)
            self._maybe_idle(h)
            ex.process = None
            self._place(ex, self._frame(ex))
        return None

    # -- the zygote -----------------------------------------------------------------------

    def _from_zygote(self) -> list[Event]:
        events: list[Event] = []
        for message in self.spawner.readable():
            op = message.get("op")
            if op == "forked":
                h = self.processes.get(int(message["host"]))
                if h is not None:
                    self._learn_pid(h, int(message["pid"]))
            elif op == "exited":
                h = self._by_pid.pop(int(message["pid"]), None)
                if h is not None:
                    h.exit_code, h.exited_mono = int(message["code"]), self.clock.monotonic()
            elif op == "died" and not self.closed:
                events.extend(self._zygote_died(message.get("code")))
        return events

    def _zygote_died(self, code: int | None) -> list[Event]:
        """Every host dies with the zygote (PR_SET_PDEATHSIG), and one of their tasks may have killed it."""
        events, busy = [], False
        reason = (f"the process that forks task processes died (exit status {code}) and its task processes "
                  "with it: not charged, and it runs alone in a process of its own from now on")
        for h in list(self.processes.values()):
            busy = busy or not h.empty
            for ex in h.occupants:
                ex.process = None
                events.append(Event("lost", ex, reason=reason, isolate=True))
            h.running, h.parked, h.asyncs = None, {}, set()
            if h.doomed is None:
                h.doomed = "its zygote died"
            h.signal(signal.SIGKILL)
            self._drop_host(h)
        self.spawner.died(tasks_were_running=busy)
        return events

    # -- hosts ----------------------------------------------------------------------------

    def _fork(self, limit: int | None) -> TaskProcess:
        self._next_id += 1
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        now = self.clock.monotonic()
        h = TaskProcess(id=self._next_id, sock=ours, memory_limit_mb=limit, born_mono=now, idle_since=now)
        self.processes[h.id] = h
        self.selector.register(ours, selectors.EVENT_READ, h.id)
        if not self.spawner.fork(h.id, limit, theirs):
            # No zygote: the host's socket reads EOF at once, and its tasks are handed back.
            h.doomed = "the process that forks task processes is not running"
        return h

    def _learn_pid(self, h: TaskProcess, pid: int) -> None:
        if h.pid is not None:
            return
        h.pid = pid
        self._by_pid[pid] = h
        if h.doomed is not None and h.kill_at is None:  # stopped before we knew whom to signal
            h.signal(signal.SIGTERM)
            h.kill_at = self.clock.monotonic() + self.kill_grace_s

    def _send(self, h: TaskProcess, message: dict[str, Any]) -> None:
        h.send(wire.encode(message), self.selector)

    def _doom(self, h: TaskProcess, why: str) -> None:
        h.doom(why, self.clock.monotonic() + self.kill_grace_s)

    def _maybe_idle(self, h: TaskProcess) -> None:
        h.maybe_idle(self.clock.monotonic())

    def _bury(self, h: TaskProcess) -> list[Event]:
        """The host is gone: say what became of each task still in it."""
        self._drop_host(h)
        occupants = h.occupants
        h.running, h.parked, h.asyncs = None, {}, set()
        for ex in occupants:
            ex.process = None
        if not occupants:
            if h.doomed is None:
                log.warning("pool.host_died host=%s pid=%s %s (it was idle)", h.id, h.pid, h.death())
            return []
        log.warning("pool.host_died host=%s pid=%s tasks=%s%s %s%s", h.id, h.pid, [ex.key for ex in occupants[:20]],
                    f" and {len(occupants) - 20} more" if len(occupants) > 20 else "", h.death(),
                    f" (stopped: {h.doomed})" if h.doomed else "")
        return h.fates(occupants)

    def _drop_host(self, h: TaskProcess) -> None:
        self.processes.pop(h.id, None)
        if h.pid is not None and self._by_pid.get(h.pid) is h:
            del self._by_pid[h.pid]
        if h.eof_mono is None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(h.sock)
        h.sock.close()
