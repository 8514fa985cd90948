"""The database's figures for metrics (:mod:`service.supervisor.metrics`): counts across every worker.

One verb, one read snapshot, five statements, the same SQL on SQLite and PostgreSQL. What each
costs, on a database of N tasks (the README's "Metrics" has the measured figures):

* runs by status: a covering scan of ``ix_runs_status`` (one entry per run);
* tasks by status and kind: one grouped pass over ``tasks`` (no index has the kind; O(N));
* attempts by outcome: one grouped pass over ``task_attempts`` (O(attempts));
* supervisors alive: the ``supervisors`` table (one row per supervisor start, pruned with history);
* the oldest due task: one seek of the partial ``ix_tasks_due`` index, and the least ``queued_at`` of
  the tasks due at once (a walk of ``ix_tasks_ready``: only the waiting tasks);
* per queue (:func:`flow.panel`): its waiting tasks (a count over the partial due indexes: only
  waiting tasks), its open attempts, its oldest wait (one seek of ``ix_tasks_aged``).

The caller shares one read among many scrapes (:class:`service.supervisor.metrics.DatabaseCollector`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine, func, select

from service.storage.db import db_now, read_tx
from service.storage.due import at_once, by_time
from service.storage.errors import translated
from service.storage.flow import QueueView, panel
from service.storage.models import DUE_TASK_STATUSES, Run, SupervisorRow, Task, TaskAttempt

DUE = tuple(s.value for s in DUE_TASK_STATUSES)


@dataclass(frozen=True)
class Figures:
    """Counts from one snapshot of the database."""

    tasks: dict[tuple[str, str], int]  # (status, kind) -> tasks; absent pairs are 0
    attempts: dict[str, int]  # outcome -> attempts (running: still open)
    runs: dict[str, int]  # status -> runs
    supervisors_alive: int  # not stopped, heartbeat changed within the window asked for
    oldest_due_s: float  # how long the longest-due task has been due (0 when none is)
    queues: list[QueueView] = field(default_factory=list)  # each queue's depth, running, limits, pause


class Gauges:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @translated
    def figures(self, alive_within_s: float) -> Figures:
        """Every figure, from one read snapshot; zeros (empty dicts) on an empty database.

        A supervisor counts as alive when it is not marked stopped and its ``heartbeat_at`` is
        within ``alive_within_s`` of the database's clock (both times are the database's: no
        process's clock is compared with another's). Read only.
        """
        with read_tx(self.engine) as conn:
            runs = conn.execute(select(Run.status, func.count()).group_by(Run.status)).all()
            tasks = conn.execute(select(Task.status, Task.kind, func.count()).group_by(Task.status, Task.kind)).all()
            attempts = conn.execute(select(TaskAttempt.outcome, func.count()).group_by(TaskAttempt.outcome)).all()
            alive = conn.execute(
                select(func.count()).select_from(SupervisorRow)
                .where(SupervisorRow.stopped_at.is_(None), SupervisorRow.heartbeat_at >= db_now(-alive_within_s))
            ).scalar_one()
            # The head of each part of the claim's order (storage.due): since when it has been due.
            # Due by a time: the head of its order is the longest due. Due at once: claimed by task id,
            # so a task handed back just now may head the line; the longest waiting is the min.
            timed = by_time(Task.next_attempt_at).limit(1).scalar_subquery()
            ready = at_once(func.min(Task.queued_at)).order_by(None).scalar_subquery()
            now, head_timed, head_ready = conn.execute(select(db_now(), timed, ready)).one()
            oldest = min((at for at in (head_timed, head_ready) if at is not None), default=None)
            queues = panel(conn, None)
        return Figures(
            tasks={(status, kind): int(n) for status, kind, n in tasks},
            attempts={outcome: int(n) for outcome, n in attempts},
            runs={status: int(n) for status, n in runs},
            supervisors_alive=int(alive),
            oldest_due_s=max(0.0, (now - oldest).total_seconds()) if oldest is not None and now is not None else 0.0,
            queues=queues,
        )
