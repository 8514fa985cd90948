"""What task processes and the zygote say to the pool, turned into events for the supervisor's loop.

A task process says ``hello`` when it is up, ``began`` once it built an attempt's task (and
whether its run() is async), ``progress`` as the task reports, ``ran`` when run() returned or
raised (``polling`` when it parks, ``leftovers`` when it left threads, children or alarms
behind), ``checked`` for each check_output(), ``fatal`` just before dying of its memory limit,
and ``stuck`` when a stopped async task blocks its event loop. The zygote says ``forked``,
``exited`` and, by closing its socket, that it died. Everything a task sent is made storable
as it arrives (:mod:`service.text`): task code may write any bytes.
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING, Any

from service.supervisor import placement
from service.supervisor.attempt import Execution, Failure, Phase
from service.supervisor.processes import Blame, Event, TaskProcess
from service.task_process import wire

if TYPE_CHECKING:
    from service.supervisor.pool import Pool

log = logging.getLogger("tenure.pool")

READ_BYTES = 1 << 20  # of one task process's messages, read at once


class Inbox:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    # -- task processes -------------------------------------------------------------------

    def from_process(self, p: TaskProcess) -> list[Event]:
        pool = self.pool
        try:
            data = p.sock.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data = b""
        if not data:
            pool.selector.unregister(p.sock)
            p.eof_mono = pool.clock.monotonic()
            return pool.bury(p) if p.exited_mono is not None else []
        try:
            messages = p.reader.feed(data)
        except wire.ProtocolError as exc:
            log.error("pool.protocol_error process=%s pid=%s error=%s", p.id, p.pid, exc)
            pool.doom(p, "it broke the protocol", on_purpose=False)
            return []
        events = []
        for message in messages:
            event = self._message(p, message)
            if event is not None:
                events.append(event)
        return events

    def _message(self, p: TaskProcess, message: dict[str, Any]) -> Event | None:
        pool = self.pool
        op = message.get("op")
        if op == "hello":
            pool.learn_pid(p, int(message["pid"]))
            p.greeted = True
            for ex in p.occupants:  # forked for them: the wait for a process is not the tasks' time
                ex.restart_clock(pool.clock.monotonic())
            return None
        raw_key = message.get("key")
        if not isinstance(raw_key, list) or len(raw_key) != 2:
            return None
        key = (int(raw_key[0]), int(raw_key[1]))
        if op == "fatal":  # it ran out of memory (whose, the blame rules decide: the limit is the process's)
            p.fatal = str(message.get("reason"))
            return None
        if op == "stuck":  # a task stopped while it blocks the event loop: only ending the process stops it
            pool.doom(p, f"task {key[0]} (attempt {key[1]}) blocked its event loop past a stop request")
            return None
        found = p.running if p.running is not None and p.running.key == key else p.parked.get(key)
        if found is None:
            return None  # an attempt already stopped or forgotten: its news changes nothing
        ex = found
        if op == "began":
            return self._began(p, ex, bool(message.get("async")))
        if "v" in message:
            ex.reported(int(message["v"]), message.get("progress", 0.0), message.get("checkpoint"))
        if "log" in message or "log_cut" in message:
            ex.add_logs(message.get("log"), message.get("log_cut"))
        failure = Failure.from_wire(message["error"]) if "error" in message else None
        if op == "ran":
            return self._ran(p, ex, message, failure)
        if op == "checked":
            started = p.checks.pop(key, None)
            if started is not None:
                p.slowest_check_s = max(p.slowest_check_s, pool.clock.monotonic() - started)
            if failure is None and message.get("value") is not None:
                self._leave(p, ex)
            return Event("checked", ex, value=message.get("value"), failure=failure)
        return None

    def _ran(self, p: TaskProcess, ex: Execution, message: dict[str, Any], failure: Failure | None) -> Event:
        pool = self.pool
        if p.running is ex:
            p.running = None
        leftovers = message.get("leftovers")
        if leftovers:
            pool.retire(p, f"task {ex.key[0]} (attempt {ex.key[1]}) left {leftovers} running in it")
        if message.get("polling") and failure is None:
            pool.modes.parking.add(ex.lease.kind)
            p.parked[ex.key] = ex
            if message.get("threads"):
                p.asyncs.discard(ex.key)
            asked = message.get("poll_interval_s")
            ex.asked_interval_s = float(asked) if isinstance(asked, (int, float)) and asked > 0 else None
            return Event("ran", ex, polling=True)
        self._leave(p, ex)
        return Event("ran", ex, value=message.get("value"), failure=failure)

    def _leave(self, p: TaskProcess, ex: Execution) -> None:
        """``ex`` is done with ``p``: it holds nothing of it any more."""
        ex.process = None
        p.parked.pop(ex.key, None)
        p.asyncs.discard(ex.key)
        self.pool.maybe_idle(p)

    def _began(self, p: TaskProcess, ex: Execution, is_async: bool) -> Event | None:
        """A process built ``ex``'s task and says whether its run() is async: the pool learns the kind's shape."""
        pool = self.pool
        pool.modes.learn(ex.lease.kind, is_async)
        if is_async and p.running is ex:  # its run() went to the process's loop: the main thread is free
            p.running = None
            p.parked[ex.key] = ex
            p.asyncs.add(ex.key)
        elif not is_async and ex.key in p.asyncs:  # sent to a loop, its run() is not async: place it anew
            del p.parked[ex.key]
            p.asyncs.discard(ex.key)
            pool.maybe_idle(p)
            ex.process = None
            ex.to(Phase.RUNNING)
            pool.place(ex, placement.frame(ex, on_loop=False))
        return None

    # -- the zygote -----------------------------------------------------------------------

    def from_zygote(self) -> list[Event]:
        pool = self.pool
        events: list[Event] = []
        for message in pool.spawner.readable():
            op = message.get("op")
            if op == "forked":
                p = pool.processes.get(int(message["host"]))
                if p is not None:
                    pool.learn_pid(p, int(message["pid"]))
            elif op == "exited":
                p = pool.by_pid.pop(int(message["pid"]), None)
                if p is not None:
                    p.exit_code, p.exited_mono = int(message["code"]), pool.clock.monotonic()
            elif op == "died" and not pool.closed:
                events.extend(self._zygote_died(message.get("code")))
        return events

    def _zygote_died(self, code: int | None) -> list[Event]:
        """Every task process dies with the zygote (PR_SET_PDEATHSIG), and one of their tasks may have killed it."""
        pool = self.pool
        events, busy = [], False
        reason = (f"the process that forks task processes died (exit status {code}) and its task processes "
                  "with it: not charged")
        for p in list(pool.processes.values()):
            busy = busy or not p.empty
            for ex in p.occupants:
                ex.process = None
                events.append(Event("died", ex, reason=reason, blame=Blame.ZYGOTE))
            p.running, p.parked, p.asyncs = None, {}, set()
            if p.doomed is None:
                p.doomed = "its zygote died"
            p.signal(signal.SIGKILL)
            pool.drop(p)
        pool.spawner.died(tasks_were_running=busy)
        return events
