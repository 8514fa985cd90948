"""Running one attempt of a task by the protocol, without knowing its shape in advance.

An :class:`Execution` goes through these phases, driven by the supervisor's loop:

1. ``run`` — the kind's factory and the task's ``run()`` execute on a thread of their own.
   A non-``None`` return is the output: the task was blocking, and is done.
2. A ``None`` return from an object that has ``check_output()`` means polling: the thread
   ends, and the attempt waits in the supervisor's schedule holding no thread. Each check
   runs ``check_output()`` on a short-lived thread; the first comes right after ``run()``
   returns, then after ``poll_first_s``, growing by ``poll_factor`` up to ``poll_max_s``.
   A task may ask for a fixed pace with a ``poll_interval_s`` attribute.
3. ``None`` from an object without ``check_output()`` is simply a ``None`` output.

A thread that overstays the attempt's timeout cannot be killed in Python: the attempt is
failed, the task's ``stop_event`` is set so cooperative code can return, and the thread is
left to end on its own as a daemon. Whatever it returns later is ignored.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.leases import Lease
from service.protocol import Runnable, TaskContext, get_kind

MAX_ERROR_CHARS = 4000
MAX_CHECK_ERRORS = 3  # consecutive check_output() errors before the attempt fails


@dataclass
class Execution:
    """One attempt in flight on this supervisor."""

    lease: Lease
    ctx: TaskContext
    started_mono: float
    deadline_mono: float
    task: Runnable | None = None
    phase: str = "run"  # run | wait (holds no thread) | check | finishing
    next_check_mono: float = 0.0
    poll_interval_s: float = 0.0
    check_errors: int = 0
    flushed_version: int = 0
    pending: dict[str, Any] | None = field(default=None)  # a finish write to retry


Post = Callable[[tuple[Any, ...]], None]


def start_run(execution: Execution, post: Post) -> None:
    """Build the task and call ``run()`` on a daemon thread; post ("ran", execution, value, error)."""

    def target() -> None:
        try:
            kind = get_kind(execution.lease.kind)
            task = kind.build(dict(execution.lease.args), execution.ctx)
            execution.task = task
            value = task.run()
        except BaseException as exc:  # noqa: BLE001 - task code may raise anything; all are reported
            post(("ran", execution, None, exc))
            return
        post(("ran", execution, value, None))

    _spawn(target, f"task-{execution.lease.task_id}-{execution.lease.attempt}-run")


def start_check(execution: Execution, post: Post) -> None:
    """Call ``check_output()`` on a daemon thread; post ("checked", execution, value, error)."""
    task = execution.task
    execution.phase = "check"

    def target() -> None:
        try:
            value = task.check_output()  # type: ignore[union-attr]
        except BaseException as exc:  # noqa: BLE001
            post(("checked", execution, None, exc))
            return
        post(("checked", execution, value, None))

    _spawn(target, f"task-{execution.lease.task_id}-{execution.lease.attempt}-check")


def is_polling(task: Runnable | None) -> bool:
    return task is not None and callable(getattr(task, "check_output", None))


def describe_error(exc: BaseException) -> str:
    """``Type: message`` for people, even for exceptions whose ``str()`` itself fails."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except BaseException:  # noqa: BLE001 - an unprintable exception must still be reported
        try:
            text = repr(exc)
        except BaseException:  # noqa: BLE001
            text = "(its message could not be printed)"
    message = f"{name}: {text}" if text else name
    return message[:MAX_ERROR_CHARS]


def check_result(value: Any) -> str | None:
    """None if ``value`` can be stored as JSON, else why not."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"the task's output cannot be stored as JSON ({describe_error(exc)})"
    return None


def _spawn(target: Callable[[], None], name: str) -> None:
    threading.Thread(target=target, name=name, daemon=True).start()
