"""Checking a schedule before it is written, and schedules defined in code.

One shape for every face (Python, the CLI, the HTTP API): a name, a cron expression and its
zone, what each slot starts, and the policies::

    {"name": "nightly", "cron": "0 2 * * *", "timezone": "Europe/Berlin",
     "run": {"kind": "convert", "tasks": [{"path": "a.pdf"}, ...]},     # or "count" and "params"
     "catch_up": "latest", "catch_up_max": 100, "overlap": "skip", "grace_s": 30}

or ``"task": {"kind": "report", "args": {...}}`` for one task per slot. What a slot starts is
checked here exactly as a submission is (:mod:`service.faces.plans`), once; each fire writes
the checked rows.

In code, beside ``register``::

    @tenure.schedule("nightly-report", "0 2 * * *", timezone="Europe/Berlin")
    @tenure.register("report")
    def report(ctx): ...

    tenure.schedule("nightly", "0 2 * * *", run={"kind": "convert", "tasks": [...]})

Every ``tenure worker`` and ``tenure serve`` (and ``Tenure.start_supervisor``) syncs these to
the database by name when it starts; many starting together write each once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from service.cron import Cron
from service.errors import InvalidInput
from service.faces.flow import with_flow
from service.faces.plans import fingerprint, plan_simulation, plan_task, plan_tasks
from service.storage.models import CatchUp, Overlap, ScheduleTarget
from service.task_process.protocol import kinds as registered_kinds
from service.text import check_text

MAX_NAME_CHARS = 200
MAX_CATCH_UP = 10_000
DEFAULT_CATCH_UP_MAX = 100
DEFAULT_GRACE_S = 30.0
MAX_GRACE_S = 86_400.0
TASK_KEYS = frozenset({"kind", "args", "label", "max_attempts", "timeout_s", "memory_limit_mb"})
RUN_KEYS = frozenset({"kind", "tasks", "count", "params", "name", "max_attempts", "timeout_s", "memory_limit_mb",
                      "on_complete"})
_DEFINED: dict[str, dict[str, Any]] = {}


def plan_schedule(
    name: Any, cron: Any, *, timezone: Any = "UTC", task: Any = None, run: Any = None,
    catch_up: Any = CatchUp.LATEST.value, catch_up_max: Any = DEFAULT_CATCH_UP_MAX,
    overlap: Any = Overlap.SKIP.value, grace_s: Any = DEFAULT_GRACE_S, origin: str = "api",
) -> dict[str, Any]:
    """The values of a schedule's row, checked.

    Raises:
        InvalidInput: naming the field: a bad name, expression or zone, neither or both of
            ``task`` and ``run`` (or a bad one of them), an unknown policy, a catch-up maximum
            or grace out of range.
    """
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
        raise InvalidInput(f"name must be text of 1 to {MAX_NAME_CHARS} characters")
    check_text(name, "name")
    name = name.strip()
    parsed = Cron(cron, timezone)
    if (task is None) == (run is None):
        raise InvalidInput("a schedule starts a task or a run: give one of task ({\"kind\": ..., \"args\": ...}) "
                           "and run ({\"kind\": ..., \"tasks\": [...]} or {\"kind\": ..., \"count\": N})")
    target, kind, spec = _task(task) if task is not None else _run(run)
    values = {
        "name": name, "cron": parsed.expression, "timezone": parsed.timezone, "target": target, "kind": kind,
        "spec": spec, "catch_up": _choice(catch_up, CatchUp, "catch_up"),
        "catch_up_max": _whole(catch_up_max, "catch_up_max", 1, MAX_CATCH_UP),
        "overlap": _choice(overlap, Overlap, "overlap"), "grace_s": _seconds(grace_s), "origin": origin,
    }
    values["definition_hash"] = fingerprint({k: v for k, v in values.items() if k != "origin"})
    return values


def schedule(name: str, cron: str, *, task: dict[str, Any] | None = None, run: dict[str, Any] | None = None,
             args: dict[str, Any] | None = None, **policies: Any) -> Callable[[Any], Any]:
    """Define a schedule in code (synced at every start). With ``task`` or ``run`` it is defined
    now; without, it decorates a kind registered with ``register`` (one task of it per slot,
    with ``args``).

    Raises:
        InvalidInput: as :func:`plan_schedule`, at import time, not at 02:00.
    """
    def define(spec_task: dict[str, Any] | None) -> None:
        _DEFINED[name] = plan_schedule(name, cron, task=spec_task, run=run, origin="code", **policies)

    if task is not None or run is not None:
        define(task)
        return lambda obj: obj

    def decorate(build: Any) -> Any:
        found = [k.name for k in registered_kinds() if k.build is build]
        if not found:
            raise InvalidInput(f"schedule {name!r} decorates something that is not a registered kind; put "
                               "@tenure.schedule(...) above @tenure.register(...)")
        define({"kind": found[0], "args": args or {}})
        return build

    return decorate


def defined() -> list[dict[str, Any]]:
    """The schedules defined in code in this process, checked."""
    return list(_DEFINED.values())


def sync_defined(store: Any) -> list[str]:
    """Write the schedules defined in code to the database (see :meth:`Schedules.sync_schedules`)."""
    return store.sync_schedules(defined()) if _DEFINED else []  # type: ignore[no-any-return]


def _shape(value: Any, what: str, keys: frozenset[str], expected: str) -> None:
    """``value`` is an object naming its kind, with no field but ``keys``."""
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        raise InvalidInput(f"{what} must be {expected}")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise InvalidInput(f"{what}: unknown field {unknown[0]!r}; a {what} takes {', '.join(sorted(keys))}")


def _task(task: Any) -> tuple[str, str, dict[str, Any]]:
    _shape(task, "task", TASK_KEYS, "an object with the kind to start and its args")
    options = {k: task[k] for k in ("label", "max_attempts", "timeout_s", "memory_limit_mb") if k in task}
    try:
        plan = with_flow(plan_task(task["kind"], task.get("args"), **options), None)  # the kind's queue, key
    except InvalidInput as exc:
        raise InvalidInput(f"task: {exc}") from None
    return ScheduleTarget.TASK.value, task["kind"], {"row": plan.row, **_placed(plan.placement)}


def _run(run: Any) -> tuple[str, str, dict[str, Any]]:
    _shape(run, "run", RUN_KEYS, "an object with the kind and its tasks (or a count and params)")
    if ("tasks" in run) == ("count" in run):
        raise InvalidInput("run: give tasks (a list) or count (a simulation of that many tasks), one of them")
    options = {k: run[k] for k in ("max_attempts", "timeout_s", "memory_limit_mb", "on_complete") if k in run}
    try:
        if "tasks" in run:
            if not isinstance(run["tasks"], list):
                raise InvalidInput("tasks must be a list")
            plan = plan_tasks(run["kind"], run["tasks"], name=run.get("name"), **options)
        else:
            plan = plan_simulation(run["count"], run["kind"], run.get("params"), name=run.get("name"), **options)
        plan = with_flow(plan, None)  # the kind's queue, priority and key
    except InvalidInput as exc:
        raise InvalidInput(f"run: {exc}") from None
    spec = {"kind": plan.kind, "total": plan.total, "params": plan.params, "rows": plan.rows, "name": plan.name,
            "on_complete": plan.on_complete, **_placed(plan.placement)}
    return ScheduleTarget.RUN.value, run["kind"], spec


def _placed(placement: Any) -> dict[str, Any]:
    """Where a slot's work waits, as a schedule's spec keeps it (JSON)."""
    return {"queue": placement.queue, "key_limits": [list(pair) for pair in placement.key_limits]}


def _choice(value: Any, enum: Any, what: str) -> str:
    names = [e.value for e in enum]
    if value not in names:
        raise InvalidInput(f"{what} must be one of {', '.join(names)}, got {value!r}")
    return str(value)


def _whole(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{what} must be a whole number from {low} to {high:,}, got {value!r}")
    return value


def _seconds(value: Any) -> float:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not 0 < value <= MAX_GRACE_S:
        raise InvalidInput(f"grace_s must be a number of seconds above 0 and at most {MAX_GRACE_S:g}, got {value!r}")
    return float(value)
