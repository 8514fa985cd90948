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

import math
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine

from service.clock import Clock, SystemClock
from service.config import Settings, check_memory_mb
from service.errors import InvalidInput, TenureError
from service.protocol import Kind, get_kind
from service.storage import Store, schema
from service.storage.db import make_engine, normalize_url
from service.storage.views import AttemptView, RunStatusView, RunView, TaskView
from service.supervisor import Supervisor

T = TypeVar("T")

MAX_TASKS_PER_RUN = 10_000
MAX_NAME_CHARS = 200


class Tenure:
    """A handle on one tenure database."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self.engine = engine
        self.clock = clock or SystemClock()
        self.store = Store(engine)

    # -- submitting -----------------------------------------------------------------------

    def submit_run(
        self,
        count: int,
        kind: str = "sleep",
        params: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        max_attempts: int = 3,
        timeout_s: float | None = None,
        memory_limit_mb: int | None = None,
        on_complete: str | None = None,
    ) -> int:
        """Create a run of ``count`` tasks of ``kind``; returns its id at once.

        ``params`` are checked by the kind (and completed: a missing ``seed`` is drawn and
        stored) before anything is written. ``memory_limit_mb`` caps each task's process
        (default: the supervisor's ``--memory-limit``).

        Raises:
            InvalidInput: unknown kind or hook, bad count, name or parameters.
        """
        task_kind, checked, name = prepare_run(
            count, kind, params, name=name, max_attempts=max_attempts, timeout_s=timeout_s,
            memory_limit_mb=memory_limit_mb, on_complete=on_complete,
        )
        return self.store.create_run(
            kind=kind, count=count, params=checked, name=name, max_attempts=max_attempts,
            timeout_s=timeout_s, memory_limit_mb=memory_limit_mb, on_complete=on_complete,
            args_for=lambda position: task_kind.args_for(checked, position),
        )

    def submit_task(
        self, kind: str, args: dict[str, Any] | None = None, *, max_attempts: int = 3,
        timeout_s: float | None = None, memory_limit_mb: int | None = None,
    ) -> int:
        """Queue one task of ``kind`` built from JSON ``args``; returns its id at once.

        Raises:
            InvalidInput: unknown kind, or args that are not a JSON object.
        """
        get_kind(kind)
        _check_attempts(max_attempts)
        _check_timeout(timeout_s)
        if memory_limit_mb is not None:
            check_memory_mb(memory_limit_mb)
        if args is not None and not isinstance(args, dict):
            raise InvalidInput(f"args must be an object of named values, got {type(args).__name__}")
        return self.store.create_task(kind=kind, args=dict(args or {}), max_attempts=max_attempts,
                                      timeout_s=timeout_s, memory_limit_mb=memory_limit_mb)

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

    # -- supervising ----------------------------------------------------------------------

    def start_supervisor(self, settings: Settings | None = None, **overrides: Any) -> Supervisor:
        """Start an embedded supervisor in this process (threads); stop it with ``.stop()``."""
        if settings is None:
            settings = Settings.from_env(**overrides)
        return Supervisor(self.engine, settings, clock=self.clock).start()

    def close(self) -> None:
        self.engine.dispose()


def open(db: str | None = None, *, migrate: bool = True, clock: Clock | None = None) -> Tenure:  # noqa: A001
    """Open tenure's database (a URL or a file path; default TENURE_DB, then ./tenure.db).

    With ``migrate`` (the default) a new or older database is brought to the current schema.

    Raises:
        SchemaError: the database is not tenure's, or newer than this code.
        StorageError: it cannot be opened.
    """
    engine = make_engine(normalize_url(db))
    try:
        if migrate:
            schema.migrate(engine)
        else:
            schema.require_current(engine)
    except TenureError:
        engine.dispose()
        raise
    return Tenure(engine, clock)


def prepare_run(
    count: int,
    kind: str,
    params: dict[str, Any] | None,
    *,
    name: str | None = None,
    max_attempts: int = 3,
    timeout_s: float | None = None,
    memory_limit_mb: int | None = None,
    on_complete: str | None = None,
) -> tuple[Kind, dict[str, Any], str | None]:
    """Check a run request without touching the database.

    Returns the kind, its completed parameters (a missing ``seed`` drawn) and the tidied name.

    Raises:
        InvalidInput: unknown kind or hook, bad count, name, attempts, timeout or parameters.
    """
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_TASKS_PER_RUN:
        raise InvalidInput(f"a run needs between 1 and {MAX_TASKS_PER_RUN} tasks, got {count!r}")
    task_kind = get_kind(kind)
    if on_complete is not None:
        get_kind(on_complete)
    _check_attempts(max_attempts)
    _check_timeout(timeout_s)
    if memory_limit_mb is not None:
        check_memory_mb(memory_limit_mb)
    if name is not None:
        if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
            raise InvalidInput(f"a run's name must be text of at most {MAX_NAME_CHARS} characters")
        name = name.strip() or None
    if params is not None and not isinstance(params, dict):
        raise InvalidInput(f"params must be an object of named values, got {type(params).__name__}")
    return task_kind, task_kind.validate(dict(params or {})), name


def _check_attempts(max_attempts: int) -> None:
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or not 1 <= max_attempts <= 100:
        raise InvalidInput(f"max_attempts must be a whole number from 1 to 100, got {max_attempts!r}")


def _check_timeout(timeout_s: float | None) -> None:
    if timeout_s is None:
        return
    number = isinstance(timeout_s, (int, float)) and not isinstance(timeout_s, bool)
    if not number or not math.isfinite(timeout_s) or timeout_s <= 0:
        raise InvalidInput(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")


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
