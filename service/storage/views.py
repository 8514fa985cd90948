"""What storage reads return: plain, frozen values that hold no connection."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service.storage.models import TERMINAL_TASK_STATUSES, RunStatus, TaskStatus

COUNT_KEYS = tuple(s.value for s in TaskStatus)
MAX_AHEAD = 1_000  # tasks ahead of a waiting run counted at most (RunStatusView.ahead)
# A supervisor counts as live to a waiting run while its heartbeat is this recent (generous: any
# lease TTL a deployment sets is shorter, and a wrong 'none is running' would send a person to look).
LIVE_WITHIN_S = 60.0
# A big run's compact status, one character per task: the letter of each status (see CompactStatus).
CELL = {
    TaskStatus.QUEUED.value: "q", TaskStatus.RUNNING.value: "r", TaskStatus.RETRYING.value: "y",
    TaskStatus.SUCCEEDED.value: "s", TaskStatus.FAILED.value: "f", TaskStatus.CANCELLED.value: "c",
}


def zero_counts() -> dict[str, int]:
    return dict.fromkeys(COUNT_KEYS, 0)


@dataclass(frozen=True)
class RunView:
    id: int
    name: str | None
    status: str
    kind: str
    total: int
    params: dict[str, Any]
    on_complete: str | None
    hook_task_id: int | None
    created_at: datetime
    finished_at: datetime | None
    counts: dict[str, int] = field(default_factory=dict)
    scheduled_for: datetime | None = None  # the start asked for (UTC); None: at once
    queue: str = "default"  # where its tasks wait
    paused_at: datetime | None = None  # set while paused

    @property
    def done(self) -> int:
        """Tasks in a terminal status."""
        return sum(self.counts.get(s.value, 0) for s in TERMINAL_TASK_STATUSES)

    @property
    def live(self) -> bool:
        return self.status == RunStatus.RUNNING.value


@dataclass(frozen=True)
class TaskView:
    id: int
    run_id: int | None
    position: int
    kind: str
    args: dict[str, Any]
    status: str
    attempts: int
    max_attempts: int
    progress: float
    result: Any
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None
    supervisor_id: int | None
    charged: int = 0  # attempts charged against max_attempts
    lost: int = 0  # attempts lost through no fault of the task (not charged)
    isolated: bool = False  # runs alone in a process of its own
    label: str | None = None  # what a person calls it (None for simulations)
    timeout_s: float | None = None
    memory_limit_mb: int | None = None
    scheduled_for: datetime | None = None  # the start asked for (UTC); None: at once
    queue: str = "default"
    priority: int = 0
    limit_key: str | None = None  # its concurrency key
    unique_key: str | None = None
    output: str | None = None  # the end of its latest attempt's output (read for a run's page only)

    @property
    def terminal(self) -> bool:
        return self.status in {s.value for s in TERMINAL_TASK_STATUSES}


@dataclass(frozen=True)
class AttemptView:
    attempt: int
    supervisor_id: int | None
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    error: str | None
    charged: bool = False
    traceback: str | None = None
    logs: str | None = None  # its last 64 KiB of output
    logs_cut: int = 0  # bytes of output dropped before those


@dataclass(frozen=True)
class TaskDetail:
    """A task and all its attempts, from one snapshot."""

    task: TaskView
    attempts: list[AttemptView]
    now: datetime


@dataclass(frozen=True)
class TilePage:
    """How a run page reads a run bigger than ``over`` tasks: one page of its tiles, not all.

    Smaller runs are read whole, as :meth:`Reads.run_status` always reads them.
    """

    over: int  # runs of more tasks than this are read compactly
    status: str | None = None  # the tiles' status, or None for tasks of every status
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True)
class CompactStatus:
    """What a page shows of a big run besides its page of tiles, read without reading every task whole."""

    cells: str  # one character per task in position order, its status's letter in CELL
    running: list[tuple[float, datetime | None]]  # (progress, started_at) of every running task
    errors: list[tuple[str | None, int]]  # failed tasks' errors and how many have each; [] while live
    slowest: list[tuple[int, float]]  # (task number from 1, seconds) of the 3 slowest successes; [] while live


@dataclass(frozen=True)
class RunStatusView:
    """A run's status as one snapshot saw it: what the run page and its ETag are made of.

    ``tasks``, ``outcomes`` and ``hook`` are None when the caller's ETag still matched (nothing
    a page shows has changed, so nothing more was read). For a run read by :class:`TilePage`,
    ``tasks`` is one page of tiles and ``compact`` holds the rest.
    """

    etag: str
    run: RunView
    now: datetime  # the database's clock at the snapshot
    hook_status: str | None = None  # the completion hook task's status, once it exists
    tasks: list[TaskView] | None = None
    outcomes: dict[str, int] | None = None  # attempt outcomes, plus "retried" (see Reads.run_status)
    hook: TaskView | None = None
    compact: CompactStatus | None = None
    # While it is live but runs nothing and has a task due: the due tasks to be claimed before its
    # first (it waits for a free slot). None otherwise.
    ahead: int | None = None
    workers: int | None = None  # with ``ahead``: the supervisors live now (0: nothing will claim its tasks)
    held: str | None = None  # with ``ahead``: the pause or limit that holds it back, in words (None: none)

    @property
    def changed(self) -> bool:
        return self.tasks is not None

    @property
    def final(self) -> bool:
        """Nothing shown will change again: the run is over and its hook, if any, has ended."""
        terminal = {s.value for s in TERMINAL_TASK_STATUSES}
        return not self.run.live and (self.run.hook_task_id is None or self.hook_status in terminal)
