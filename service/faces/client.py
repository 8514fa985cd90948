"""The Python API: open a database, submit runs and tasks, read them, cancel, retry, supervise.

>>> import service as tenure
>>> t = tenure.open("tenure.db")              # migrates a new database
>>> run_id = t.submit_run(50, "sleep", {"min_seconds": 1, "max_seconds": 3})
>>> sup = t.start_supervisor()                # or run `tenure worker` elsewhere
>>> t.wait_run(run_id, timeout_s=60).counts
>>> sup.stop()

Nothing here blocks on task execution: submitting writes rows and returns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Engine

from service.clock import Clock, SystemClock
from service.config import Settings, check_queue_name
from service.errors import InvalidInput, TaskFailed, TenureError
from service.faces.flow import check_age, check_limit, parse_rate, plan_flow, with_flow
from service.faces.plans import RunPlan, TaskPlan, plan_simulation, plan_task, plan_tasks, with_start
from service.faces.schedules import plan_schedule, sync_defined
from service.storage import Store, schema
from service.storage.db import make_engine, normalize_url
from service.storage.firing import Fired
from service.storage.flow import UNSET, KeyView, QueueView
from service.storage.history import History, RunHistory
from service.storage.retention import PruneReport
from service.storage.schedules import ScheduleView
from service.storage.submit import Created, Idempotency
from service.storage.views import AttemptView, RunStatusView, RunView, TaskView
from service.supervisor.loop import Supervisor

T = TypeVar("T")

MAX_KEY_CHARS = 190


class Tenure:
    """A handle on one tenure database."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self.engine = engine
        self.clock = clock or SystemClock()
        self.store = Store(engine)

    # -- submitting -----------------------------------------------------------------------

    def submit_run(
        self,
        what: int | str,
        tasks_or_kind: Sequence[Any] | str = "sleep",
        params: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        max_attempts: int = 3,
        timeout_s: float | None = None,
        memory_limit_mb: int | None = None,
        on_complete: str | None = None,
        idempotency_key: str | None = None,
        start_at: datetime | str | None = None,
        delay_s: float | None = None,
        queue: str | None = None,
        priority: int | None = None,
        key: str | None = None,
        key_limit: int | None = None,
    ) -> int:
        """Create a run; returns its id at once. Two shapes:

        * ``submit_run("convert", [{"path": p} for p in paths])``: explicit tasks of a kind,
          each entry a task's args, a spec ``{"args": ..., "label": ...}`` or a
          :class:`TaskSpec` (its own kind, label, max_attempts, timeout_s, memory_limit_mb);
        * ``submit_run(50, "sleep", {"min_seconds": 1})``: a simulation, ``count`` tasks whose
          args the kind derives from ``params`` (checked, and completed: a missing ``seed`` is
          drawn and stored).

        ``memory_limit_mb`` caps each task's process (default: the supervisor's). With an
        ``idempotency_key``, the same call again returns the same run; the same key with
        another request raises Conflict.

        ``start_at`` (an aware datetime, or RFC 3339 text with its offset) or ``delay_s`` holds
        every task back until then, by the database's clock; it can be cancelled before.

        ``queue`` (default: the kind's, else ``default``) is where its tasks wait; ``priority``
        (higher first, -1000 to 1000) orders them there; ``key`` is a concurrency key every task
        of it counts against, ``key_limit`` at most how many with that key run at once on every
        host (see :mod:`service.faces.flow`).

        Raises:
            InvalidInput: unknown kind or hook, bad count, entries, name, parameters or start (nothing
                is written).
            Conflict: the idempotency key was used for a different request.
        """
        plan = plan_run(what, tasks_or_kind, params, name=name, max_attempts=max_attempts, timeout_s=timeout_s,
                        memory_limit_mb=memory_limit_mb, on_complete=on_complete)
        flow = plan_flow(queue, priority, key, key_limit)
        return self.start_run(with_flow(with_start(plan, start_at, delay_s), flow), idempotency_key).id

    def start_run(self, plan: RunPlan, idempotency_key: str | None = None) -> Created:
        """Write a checked :class:`RunPlan`; ``Created.new`` is False when the key made it before."""
        return self.store.create_run(
            kind=plan.kind, total=plan.total, params=plan.params, tasks=plan.rows, name=plan.name,
            on_complete=plan.on_complete, idempotency=_key(idempotency_key, "run", plan.fingerprint),
            start=plan.start, placement=plan.placement,
        )

    def submit_task(
        self, kind: str, args: dict[str, Any] | None = None, *, label: str | None = None, max_attempts: int = 3,
        timeout_s: float | None = None, memory_limit_mb: int | None = None, idempotency_key: str | None = None,
        start_at: datetime | str | None = None, delay_s: float | None = None, queue: str | None = None,
        priority: int | None = None, key: str | None = None, key_limit: int | None = None,
        unique_key: str | None = None,
    ) -> int:
        """Queue one task of ``kind`` built from JSON ``args``, outside any run; returns its id at once.
        ``start_at`` or ``delay_s`` holds it back until then; ``queue``, ``priority``, ``key`` and
        ``key_limit`` place it (see :meth:`submit_run`). With ``unique_key``, while a task holding
        that key is queued, retrying or running, none is created and that task's id comes back.

        Raises:
            InvalidInput: unknown kind, args that are not a JSON object, or a bad start (nothing is written).
            Conflict: the idempotency key was used for a different request.
        """
        plan = plan_task(kind, args, label=label, max_attempts=max_attempts, timeout_s=timeout_s,
                         memory_limit_mb=memory_limit_mb)
        flow = plan_flow(queue, priority, key, key_limit, unique_key)
        return self.start_task(with_flow(with_start(plan, start_at, delay_s), flow), idempotency_key).id

    def start_task(self, plan: TaskPlan, idempotency_key: str | None = None) -> Created:
        """Write a checked :class:`TaskPlan`; ``Created.new`` is False when the key made it before."""
        return self.store.create_task(**plan.row, idempotency=_key(idempotency_key, "task", plan.fingerprint),
                                      start=plan.start, placement=plan.placement)

    # The classic task-manager exercise's verbs.
    register_task = submit_task

    def get_task_status(self, task_id: int) -> TaskView:
        """The task's status, progress, attempts so far, result and error. Raises NotFound."""
        return self.store.get_task(task_id)

    def get_task_result(self, task_id: int) -> Any:
        """The task's result once it succeeded; None while it has not ended.

        Raises:
            NotFound: no task has this id.
            TaskFailed: it failed or was cancelled (the exception carries its error).
        """
        task = self.store.get_task(task_id)
        if task.status == "succeeded":
            return task.result
        if task.terminal:
            raise TaskFailed(f"task {task_id} {task.status}: {task.error}", task)
        return None

    def cancel_task(self, task_id: int) -> bool:
        """Cancel one task that has not ended. Raises NotFound, Conflict (it ended already)."""
        return self.store.cancel_task(task_id)

    def prune(self, older_than_s: float, **kwargs: Any) -> PruneReport:
        """Delete runs and single tasks that ended more than ``older_than_s`` ago (see storage.retention)."""
        return self.store.prune(older_than_s, **kwargs)

    # -- reading --------------------------------------------------------------------------

    def run(self, run_id: int) -> RunView:
        """A run with its status counts. Raises NotFound."""
        return self.store.get_run(run_id)

    def run_with_tasks(self, run_id: int) -> tuple[RunView, list[TaskView]]:
        """A run and its tasks from one snapshot. Raises NotFound."""
        return self.store.run_snapshot(run_id)

    def run_status(self, run_id: int, etag: str | None = None) -> RunStatusView:
        """Everything a run's page shows, from one snapshot; only the ETag when ``etag`` matches.

        Raises NotFound.
        """
        return self.store.run_status(run_id, etag)

    def run_history(self, run_id: int) -> RunHistory:
        """A run's attempts over time, outages and durations, for its pictures (see storage.history).

        Raises NotFound.
        """
        return History(self.engine).run_history(run_id)

    def runs(self, limit: int = 20, offset: int = 0) -> list[RunView]:
        """Run history, latest first."""
        return self.store.list_runs(limit=limit, offset=offset)

    def task(self, task_id: int) -> TaskView:
        """A task's status, progress, result and error. Raises NotFound."""
        return self.store.get_task(task_id)

    def attempts(self, task_id: int) -> list[AttemptView]:
        return self.store.attempts(task_id)

    def check_output(self, task_id: int) -> Any:
        """The task's result once it succeeded, else None (the polling shape, for callers)."""
        task = self.store.get_task(task_id)
        return task.result if task.status == "succeeded" else None

    def wait_run(self, run_id: int, timeout_s: float, poll_s: float = 0.02) -> RunView:
        """Block until the run is no longer running; returns it.

        Raises:
            TimeoutError: the run is still running after ``timeout_s``.
        """
        return _wait(lambda: self.store.get_run(run_id), lambda r: not r.live, timeout_s, poll_s,
                     f"run {run_id} still running after {timeout_s} s")

    def wait_task(self, task_id: int, timeout_s: float, poll_s: float = 0.02) -> TaskView:
        """Block until the task is terminal; returns it. Raises TimeoutError."""
        return _wait(lambda: self.store.get_task(task_id), lambda t: t.terminal, timeout_s, poll_s,
                     f"task {task_id} not finished after {timeout_s} s")

    # -- changing -------------------------------------------------------------------------

    def cancel_run(self, run_id: int) -> int:
        """Cancel a running run; returns how many tasks were cancelled. Raises NotFound, Conflict."""
        return self.store.cancel_run(run_id)

    def retry_run(self, run_id: int) -> int:
        """Queue a finished run's failed tasks again; returns how many. Raises NotFound, Conflict."""
        return self.store.retry_run(run_id)

    # -- flow control ---------------------------------------------------------------------

    def set_queue(self, name: str, *, concurrency: int | None = UNSET, rate: str | tuple[int, float] | None = UNSET,
                  age_s: float | None = UNSET) -> QueueView:
        """Declare queue ``name`` and set its limits: ``concurrency`` (most running at once on every
        host), ``rate`` (starts per period: ``"10/s"`` or (10, 1.0)), ``age_s`` (a task waiting
        longer goes ahead of higher priorities). None removes a limit; one not given stays.
        Once a queue is declared, submits to a queue that does not exist yet are refused.

        Raises:
            InvalidInput: a bad name, a limit below 1, a rate without a period.
        """
        check_queue_name(name)
        if concurrency is not UNSET and concurrency is not None:
            check_limit(concurrency, "concurrency")
        if rate is not UNSET and rate is not None:
            rate = parse_rate(rate)
        if age_s is not UNSET and age_s is not None:
            check_age(age_s)
        return self.store.set_queue(name, concurrency=concurrency, rate=rate, age_s=age_s)

    def pause_queue(self, name: str) -> QueueView:
        """No new attempt of queue ``name`` starts on any worker until :meth:`resume_queue`; what runs
        finishes. Survives restarts. Raises NotFound."""
        return self.store.pause_queue(check_queue_name(name))

    def resume_queue(self, name: str) -> QueueView:
        return self.store.resume_queue(check_queue_name(name))

    def queues(self) -> list[QueueView]:
        """Every queue: depth, running against its limit, oldest wait, paused or not."""
        return self.store.queues()

    def queue(self, name: str) -> QueueView:
        return self.store.queue(check_queue_name(name))

    def set_key(self, name: str, *, concurrency: int | None = UNSET,
                rate: str | tuple[int, float] | None = UNSET) -> KeyView:
        """Set the limits of concurrency key ``name``: most running at once, starts per period."""
        plan_flow(key=name)
        if concurrency is not UNSET and concurrency is not None:
            check_limit(concurrency, "concurrency")
        if rate is not UNSET and rate is not None:
            rate = parse_rate(rate)
        return self.store.set_key(name, concurrency=concurrency, rate=rate)

    def key(self, name: str) -> KeyView:
        """A concurrency key's limits and its running attempts. Raises NotFound for a key with no limits."""
        return self.store.key(name)

    def pause_run(self, run_id: int) -> bool:
        """None of the run's tasks starts until :meth:`resume_run`; what runs finishes. Raises
        NotFound, or Conflict for a run that has ended."""
        return self.store.pause_run(run_id)

    def resume_run(self, run_id: int) -> bool:
        return self.store.pause_run(run_id, paused=False)

    # -- schedules ------------------------------------------------------------------------

    def add_schedule(self, name: str, cron: str, **options: Any) -> ScheduleView:
        """Create a schedule: each slot of ``cron`` (in ``timezone``, default UTC) starts ``task``
        ({"kind", "args", ...}) or ``run`` ({"kind", "tasks": [...]} or {"kind", "count", "params"}).

        Policies: ``catch_up`` (none, latest, all; default latest) with ``catch_up_max``,
        ``overlap`` (skip, allow, queue; default skip), ``grace_s`` (default 30: a slot fired
        later than this was missed). See :mod:`service.faces.schedules`.

        Raises:
            InvalidInput: naming the field (nothing is written).
            Conflict: a schedule of that name exists.
        """
        return self.store.schedule(self.store.create_schedule(plan_schedule(name, cron, **options)))

    def schedules(self) -> list[ScheduleView]:
        """Every schedule with its next fire times and latest fires."""
        return self.store.schedules()

    def schedule(self, ref: int | str) -> ScheduleView:
        """One schedule, by id or name. Raises NotFound."""
        return self.store.schedule(ref)

    def pause_schedule(self, ref: int | str) -> ScheduleView:
        """No slot fires until resumed (slots meanwhile are not caught up). Raises NotFound."""
        return self.store.pause_schedule(ref)

    def resume_schedule(self, ref: int | str) -> ScheduleView:
        """Fire again from the next slot. Raises NotFound."""
        return self.store.resume_schedule(ref)

    def delete_schedule(self, ref: int | str) -> None:
        """Delete it and its fire history (what it started stays). Raises NotFound."""
        self.store.delete_schedule(ref)

    def fire_schedule(self, ref: int | str) -> Fired:
        """Start its task or run now, outside its slots. Raises NotFound."""
        return self.store.fire_schedule_now(ref)

    def fire_due_schedules(self, now: datetime | None = None) -> list[Fired]:
        """Handle every due slot now (supervisors do this on their own; ``now``, naive UTC, for tests)."""
        return self.store.fire_due(now)

    # -- supervising ----------------------------------------------------------------------

    def start_supervisor(self, settings: Settings | None = None, **overrides: Any) -> Supervisor:
        """Start an embedded supervisor in this process (threads); stop it with ``.stop()``.
        Schedules defined in code are synced to the database first."""
        if settings is None:
            settings = Settings.from_env(**overrides)
        sync_defined(self.store)
        return Supervisor(self.engine, settings, clock=self.clock).start()

    def close(self) -> None:
        self.engine.dispose()


def open(db: str | None = None, *, migrate: bool = True, clock: Clock | None = None,  # noqa: A001
         sqlite_sync: str | None = None) -> Tenure:
    """Open tenure's database (a URL or a file path; default TENURE_DB, then ./tenure.db).

    With ``migrate`` (the default) a new or older database is brought to the current schema.
    ``sqlite_sync`` (default TENURE_SQLITE_SYNC, else ``"normal"``) is how durable a SQLite commit
    is: ``"normal"`` survives any process crash but a power loss can undo the last commits;
    ``"full"`` syncs every commit to disk before it returns. PostgreSQL ignores it.

    Raises:
        InvalidInput: a sync level other than normal or full.
        SchemaError: the database is not tenure's, or newer than this code.
        StorageError: it cannot be opened.
    """
    engine = make_engine(normalize_url(db), sqlite_sync=sqlite_sync)
    try:
        if migrate:
            schema.migrate(engine)
        else:
            schema.require_current(engine)
    except TenureError:
        engine.dispose()
        raise
    return Tenure(engine, clock)


def plan_run(
    what: int | str, tasks_or_kind: Sequence[Any] | str = "sleep", params: dict[str, Any] | None = None,
    **options: Any,
) -> RunPlan:
    """Check a run request of either shape (see :meth:`Tenure.submit_run`) without the database."""
    if isinstance(what, str):
        if isinstance(tasks_or_kind, str) or params is not None:
            raise InvalidInput("explicit tasks are submit_run(kind, [task, ...]); a simulation is "
                               "submit_run(count, kind, params)")
        return plan_tasks(what, tasks_or_kind, **options)
    if not isinstance(tasks_or_kind, str):
        raise InvalidInput("a simulation is submit_run(count, kind, params): the second value names the kind")
    return plan_simulation(what, tasks_or_kind, params, **options)


def _key(key: str | None, what: str, request_fingerprint: str) -> Idempotency | None:
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_CHARS or not key.isprintable():
        raise InvalidInput(f"an idempotency key must be 1 to {MAX_KEY_CHARS} printable characters")
    return Idempotency(key=f"{what}:{key}", request_hash=request_fingerprint)


def _wait(read: Callable[[], T], done: Callable[[T], bool], timeout_s: float, poll_s: float, message: str) -> T:
    deadline = threading.Event()
    timer = threading.Timer(timeout_s, deadline.set)
    timer.daemon = True
    timer.start()
    try:
        while True:
            value = read()
            if done(value):
                return value
            if deadline.wait(poll_s):
                value = read()
                if done(value):
                    return value
                raise TimeoutError(message)
    finally:
        timer.cancel()
