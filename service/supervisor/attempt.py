"""One attempt in flight on a supervisor: its phase, its deadline, what it reported so far.

An :class:`Execution` moves through these phases, driven by the supervisor's loop, and never back:

* ``starting``: waiting for a task process to start (the zygote forks one). This wait is not
  the task's time: its timeout starts when a process says hello, and the wait is bounded apart
  (:attr:`Settings.process_start_s`).
* ``running``: its ``run()`` executes in a task process (see :mod:`service.supervisor.pool`).
* ``waiting``: ``run()`` returned ``None`` from an object with ``check_output()``: a polling
  task. Its object stays in its task process, which holds no thread for it; the supervisor
  schedules the checks (right after ``run()`` returns, then after ``poll_first_s``, growing by
  ``poll_factor`` up to ``poll_max_s``, or at the task's own ``poll_interval_s``).
* ``checking``: one ``check_output()`` call executes; it answers, and the task waits again.
* ``ending``: its end is recorded (:mod:`service.supervisor.endings`) and waits for its write.

``running``, ``waiting`` and ``checking`` may follow ``starting`` in any order the task's shape
asks; ``ending`` comes once, from any phase, and only the first end recorded counts.

The progress, checkpoint and output the task reported live here until a heartbeat writes them.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field
from typing import Any

from service.config import Settings
from service.storage.endings import End
from service.storage.leases import Lease
from service.storage.models import LOG_TAIL_CHARS
from service.text import storable

MAX_CHECK_ERRORS = 3  # consecutive check_output() errors before the attempt fails


class Phase(enum.StrEnum):
    """Where an attempt in flight stands (see the module)."""

    STARTING = "starting"  # waiting for a task process to start: not its time yet
    RUNNING = "running"  # its run() executes in a task process
    WAITING = "waiting"  # a polling task between checks: holds no thread
    CHECKING = "checking"  # one check_output() call executes
    ENDING = "ending"  # its end is recorded and waits for its write


@dataclass(frozen=True)
class Failure:
    """Why an attempt did not succeed, as reported from the process that ran it."""

    message: str  # one line for people: "ValueError: bad input"
    permanent: bool = False  # a retry cannot fix it (PermanentError, unknown kind, bad output)
    traceback: str | None = None

    @classmethod
    def from_wire(cls, raw: Any) -> Failure:
        """A failure as a task process reported it, its text made storable (it came from task code)."""
        if not isinstance(raw, dict):
            return cls("the task's process sent an unreadable error")
        tb = raw.get("traceback")
        return cls(storable(str(raw.get("message") or "unknown error")) or "unknown error",
                   bool(raw.get("permanent")), storable(tb) if isinstance(tb, str) else None)


@dataclass
class Execution:
    """One attempt in flight on this supervisor, keyed by (task id, attempt)."""

    lease: Lease
    started_mono: float
    deadline_mono: float
    phase: Phase = Phase.RUNNING
    timeout_s: float | None = None  # while STARTING: its timeout, which starts once a process is up
    process: Any = None  # the task process running it, or holding it between checks (processes.TaskProcess)
    next_check_mono: float = 0.0
    poll_interval_s: float = 0.0
    asked_interval_s: float | None = None  # the task's own poll_interval_s, if it has one
    check_errors: int = 0
    end: End | None = None  # recorded: what its write will say
    write_at: float = 0.0  # when the end's write is tried (again), monotonic
    flushed_version: int = 0
    _process_version: int = 0  # the task process's count of progress/checkpoint calls, as last reported
    _version: int = 0
    _progress: float = 0.0
    _saved: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _logs: str = ""  # the attempt's last LOG_TAIL_CHARS of output
    _logs_cut: int = 0  # characters of output dropped before them
    _logs_total: int = 0  # characters of output it ever wrote
    flushed_logs_total: int = 0  # of them, how many a heartbeat has written

    def __post_init__(self) -> None:
        self._saved = self.lease.checkpoint

    @property
    def key(self) -> tuple[int, int]:
        return self.lease.key

    @property
    def ending(self) -> bool:
        return self.phase is Phase.ENDING

    def to(self, phase: Phase) -> None:
        """Move to ``phase``. Nothing leaves ``ending``: a late report of an ended attempt changes nothing.

        Raises:
            RuntimeError: asked to leave ``ending`` (a bug in the supervisor).
        """
        if self.phase is Phase.ENDING and phase is not Phase.ENDING:
            raise RuntimeError(f"attempt {self.key} has ended; it cannot become {phase}")
        self.phase = phase

    def record(self, end: End, now: float) -> bool:
        """Record how it ended; False (nothing changes) when an end was recorded already."""
        if self.end is not None:
            return False
        self.end, self.write_at = end, now
        self.to(Phase.ENDING)
        return True

    # -- time -----------------------------------------------------------------------------

    def await_process(self, process_start_s: float) -> None:
        """Its run() waits for a task process to start: not counted against its timeout (which
        :meth:`restart_clock` starts), but bounded by ``process_start_s``. Idempotent: a second
        wait (held in the pool, then placed in a process starting up) is one."""
        if self.timeout_s is not None:
            return
        self.timeout_s = self.deadline_mono - self.started_mono
        self.deadline_mono = self.started_mono + process_start_s
        self.phase = Phase.STARTING

    def restart_clock(self, now: float) -> None:
        """Its task process is up: its timeout counts from now."""
        if self.timeout_s is not None:
            self.started_mono, self.deadline_mono, self.timeout_s = now, now + self.timeout_s, None
            if self.phase is Phase.STARTING:
                self.phase = Phase.RUNNING

    @property
    def wake_at(self) -> float:
        """When the loop must look at it next: its deadline, or its next check (never, once ending)."""
        if self.phase is Phase.ENDING:
            return float("inf")
        return min(self.deadline_mono, self.next_check_mono) if self.phase is Phase.WAITING else self.deadline_mono

    @property
    def overdue_because(self) -> str:
        """At its deadline, why it is stopped: ``no_process`` (none started in time) or ``timeout``."""
        return "no_process" if self.timeout_s is not None else "timeout"

    @property
    def limit_s(self) -> float:
        """Its deadline's length: the timeout, or the wait for a process."""
        return self.deadline_mono - self.started_mono

    def schedule_check(self, settings: Settings, now: float) -> None:
        """Wait before the next check_output(): as the task asked, else backing off by the settings."""
        if self.asked_interval_s is not None:
            self.poll_interval_s = self.asked_interval_s
        elif self.poll_interval_s == 0.0:
            self.poll_interval_s = settings.poll_first_s
        else:
            self.poll_interval_s = min(settings.poll_max_s, self.poll_interval_s * settings.poll_factor)
        self.to(Phase.WAITING)
        self.next_check_mono = now + self.poll_interval_s

    # -- what the task reported -----------------------------------------------------------

    def reported(self, version: int, progress: Any, saved: Any) -> None:
        """Take the progress and checkpoint the task reported (from the loop thread)."""
        try:
            value = min(1.0, max(0.0, float(progress)))
        except (TypeError, ValueError):
            return
        with self._lock:
            if version > self._process_version:  # never step back to an older state
                self._process_version = version
                self._version += 1
                self._progress, self._saved = value, saved

    def snapshot(self) -> tuple[int, float, Any]:
        """(version, progress, checkpoint): the version changes whenever either does."""
        with self._lock:
            return self._version, self._progress, self._saved

    def add_logs(self, text: Any, cut: Any) -> None:
        """Take output the task wrote (from the loop thread), made storable; keep the last LOG_TAIL_CHARS."""
        text = storable(text) if isinstance(text, str) else ""
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
            self._logs_total += dropped + len(text)

    def logs(self) -> tuple[str, int]:
        """(last output, characters dropped before it)."""
        with self._lock:
            return self._logs, self._logs_cut

    def new_logs(self) -> tuple[int, str, bool] | None:
        """What a heartbeat adds to the stored output: (characters written in all, the text written
        since :attr:`flushed_logs_total`, whether that text is the whole tail and replaces the
        stored one), or None when nothing was written since the last heartbeat's."""
        with self._lock:
            fresh = self._logs_total - self.flushed_logs_total
            if fresh <= 0:
                return None
            if fresh < len(self._logs):
                return self._logs_total, self._logs[-fresh:], False
            return self._logs_total, self._logs, True

    def kept(self, traceback: str | None = None) -> dict[str, Any]:
        """What the attempt's row keeps when it closes: its output, and a failure's traceback."""
        text, cut = self.logs()
        return {"logs": text or None, "logs_cut": cut, "traceback": traceback or None}
