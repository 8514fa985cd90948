"""The supervisor's end of its zygote: start it, ask it for task processes, hear of their exits.

The zygote (:mod:`service.task_process.zygote`) is a process of the supervisor's own. Messages to it wait in
an outbox until its socket takes them, so a burst of hundreds of fork requests never blocks the
supervisor's loop (nor deadlocks with the zygote, which may be writing back at the same time).
A zygote that dies is started again after :data:`RESTART_S`; one that dies
:data:`DEATHS` times within :data:`DEATHS_WINDOW_S` while no task was running means the
environment cannot run tasks at all, and :attr:`Spawner.broken` says why.
"""

from __future__ import annotations

import array
import contextlib
import json
import logging
import selectors
import socket
import subprocess
import sys
from collections import deque
from typing import Any

from service.supervisor import early
from service.task_process.protocol import get_kind, kinds

log = logging.getLogger("tenure.pool")

RESTART_S = 1.0  # a zygote that died is started again after this long
DEATHS = 3  # this many deaths of an idle zygote within DEATHS_WINDOW_S mean a broken environment
DEATHS_WINDOW_S = 60.0

class Spawner:
    def __init__(self, selector: selectors.BaseSelector, clock: Any) -> None:
        self.selector = selector
        self.clock = clock
        self.process: subprocess.Popen[bytes] | None = None
        self.ctl: socket.socket | None = None
        self._outbox: deque[tuple[bytes, socket.socket | None]] = deque()  # (message, fd to pass)
        self._modules: set[str] = set()
        self._due: float | None = None  # when to start a zygote again
        self._deaths: list[float] = []
        self.broken: str | None = None

    def start(self) -> None:
        self.process, ours = early.take() or early.launch()
        self.ctl = ours
        self._outbox.clear()
        self._modules = {m for m in (getattr(k.build, "__module__", None) for k in kinds()) if m}
        self.selector.register(ours, selectors.EVENT_READ, "zygote")
        # sys.path again: a zygote started early (service.supervisor.early) began with the command's.
        self._send({"op": "hello", "modules": sorted(self._modules), "main": main_path(), "path": sys.path})
        log.info("pool.zygote_started pid=%s modules=%s", self.process.pid, len(self._modules))

    @property
    def up(self) -> bool:
        return self.ctl is not None

    def fork(self, host_id: int, memory_limit_mb: int | None, theirs: socket.socket) -> bool:
        """Ask for a host with ``theirs`` as its socket; False (``theirs`` closed) with no zygote."""
        if self.ctl is None and self._due is not None and self.broken is None:
            self._due = None
            self.start()
        if self.ctl is None:
            theirs.close()
            return False
        self._send({"op": "fork", "host": host_id, "memory_limit_mb": memory_limit_mb}, theirs)
        return True

    def ensure_module(self, kind: str) -> None:
        """Have the zygote import the module that registers ``kind``, so later forks have it."""
        module = kind_module(kind)
        if module and module not in self._modules and self.ctl is not None:
            self._modules.add(module)
            self._send({"op": "import", "modules": [module]})

    def readable(self) -> list[dict[str, Any]]:
        """What the zygote said: ``forked`` and ``exited`` messages, or one ``died``."""
        if self.ctl is None:
            return []
        try:
            data = self.ctl.recv(65536)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data = b""
        if not data:
            return [{"op": "died", "code": self._bury()}]
        message: dict[str, Any] = json.loads(data)
        if message.get("op") == "ready":
            log.debug("pool.zygote_ready pid=%s", message.get("pid"))
        if message.get("op") in ("ready", "imported"):
            for error in message.get("errors") or []:
                log.error("pool.import_failed error=%s (tasks of its kinds will fail)", error)
            return []
        return [message]

    def died(self, *, tasks_were_running: bool) -> None:
        """Plan the next zygote, or mark the environment broken after too many idle deaths."""
        now = self.clock.monotonic()
        if not tasks_were_running:  # nothing of a task's ran: the environment itself is broken
            self._deaths = [t for t in self._deaths if now - t < DEATHS_WINDOW_S] + [now]
            if len(self._deaths) >= DEATHS:
                code = self.process.returncode if self.process else None
                self.broken = (f"the process that forks task processes died {len(self._deaths)} times within "
                               f"{DEATHS_WINDOW_S:g} s with no task running (last exit status {code}); "
                               "see the log above")
                return
        self._due = now + RESTART_S

    def tick(self, now: float) -> None:
        if self._due is not None and now >= self._due and self.broken is None:
            self._due = None
            self.start()

    def next_deadline(self) -> float:
        return self._due if self._due is not None else float("inf")

    def writable(self) -> None:
        self._flush()

    def close(self) -> None:
        self._close_ctl()  # the zygote kills any task process left and exits
        if self.process is not None:
            try:
                self.process.wait(5)
            except (subprocess.TimeoutExpired, OSError):
                # OSError: a timed wait polls with time.sleep, which a preloaded clock shim (faketime)
                # can break; a supervisor's shutdown must still go on to hand its leases back.
                self.process.kill()
                self.process.wait()

    def _bury(self) -> int | None:
        self._close_ctl()
        if self.process is None:
            return None
        try:
            self.process.wait(2.0)  # its socket closed: it is exiting, or dead already
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(2.0)
        log.error("pool.zygote_died pid=%s code=%s: its task processes die with it", self.process.pid,
                  self.process.returncode)
        return self.process.returncode

    def _send(self, message: dict[str, Any], fd: socket.socket | None = None) -> None:
        self._outbox.append((json.dumps(message).encode(), fd))
        self._flush()

    def _flush(self) -> None:
        """Send what the zygote's socket takes now; wait for it to be writable for the rest."""
        while self.ctl is not None and self._outbox:
            data, fd = self._outbox[0]
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd.fileno()]))] if fd else []
            try:
                self.ctl.sendmsg([data], ancillary)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                return  # the zygote is gone; its death is handled when its socket reads EOF
            self._outbox.popleft()
            if fd is not None:
                fd.close()
        if self.ctl is not None:
            mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._outbox else 0)
            self.selector.modify(self.ctl, mask, "zygote")

    def _close_ctl(self) -> None:
        if self.ctl is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(self.ctl)
            self.ctl.close()
            self.ctl = None
        for _, fd in self._outbox:
            if fd is not None:
                fd.close()
        self._outbox.clear()


def main_path() -> str | None:
    return getattr(sys.modules.get("__main__"), "__file__", None)


def kind_module(kind: str) -> str | None:
    try:
        return getattr(get_kind(kind).build, "__module__", None)
    except Exception:  # noqa: BLE001 - an unknown kind is reported by the host that runs it
        return None
