"""One task process (a *host*) as its supervisor sees it: its socket, its occupants, its death.

The pool (:mod:`service.supervisor.pool`) decides what runs where; this module holds what is true of one
host: the attempts in it, the frames waiting for its socket, how to signal it, and how its
death reads in plain words.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
from dataclasses import dataclass, field
from typing import Any

from service.supervisor.attempt import Execution, Failure
from service.task_process import runner as host_mod
from service.task_process import wire


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


@dataclass
class TaskProcess:
    """One host process, as the supervisor sees it."""

    id: int
    sock: socket.socket
    memory_limit_mb: int | None
    born_mono: float
    reader: wire.Reader = field(default_factory=wire.Reader)
    outbox: bytearray = field(default_factory=bytearray)  # frames its socket has not taken yet
    mask: int = selectors.EVENT_READ  # what the selector watches its socket for
    pid: int | None = None
    greeted: bool = False  # it said hello: it is up and reading
    running: Execution | None = None  # its run() call is executing here
    parked: dict[tuple[int, int], Execution] = field(default_factory=dict)  # polling tasks hosted
    checks: dict[tuple[int, int], float] = field(default_factory=dict)  # checks executing: since when
    asyncs: set[tuple[int, int]] = field(default_factory=set)  # parked ones whose code runs on its event loop
    slowest_check_s: float = 0.0
    isolated: bool = False  # hosts an isolated task: takes nobody else
    doomed: str | None = None  # stopped on purpose, and why
    kill_at: float | None = None  # when SIGKILL follows the SIGTERM
    fatal: str | None = None  # what the host said before dying ("memory")
    eof_mono: float | None = None  # when its socket closed
    exit_code: int | None = None  # its exit status: >= 0 exit code, < 0 signal number
    exited_mono: float | None = None  # when the zygote reported its exit
    idle_since: float = 0.0

    @property
    def occupants(self) -> list[Execution]:
        return ([self.running] if self.running is not None else []) + list(self.parked.values())

    @property
    def empty(self) -> bool:
        return self.running is None and not self.parked

    @property
    def alive(self) -> bool:
        return self.eof_mono is None and self.exited_mono is None and self.doomed is None

    @property
    def gone(self) -> bool:
        return self.eof_mono is not None or self.exited_mono is not None

    def send(self, frame: bytes, selector: selectors.BaseSelector) -> None:
        """Queue a frame and send what the socket takes now (never blocks)."""
        if self.gone:
            return  # what it was asked no longer matters
        self.outbox += frame
        self.flush(selector)

    def flush(self, selector: selectors.BaseSelector) -> None:
        """Send what the socket takes now; ask the selector for writability for the rest."""
        while self.outbox:
            try:
                sent = self.sock.send(self.outbox)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.outbox.clear()  # its death is handled when its socket reads EOF
                break
            del self.outbox[:sent]
        mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outbox else 0)
        if self.eof_mono is None and mask != self.mask:  # a syscall only when it changes
            with contextlib.suppress(KeyError, ValueError):
                selector.modify(self.sock, mask, self.id)
                self.mask = mask

    def doom(self, why: str, kill_at: float) -> None:
        """Stop it on purpose (SIGTERM now, SIGKILL at ``kill_at``); the first reason given stays."""
        if self.doomed is None:
            self.doomed = why
        if self.kill_at is None and self.exited_mono is None and self.pid is not None:
            self.signal(signal.SIGTERM)
            self.kill_at = kill_at

    def maybe_idle(self, now: float) -> None:
        if self.empty:
            self.idle_since = now
            self.isolated = False
            self.slowest_check_s = 0.0

    def signal(self, sig: int) -> None:
        """Signal the host's process group (what its task started dies too)."""
        if self.pid is None or self.exited_mono is not None:
            return  # once it is gone the zygote ends its group before the pid can be reused
        for send in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                send(self.pid, sig)

    def fates(self, occupants: list[Execution]) -> list[Event]:
        """What became of the tasks that were in this host when it died (see :mod:`service.supervisor.pool`, Blame)."""
        death = self.death()
        if self.doomed is not None:
            reason = f"its process was stopped because {self.doomed}"
            return [Event("lost", ex, reason=reason) for ex in occupants]
        if len(occupants) == 1:
            return [Event("crashed", occupants[0], reason=death)]
        others = len(occupants) - 1
        reason = (f"{death}, while it hosted {others} other task{'s' if others > 1 else ''}: not charged, "
                  "and it runs alone in a process of its own from now on to tell who is at fault")
        return [Event("lost", ex, reason=reason, isolate=True) for ex in occupants]

    def death(self) -> str:
        """How the host died, in plain words."""
        limit = self.memory_limit_mb
        if self.fatal == "memory" or self.exit_code == host_mod.MEMORY_EXIT_CODE:
            return f"it exceeded its memory limit of {limit} MiB" if limit else "it ran out of memory"
        code = self.exit_code
        if code is None:
            return "its process ended (its exit status is unknown)"
        if code >= 0:
            return f"its process exited with code {code}"
        sig = -code
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        text = signal.strsignal(sig) or name
        extra = ""
        if sig == signal.SIGKILL:
            extra = ", sent by another process or by the kernel (its out-of-memory killer, say)"
        return f"its process was killed by signal {sig} ({name}: {text}){extra}"
