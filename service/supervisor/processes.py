"""One task process as its supervisor sees it: its socket, its occupants, its death, and who is to blame.

The pool (:mod:`service.supervisor.pool`) decides what runs where; this module holds what is true
of one task process: the attempts in it, the frames waiting for its socket, how to signal it,
how its death reads in plain words, and what that death means for each attempt in it.

**Blame** (:class:`Blame`), when a task process dies:

* stopped on purpose (the supervisor ended it for a timeout, a cancel or a lost lease), the
  attempt it stopped is accounted for already, and any other in it was interrupted for that
  one's sake: ``stopped``, lost and never counted;
* with one attempt in it, in a process that ran nobody before it: that attempt did it, ``own``:
  crashed, charged;
* with several in it, or in a process an earlier attempt had used (whatever that one left
  behind may be what killed it): nobody can tell, ``unclear``: each is lost (counted toward
  the loss cap) and isolated: it runs alone in a fresh process from then on, where a crash is
  its own.

When the zygote dies, every task process dies with it (``zygote``): lost and counted, but not
isolated, since a process of its own would still be the zygote's child.
"""

from __future__ import annotations

import contextlib
import enum
import os
import selectors
import signal
import socket
from dataclasses import dataclass, field
from typing import Any

from service.supervisor.attempt import Execution, Failure
from service.task_process import wire


class Blame(enum.StrEnum):
    """Who is to blame for an attempt's task process dying (see the module)."""

    OWN = "own"  # alone in a process that ran nobody before: crashed, charged
    UNCLEAR = "unclear"  # shared, or in a reused process: lost, counted, isolated
    STOPPED = "stopped"  # the supervisor ended the process for another attempt's sake: lost, not counted
    ZYGOTE = "zygote"  # the zygote died and every task process with it: lost, counted


@dataclass(frozen=True)
class Event:
    """What the pool reports to the supervisor's loop.

    ``kind`` is ``ran`` (run() ended: ``value``, ``failure`` or ``polling``), ``checked``
    (check_output() answered ``value`` or ``failure``) or ``died`` (its task process died:
    ``reason`` in plain words, ``blame`` for what that means).
    """

    kind: str
    ex: Execution
    value: Any = None
    failure: Failure | None = None
    polling: bool = False
    reason: str = ""
    blame: Blame = Blame.UNCLEAR


@dataclass
class TaskProcess:
    """One task process, as the supervisor sees it."""

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
    isolated: bool = False  # holds an isolated task: takes nobody else
    tenants: int = 0  # attempts ever placed in it: past one, a death of it is nobody's for sure
    retiring: str | None = None  # takes no one new, and exits once empty: why (an occupant left threads behind)
    doomed: str | None = None  # stopped on purpose, and why
    on_purpose: bool = True  # doomed for another attempt's sake (False: for what it did itself)
    kill_at: float | None = None  # when SIGKILL follows the SIGTERM
    fatal: str | None = None  # what the process said before dying ("memory")
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
    def open_to_new(self) -> bool:
        """It may take another attempt: alive and not retiring."""
        return self.alive and self.retiring is None

    @property
    def fresh(self) -> bool:
        """Nobody has run in it yet: a crash in it is its first occupant's own."""
        return self.tenants == 0

    def admit(self, ex: Execution) -> None:
        self.tenants += 1
        ex.process = self

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

    def doom(self, why: str, kill_at: float, *, on_purpose: bool = True) -> None:
        """Stop it (SIGTERM now, SIGKILL at ``kill_at``); the first reason given stays. ``on_purpose``:
        for another attempt's sake (its occupants are not to blame), else for what it did itself."""
        if self.doomed is None:
            self.doomed, self.on_purpose = why, on_purpose
        if self.kill_at is None and self.exited_mono is None and self.pid is not None:
            self.signal(signal.SIGTERM)
            self.kill_at = kill_at

    def maybe_idle(self, now: float) -> None:
        if self.empty:
            self.idle_since = now
            self.isolated = False
            self.slowest_check_s = 0.0

    def signal(self, sig: int) -> None:
        """Signal the process's group (what its task started dies too)."""
        if self.pid is None or self.exited_mono is not None:
            return  # once it is gone the zygote ends its group before the pid can be reused
        for send in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                send(self.pid, sig)

    def fates(self, occupants: list[Execution]) -> list[Event]:
        """What became of the attempts that were in it when it died (see :class:`Blame`)."""
        death = self.death()
        if self.doomed is not None and self.on_purpose:
            reason = f"its process was stopped because {self.doomed}"
            return [Event("died", ex, reason=reason, blame=Blame.STOPPED) for ex in occupants]
        # Which attempt hit the memory limit says nothing of whose memory it was (a neighbour's, or
        # what an earlier occupant left): the limit is the process's. The rules below decide.
        if self.doomed is not None:
            death = f"{death} ({self.doomed})"
        if len(occupants) == 1 and self.tenants == 1:
            return [Event("died", occupants[0], reason=death, blame=Blame.OWN)]
        others = len(occupants) - 1
        shared = (f"while it hosted {others} other task{'s' if others > 1 else ''}" if others else
                  "in a process that earlier tasks had run in")
        reason = (f"{death}, {shared}: not charged, and it runs alone in a fresh process from now on to tell "
                  "who is at fault")
        return [Event("died", ex, reason=reason, blame=Blame.UNCLEAR) for ex in occupants]

    def death(self) -> str:
        """How the process died, in plain words."""
        limit = self.memory_limit_mb
        if self.fatal == "memory" or self.exit_code == wire.MEMORY_EXIT_CODE:
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
