"""One attempt in flight on a supervisor, and how its end is described.

An :class:`Execution` goes through these phases, driven by the supervisor's loop:

1. ``run``: the task's ``run()`` executes in a host process (see :mod:`service.supervisor.pool`). A
   non-``None`` return is the output: the task was blocking, and is done.
2. ``wait``: ``run()`` returned ``None`` from an object that has ``check_output()``, so the
   task is polling. Its object stays in its host, which holds no thread for it and goes on
   running other tasks; the supervisor schedules the checks: the first right after ``run()``
   returns, then after ``poll_first_s``, growing by ``poll_factor`` up to ``poll_max_s`` (or
   at the task's own ``poll_interval_s``).
3. ``check``: one ``check_output()`` call is executing in the host.
4. ``finishing``: the outcome is known but the database refused the write; it is tried again.

The progress and checkpoint the task last reported live here until a heartbeat writes them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from service.config import Settings
from service.storage.leases import Lease

MAX_CHECK_ERRORS = 3  # consecutive check_output() errors before the attempt fails
LOG_TAIL_CHARS = 64 * 1024  # of an attempt's output, kept and stored
PROCESS_START_S = 60.0  # an attempt waits this long at most for a task process to start (not its timeout)


@dataclass(frozen=True)
class Failure:
    """Why an attempt did not succeed, as reported from the process that ran it."""

    message: str  # one line for people: "ValueError: bad input"
    permanent: bool = False  # a retry cannot fix it (PermanentError, unknown kind, bad output)
    traceback: str | None = None

    @classmethod
    def from_wire(cls, raw: Any) -> Failure:
        if not isinstance(raw, dict):
            return cls("the task's process sent an unreadable error")
        tb = raw.get("traceback")
        return cls(str(raw.get("message") or "unknown error"), bool(raw.get("permanent")),
                   tb if isinstance(tb, str) else None)


@dataclass
class Execution:
    """One attempt in flight on this supervisor, keyed by (task id, attempt)."""

    lease: Lease
    started_mono: float
    deadline_mono: float
    phase: str = "run"  # run | wait (holds no thread) | check | finishing
    timeout_s: float | None = None  # while it waits for a task process to start: its timeout
    process: Any = None  # the task process running it, or holding it between checks (pool.TaskProcess)
    next_check_mono: float = 0.0
    poll_interval_s: float = 0.0
    asked_interval_s: float | None = None  # the task's own poll_interval_s, if it has one
    check_errors: int = 0
    pending: dict[str, Any] | None = field(default=None)  # a finish write to retry
    flushed_version: int = 0
    _host_version: int = 0  # the host's count of progress/checkpoint calls, as last reported
    _version: int = 0
    _progress: float = 0.0
    _saved: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _logs: str = ""  # the attempt's last LOG_TAIL_CHARS of output
    _logs_cut: int = 0  # characters of output dropped before them
    _logs_version: int = 0
    flushed_logs_version: int = 0

    def __post_init__(self) -> None:
        self._saved = self.lease.checkpoint

    def await_process(self) -> None:
        """Its run() waits for a task process to start: the wait is not counted against its
        timeout (:meth:`restart_clock` starts that), but is bounded by :data:`PROCESS_START_S`.
        Idempotent: a second wait (held in the pool, then placed in a host starting up) is one."""
        if self.timeout_s is not None:
            return
        self.timeout_s = self.deadline_mono - self.started_mono
        self.deadline_mono = self.started_mono + PROCESS_START_S

    def overdue(self) -> tuple[str, Failure, bool]:
        """At its deadline: why it is stopped (for the pool), its failure, and whether it timed out."""
        if self.timeout_s is not None:
            return ("found no task process to run in",
                    Failure(f"no task process started for it within {PROCESS_START_S:g} s"), False)
        limit = self.deadline_mono - self.started_mono
        return ("ran past its timeout", Failure(f"TimeoutError: the task ran past its timeout of {limit:g} s; "
                                                "its process was stopped", permanent=True), True)

    def schedule_check(self, settings: Settings, now: float) -> None:
        """Wait before the next check_output(): as the task asked, else backing off by the settings."""
        if self.asked_interval_s is not None:
            self.poll_interval_s = self.asked_interval_s
        elif self.poll_interval_s == 0.0:
            self.poll_interval_s = settings.poll_first_s
        else:
            self.poll_interval_s = min(settings.poll_max_s, self.poll_interval_s * settings.poll_factor)
        self.phase = "wait"
        self.next_check_mono = now + self.poll_interval_s

    def restart_clock(self, now: float) -> None:
        """Its task process is up: its timeout counts from now."""
        if self.timeout_s is not None:
            self.started_mono, self.deadline_mono, self.timeout_s = now, now + self.timeout_s, None

    @property
    def key(self) -> tuple[int, int]:
        return self.lease.key

    def reported(self, version: int, progress: Any, saved: Any) -> None:
        """Take the progress and checkpoint the task reported (from the loop thread)."""
        try:
            value = min(1.0, max(0.0, float(progress)))
        except (TypeError, ValueError):
            return
        with self._lock:
            if version > self._host_version:  # never step back to an older state
                self._host_version = version
                self._version += 1
                self._progress, self._saved = value, saved

    def snapshot(self) -> tuple[int, float, Any]:
        """(version, progress, checkpoint): the version changes whenever either does."""
        with self._lock:
            return self._version, self._progress, self._saved

    def add_logs(self, text: Any, cut: Any) -> None:
        """Take output the task wrote (from the loop thread); keep the last LOG_TAIL_CHARS."""
        text = text if isinstance(text, str) else ""
        dropped = cut if isinstance(cut, int) and cut > 0 else 0
        if not text and not dropped:
            return
        with self._lock:
            joined = self._logs + text
            over = max(0, len(joined) - LOG_TAIL_CHARS)
            if over:  # cut at a line's end, so the kept part starts with a whole line
                newline = joined.find("\n", over)
                over = newline + 1 if 0 <= newline < over + 1024 else over
            self._logs, self._logs_cut = joined[over:], self._logs_cut + dropped + over
            self._logs_version += 1

    def logs(self) -> tuple[int, str, int]:
        """(version, last output, characters dropped before it)."""
        with self._lock:
            return self._logs_version, self._logs, self._logs_cut

    def record(self, traceback: str | None = None) -> dict[str, Any]:
        """What the attempt's row keeps when it closes: its output, and a failure's traceback."""
        _, text, cut = self.logs()
        kept: dict[str, Any] = {"logs": text or None, "logs_cut": cut}
        if traceback:
            kept["traceback"] = traceback
        return kept
