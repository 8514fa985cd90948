"""The supervisor's task processes: one zygote, and the hosts it forks to run task code.

Task code runs in hosts, never in the supervisor (see :mod:`service.host`). The pool places
attempts in hosts, carries messages both ways, and watches hosts die. It is driven by the
supervisor's loop thread alone: :meth:`Pool.wait` blocks on every socket at once and returns
what happened, so nothing here needs a lock; other threads only call :meth:`wake`. Nothing
here blocks either: messages to a host or to the zygote wait in an outbox until its socket
takes them, so a stuck host or a busy zygote never stalls the loop.

**Blame.** A host runs one ``run()`` at a time; polling tasks between checks stay in the host
that ran them (*parked*), so a host may hold several tasks. When a host dies:

* on purpose (the supervisor stopped it: a timeout, a cancel, a lost lease), the task it
  stopped is already accounted for and any other task in it is *lost*, not charged;
* with one task in it, that task did it: the attempt *crashed*, and is charged;
* with several, nobody can tell which: each is *lost*, not charged, and *isolated*: it runs
  alone in a host of its own from then on, where a crash is its own.

When the zygote itself dies every host dies with it: their tasks are lost and isolated, as
nobody can tell whether one of them killed it.

**Placement.** A ``run()`` goes to an idle host with the same memory limit, preferring one
that already hosts parked tasks (so waiting tasks gather in few processes) unless a check is
executing there or its checks have been slow (they would compete for its GIL); else to a new
host. An isolated task gets an empty host and shares it with nobody.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import signal
import socket
from dataclasses import dataclass
from typing import Any

from service import wire
from service.executor import Execution, Failure
from service.hosts import Host
from service.spawner import Spawner, kind_module, main_path

log = logging.getLogger("tenure.pool")

EXIT_REPORT_WAIT_S = 2.0  # after a host's socket closes, how long to wait for its exit status
EOF_AFTER_EXIT_S = 0.5  # after a host's exit status, how long to wait for the rest of its messages
IDLE_HOST_S = 30.0  # an idle host beyond the spares is retired after this long
SPARE_HOSTS = 2  # idle hosts kept warm for the next claims
SLOW_CHECK_S = 0.05  # a host whose checks take longer than this gets no run() beside them


@dataclass(frozen=True)
class Event:
    """What the pool reports to the supervisor's loop.

    ``kind`` is ``ran`` (run() ended: ``value``, ``failure`` or ``polling``), ``checked``
    (check_output() answered ``value`` or ``failure``), ``crashed`` (its host died with it
    alone inside: charged) or ``lost`` (its host died with others inside, or was stopped for
    another task's sake: not charged; ``isolate`` when blame is unclear).
    """

    kind: str
    ex: Execution
    value: Any = None
    failure: Failure | None = None
    polling: bool = False
    reason: str = ""
    isolate: bool = False


class Pool:
    def __init__(self, *, memory_limit_mb: int | None, kill_grace_s: float, clock: Any) -> None:
        self.memory_limit_mb = memory_limit_mb
        self.kill_grace_s = kill_grace_s
        self.clock = clock
        self.selector = selectors.DefaultSelector()
        self.spawner = Spawner(self.selector, clock)
        self.hosts: dict[int, Host] = {}
        self._by_pid: dict[int, Host] = {}
        self._next_id = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._wake_r.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, "wake")
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
        for h in list(self.hosts.values()):
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
            wire.FrameTooLarge: its args or checkpoint cannot be sent to a task process.
        """
        lease = ex.lease
        frame = wire.encode({
            "op": "run", "key": list(ex.key), "kind": lease.kind, "module": kind_module(lease.kind),
            "main": main_path(), "args": lease.args,
            "ctx": {"run_id": lease.run_id, "position": lease.position, "saved": ex.snapshot()[2]},
        })
        self.spawner.ensure_module(lease.kind)
        limit = lease.memory_limit_mb or self.memory_limit_mb
        target = self._choose(limit, isolated=lease.isolated)
        if target is None:
            target = self._fork(limit)
        target.running = ex
        if not target.greeted:
            ex.await_process()
        target.isolated = target.isolated or lease.isolated
        ex.host = target
        target.send(frame, self.selector)

    def check(self, ex: Execution) -> None:
        """Ask the host that holds ``ex`` for one check_output() call."""
        h: Host | None = ex.host
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
        h: Host | None = ex.host
        ex.host = None
        if h is None:
            return
        culprit = f"task {ex.key[0]} (attempt {ex.key[1]}) {why}"
        checking = h.checks.pop(ex.key, None) is not None
        if h.running is ex:
            h.running = None
            self._doom(h, culprit)
        elif ex.key in h.parked:
            del h.parked[ex.key]
            if force_check and checking:  # its code runs on: only ending the process stops it
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
                h = self.hosts.get(key.data)
                if h is None:
                    continue
                if mask & selectors.EVENT_WRITE:
                    h.flush(self.selector)
                if mask & selectors.EVENT_READ:
                    events.extend(self._from_host(h))
        events.extend(self.tick())
        return events

    def tick(self) -> list[Event]:
        """Deadlines: SIGKILL after the grace, deaths whose last news never came, idle hosts."""
        now = self.clock.monotonic()
        events: list[Event] = []
        for h in list(self.hosts.values()):
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
        for h in self.hosts.values():
            if h.kill_at is not None:
                soonest = min(soonest, h.kill_at)
            if h.eof_mono is not None:
                soonest = min(soonest, h.eof_mono + EXIT_REPORT_WAIT_S)
            elif h.exited_mono is not None:
                soonest = min(soonest, h.exited_mono + EOF_AFTER_EXIT_S)
        for h in self._retirable():  # the spares kept warm have no deadline: a loop must not spin on them
            soonest = min(soonest, h.idle_since + IDLE_HOST_S)
        return min(soonest, self.spawner.next_deadline())

    def _retirable(self) -> list[Host]:
        """Idle hosts beyond the spares, longest idle first: what idleness retires."""
        idle = sorted((h for h in self.hosts.values() if h.alive and not h.occupants), key=lambda h: h.idle_since)
        return idle[:max(0, len(idle) - SPARE_HOSTS)]

    @property
    def host_count(self) -> int:
        return len(self.hosts)

    # -- messages from hosts --------------------------------------------------------------

    def _from_host(self, h: Host) -> list[Event]:
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

    def _message(self, h: Host, message: dict[str, Any]) -> Event | None:
        op = message.get("op")
        if op == "hello":
            self._learn_pid(h, int(message["pid"]))
            h.greeted = True
            if h.running is not None:  # forked for it: the wait for a process is not the task's time
                h.running.restart_clock(self.clock.monotonic())
            return None
        if op == "fatal":
            h.fatal = str(message.get("reason"))
            return None
        raw_key = message.get("key")
        if not isinstance(raw_key, list) or len(raw_key) != 2:
            return None
        key = (int(raw_key[0]), int(raw_key[1]))
        ex = h.running if h.running is not None and h.running.key == key else h.parked.get(key)
        if ex is None:
            return None  # an attempt already stopped or forgotten: its news changes nothing
        if "v" in message:
            ex.reported(int(message["v"]), message.get("progress", 0.0), message.get("checkpoint"))
        if "log" in message or "log_cut" in message:
            ex.add_logs(message.get("log"), message.get("log_cut"))
        failure = Failure.from_wire(message["error"]) if "error" in message else None
        if op == "ran":
            h.running = None
            if message.get("polling") and failure is None:
                h.parked[key] = ex
                asked = message.get("poll_interval_s")
                ex.asked_interval_s = float(asked) if isinstance(asked, (int, float)) and asked > 0 else None
                return Event("ran", ex, polling=True)
            ex.host = None
            self._maybe_idle(h)
            return Event("ran", ex, value=message.get("value"), failure=failure)
        if op == "checked":
            started = h.checks.pop(key, None)
            if started is not None:
                h.slowest_check_s = max(h.slowest_check_s, self.clock.monotonic() - started)
            if failure is None and message.get("value") is not None:
                h.parked.pop(key, None)
                ex.host = None
                self._maybe_idle(h)
            return Event("checked", ex, value=message.get("value"), failure=failure)
        return None

    # -- the zygote -----------------------------------------------------------------------

    def _from_zygote(self) -> list[Event]:
        events: list[Event] = []
        for message in self.spawner.readable():
            op = message.get("op")
            if op == "forked":
                h = self.hosts.get(int(message["host"]))
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
        for h in list(self.hosts.values()):
            busy = busy or bool(h.occupants)
            for ex in h.occupants:
                ex.host = None
                events.append(Event("lost", ex, reason=reason, isolate=True))
            h.running, h.parked = None, {}
            if h.doomed is None:
                h.doomed = "its zygote died"
            h.signal(signal.SIGKILL)
            self._drop_host(h)
        self.spawner.died(tasks_were_running=busy)
        return events

    # -- hosts ----------------------------------------------------------------------------

    def _choose(self, limit: int | None, *, isolated: bool) -> Host | None:
        idle = [h for h in self.hosts.values()
                if h.alive and h.running is None and not h.isolated and h.memory_limit_mb == limit
                and not h.checks and h.slowest_check_s <= SLOW_CHECK_S]
        if isolated:
            idle = [h for h in idle if not h.parked]
        if not idle:
            return None
        # Gather polling tasks in few hosts; among equals take the oldest (its pages are warm).
        return max(idle, key=lambda h: (len(h.parked), -h.id))

    def _fork(self, limit: int | None) -> Host:
        self._next_id += 1
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        now = self.clock.monotonic()
        h = Host(id=self._next_id, sock=ours, memory_limit_mb=limit, born_mono=now, idle_since=now)
        self.hosts[h.id] = h
        self.selector.register(ours, selectors.EVENT_READ, h.id)
        if not self.spawner.fork(h.id, limit, theirs):
            # No zygote: the host's socket reads EOF at once, and its tasks are handed back.
            h.doomed = "the process that forks task processes is not running"
        return h

    def _learn_pid(self, h: Host, pid: int) -> None:
        if h.pid is not None:
            return
        h.pid = pid
        self._by_pid[pid] = h
        if h.doomed is not None and h.kill_at is None:  # stopped before we knew whom to signal
            h.signal(signal.SIGTERM)
            h.kill_at = self.clock.monotonic() + self.kill_grace_s

    def _send(self, h: Host, message: dict[str, Any]) -> None:
        h.send(wire.encode(message), self.selector)

    def _doom(self, h: Host, why: str) -> None:
        if h.doomed is None:
            h.doomed = why
        if h.kill_at is None and h.exited_mono is None and h.pid is not None:
            h.signal(signal.SIGTERM)
            h.kill_at = self.clock.monotonic() + self.kill_grace_s

    def _maybe_idle(self, h: Host) -> None:
        if not h.occupants:
            h.idle_since = self.clock.monotonic()
            h.isolated = False
            h.slowest_check_s = 0.0

    def _bury(self, h: Host) -> list[Event]:
        """The host is gone: say what became of each task still in it."""
        self._drop_host(h)
        occupants = h.occupants
        h.running, h.parked = None, {}
        for ex in occupants:
            ex.host = None
        if not occupants:
            if h.doomed is None:
                log.warning("pool.host_died host=%s pid=%s %s (it was idle)", h.id, h.pid, h.death())
            return []
        death = h.death()
        log.warning("pool.host_died host=%s pid=%s tasks=%s %s%s", h.id, h.pid,
                    [ex.key for ex in occupants], death, f" (stopped: {h.doomed})" if h.doomed else "")
        if h.doomed is not None:
            reason = f"its process was stopped because {h.doomed}"
            return [Event("lost", ex, reason=reason) for ex in occupants]
        if len(occupants) == 1:
            return [Event("crashed", occupants[0], reason=death)]
        others = len(occupants) - 1
        reason = (f"{death}, while it hosted {others} other task{'s' if others > 1 else ''}: not charged, "
                  "and it runs alone in a process of its own from now on to tell who is at fault")
        return [Event("lost", ex, reason=reason, isolate=True) for ex in occupants]

    def _drop_host(self, h: Host) -> None:
        self.hosts.pop(h.id, None)
        if h.pid is not None and self._by_pid.get(h.pid) is h:
            del self._by_pid[h.pid]
        if h.eof_mono is None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(h.sock)
        h.sock.close()
