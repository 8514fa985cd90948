"""Checking what someone asks to run, before anything is written: one set of rules for every face.

Python, the CLI and the HTTP API all turn a request into a :class:`RunPlan` or a
:class:`TaskPlan` here; storage then writes it in one transaction. Two shapes of run:

* a **simulation**: N copies of one kind, the kind deriving each task's args from the run's
  parameters (``submit_run(50, "sleep", {...})``);
* **explicit tasks**: a list, each with its own JSON ``args`` and optionally its own ``kind``,
  ``label``, ``max_attempts``, ``timeout_s`` and ``memory_limit_mb``
  (``submit_run("convert", [{"path": p} for p in paths])``).

An explicit entry is either the task's args themselves (a JSON object), or a *spec*: an object
with an ``args`` key and only the option keys above beside it. Errors name the entry's index.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from service.config import check_memory_mb
from service.cron import to_utc
from service.errors import InvalidInput
from service.storage.submit import Placement, Start
from service.task_process.protocol import Kind, get_kind
from service.text import check_json_text, check_text

MAX_TASKS_PER_RUN = 100_000
MAX_NAME_CHARS = 200
MAX_LABEL_CHARS = 200
MAX_ARGS_BYTES = 64 * 1024  # one task's args, as JSON
SPEC_KEYS = frozenset({"args", "kind", "label", "max_attempts", "timeout_s", "memory_limit_mb"})
LABEL_FROM_ARGS_CHARS = 40
MAX_START_AHEAD = timedelta(days=366)
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(?P<zone>Z|[+-]\d{2}:\d{2})?")
TIME_EXAMPLE = "2026-12-03T14:05:00+01:00"  # a start time or delay at most this far ahead


@dataclass(frozen=True)
class TaskSpec:
    """One explicit task of a run (or a single task): its args and its own options."""

    args: dict[str, Any]
    kind: str | None = None  # None: the run's kind
    label: str | None = None  # None: a short form of the args
    max_attempts: int | None = None  # None: the run's
    timeout_s: float | None = None
    memory_limit_mb: int | None = None


@dataclass
class RunPlan:
    kind: str
    total: int
    params: dict[str, Any]
    rows: list[dict[str, Any]]
    name: str | None
    on_complete: str | None
    fingerprint: str  # of the request as asked (before any seed is drawn): for idempotency
    explicit: bool = False
    start: Start | None = None  # None: due at once
    placement: Placement | None = None  # its queue and key limits (None: the default queue)


@dataclass
class TaskPlan:
    row: dict[str, Any]
    fingerprint: str
    options: dict[str, Any] = field(default_factory=dict)
    start: Start | None = None  # None: due at once
    placement: Placement | None = None


def plan_start(start_at: Any = None, delay_s: Any = None) -> Start | None:
    """When submitted work may start: an aware datetime (or RFC 3339 text with its offset), or a
    delay in seconds; None when neither is given (at once).

    Raises:
        InvalidInput: both given, a time without a zone, not a time, a negative or non-finite
            delay, or a start more than a year away.
    """
    if start_at is None and delay_s is None:
        return None
    if start_at is not None and delay_s is not None:
        raise InvalidInput("give start_at or delay_s, not both")
    if delay_s is not None:
        number = isinstance(delay_s, (int, float)) and not isinstance(delay_s, bool)
        if not number or not math.isfinite(delay_s) or delay_s < 0:
            raise InvalidInput(f"delay_s must be a number of seconds from 0 up, got {delay_s!r}")
        if delay_s > MAX_START_AHEAD.total_seconds():
            raise InvalidInput(f"delay_s may be at most a year ({MAX_START_AHEAD.days} days), got {delay_s!r}")
        return Start(delay_s=float(delay_s))
    at = parse_time(start_at, "start_at")
    try:
        utc = to_utc(at)
    except OverflowError:  # before the first instant UTC can name (0001-01-01T00:00+23:59)
        raise InvalidInput(f"start_at {at.isoformat()} is out of range; give a time within a year from now") from None
    if at - datetime.now(UTC) > MAX_START_AHEAD:
        raise InvalidInput(f"start_at {at.isoformat()} is more than a year away; the furthest start is "
                           f"{MAX_START_AHEAD.days} days ahead")
    return Start(at=utc)


P = TypeVar("P", RunPlan, TaskPlan)


def with_start(plan: P, start_at: Any = None, delay_s: Any = None) -> P:
    """``plan`` set to start at ``start_at`` or after ``delay_s`` (see :func:`plan_start`); the
    idempotency fingerprint covers the start as asked."""
    plan.start = plan_start(start_at, delay_s)
    if plan.start is not None:
        asked = start_at.isoformat() if isinstance(start_at, datetime) else start_at
        plan.fingerprint = fingerprint([plan.fingerprint, asked, delay_s])
    return plan


def parse_time(value: Any, what: str) -> datetime:
    """An aware datetime, from one or from RFC 3339 text ("2026-12-03T14:05:00+01:00", "...Z").

    Text must be RFC 3339 itself (date, time and offset), not whatever ``fromisoformat`` takes: a
    bare date or a time without its offset would be read in some server's zone.

    Raises:
        InvalidInput: not a time, or a time without its zone.
    """
    if isinstance(value, str):
        text = value.strip().upper()
        found = RFC3339.fullmatch(text)
        if found is None:
            raise InvalidInput(f"{what} {value[:60]!r} is not an RFC 3339 time such as {TIME_EXAMPLE}")
        if found["zone"] is None:
            raise InvalidInput(f"{what} {text} has no time zone; add one ({text}Z for UTC, or an offset "
                               "such as +01:00)")
        value = datetime.fromisoformat(text)
    if not isinstance(value, datetime):
        raise InvalidInput(f"{what} must be a time (RFC 3339 text such as 2026-12-03T14:05:00Z), got "
                           f"{type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{what} {value.isoformat()} has no time zone; add one (2026-12-03T14:05:00Z, or +01:00)")
    return value


def fingerprint(request: Any) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


def plan_simulation(
    count: int, kind: str, params: dict[str, Any] | None, *, name: str | None = None, max_attempts: int = 3,
    timeout_s: float | None = None, memory_limit_mb: int | None = None, on_complete: str | None = None,
) -> RunPlan:
    """A run of ``count`` tasks of ``kind``, their args derived from ``params`` by the kind.

    Raises:
        InvalidInput: unknown kind or hook, bad count, name, attempts, timeout or parameters, or
            text the database cannot store (:mod:`service.text`) in the name or a parameter.
    """
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_TASKS_PER_RUN:
        raise InvalidInput(f"a run needs between 1 and {MAX_TASKS_PER_RUN:,} tasks, got {count!r}")
    task_kind = get_kind(kind)
    options = _options(max_attempts, timeout_s, memory_limit_mb, on_complete)
    name = _name(name)
    if params is not None and not isinstance(params, dict):
        raise InvalidInput(f"params must be an object of named values, got {type(params).__name__}")
    for key, value in (params or {}).items():  # named as the API and the form name them: by themselves
        check_text(str(key), "a parameter's name")
        check_json_text(value, str(key))
    asked = {"count": count, "kind": kind, "params": params or {}, "name": name, **options}
    checked = task_kind.validate(dict(params or {}))
    rows = [{"kind": kind, "args": task_kind.args_for(checked, i), "label": None, **_row_options(options)}
            for i in range(count)]
    return RunPlan(kind=kind, total=count, params=checked, rows=rows, name=name, on_complete=on_complete,
                   fingerprint=fingerprint(asked))


def plan_tasks(
    kind: str, entries: Sequence[Any] | Iterable[Any], *, name: str | None = None, max_attempts: int = 3,
    timeout_s: float | None = None, memory_limit_mb: int | None = None, on_complete: str | None = None,
    where: Callable[[int], str] | None = None,
) -> RunPlan:
    """A run of explicit tasks: each entry is a task's args, a spec object, or a :class:`TaskSpec`.

    Raises:
        InvalidInput: an unknown kind, an entry that is not an object or has unknown keys beside
            ``args``, args too large, a bad option, text the database cannot store (a NUL, a
            lone surrogate) in the name, a label or args, or more than :data:`MAX_TASKS_PER_RUN` tasks;
            the message names the entry's index (0-based), or what ``where(index)`` calls it
            ("line 7" of a file).
    """
    get_kind(kind)
    name_of = where or (lambda i: f"entry {i}")
    options = _options(max_attempts, timeout_s, memory_limit_mb, on_complete)
    name = _name(name)
    rows: list[dict[str, Any]] = []
    asked: list[Any] = []
    kinds: dict[str, Kind] = {}
    for index, entry in enumerate(entries):
        if index >= MAX_TASKS_PER_RUN:
            raise InvalidInput(f"a run holds at most {MAX_TASKS_PER_RUN:,} tasks; {name_of(index)} is one too many")
        spec = _spec(entry, name_of(index))
        task_kind = spec.kind or kind
        if task_kind not in kinds:
            try:
                kinds[task_kind] = get_kind(task_kind)
            except InvalidInput as exc:
                raise InvalidInput(f"{name_of(index)}: {exc}") from None
        rows.append(_task_row(spec, task_kind, options, name_of(index)))
        asked.append(entry if not isinstance(entry, TaskSpec) else vars(entry))
    if not rows:
        raise InvalidInput("a run needs at least one task; the list is empty")
    request = {"kind": kind, "tasks": asked, "name": name, **options}
    return RunPlan(kind=kind, total=len(rows), params={}, rows=rows, name=name, on_complete=on_complete,
                   fingerprint=fingerprint(request), explicit=True)


def plan_task(
    kind: str, args: dict[str, Any] | None = None, *, label: str | None = None, max_attempts: int = 3,
    timeout_s: float | None = None, memory_limit_mb: int | None = None,
) -> TaskPlan:
    """One task outside any run. Raises InvalidInput as :func:`plan_tasks` does for one entry."""
    get_kind(kind)
    options = _options(max_attempts, timeout_s, memory_limit_mb, None)
    spec = _spec(TaskSpec(args=args if args is not None else {}, label=label), None)
    row = _task_row(spec, kind, options, None)
    request = {"kind": kind, "args": args, "label": label, **options}
    return TaskPlan(row=row, fingerprint=fingerprint(request))


def short_label(args: dict[str, Any]) -> str | None:
    """A few words for a tile: a one-key args' text (a path's last part), else k=v pairs."""
    if not args:
        return None
    value = next(iter(args.values()))
    if len(args) == 1 and isinstance(value, str) and value.strip():
        text = value.rstrip("/").rsplit("/", 1)[-1] or value
    else:
        text = ", ".join(f"{k}={v if isinstance(v, str) else _short_json(v)}" for k, v in args.items())
    return text if len(text) <= LABEL_FROM_ARGS_CHARS else text[:LABEL_FROM_ARGS_CHARS - 1] + "…"


def _short_json(value: Any) -> str:
    # An int's JSON is its str(), without json.dumps' cost (a fifth of planning 100,000 tasks).
    return str(value) if type(value) is int else json.dumps(value, separators=(",", ":"))


# -- checks --------------------------------------------------------------------------------

def _where(index: str | None) -> str:
    return f"{index}: " if index is not None else ""


def _spec(entry: Any, index: str | None) -> TaskSpec:
    if isinstance(entry, TaskSpec):
        return entry
    if not isinstance(entry, dict):
        raise InvalidInput(f"{_where(index)}a task must be a JSON object (its args, or a spec with \"args\"), "
                           f"got {type(entry).__name__}")
    if "args" not in entry:
        return TaskSpec(args=entry)
    unknown = sorted(set(entry) - SPEC_KEYS)
    if unknown:
        raise InvalidInput(f"{_where(index)}unknown field {unknown[0]!r} beside \"args\"; a spec takes "
                           f"{', '.join(sorted(SPEC_KEYS))} (put the task's own values inside args)")
    return TaskSpec(**entry)


def _task_row(spec: TaskSpec, kind: str, options: dict[str, Any], index: str | None) -> dict[str, Any]:
    where = _where(index)
    if not isinstance(spec.args, dict):
        raise InvalidInput(f"{where}args must be a JSON object of named values, got {type(spec.args).__name__}")
    try:
        dumped = json.dumps(spec.args, allow_nan=False)  # ASCII: any NUL or surrogate in it is escaped
        size = len(dumped)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{where}args cannot be stored as JSON: {exc}") from None
    if size > MAX_ARGS_BYTES:
        raise InvalidInput(f"{where}args are {size:,} bytes of JSON; one task's args may be at most "
                           f"{MAX_ARGS_BYTES:,} (keep a reference, a path or a key, rather than the data)")
    if spec.kind is not None and not isinstance(spec.kind, str):
        raise InvalidInput(f"{where}kind must be text")
    label = spec.label
    if label is not None and (not isinstance(label, str) or len(label) > MAX_LABEL_CHARS):
        raise InvalidInput(f"{where}label must be text of at most {MAX_LABEL_CHARS} characters")
    row_options = _row_options(options)
    try:
        if "\\u0000" in dumped or "\\ud" in dumped:  # else no string in the args can be unstorable
            check_json_text(spec.args, "args")
        check_text(label, "label")
        if spec.max_attempts is not None:
            _check_attempts(spec.max_attempts)
            row_options["max_attempts"] = spec.max_attempts
        if spec.timeout_s is not None:
            _check_timeout(spec.timeout_s)
            row_options["timeout_s"] = float(spec.timeout_s)
        if spec.memory_limit_mb is not None:
            check_memory_mb(spec.memory_limit_mb)
            row_options["memory_limit_mb"] = spec.memory_limit_mb
    except InvalidInput as exc:
        raise InvalidInput(f"{where}{exc}") from None
    label = (label.strip() or None) if label else short_label(spec.args)
    return {"kind": kind, "args": dict(spec.args), "label": label, **row_options}


def _options(max_attempts: int, timeout_s: float | None, memory_limit_mb: int | None,
             on_complete: str | None) -> dict[str, Any]:
    _check_attempts(max_attempts)
    _check_timeout(timeout_s)
    if memory_limit_mb is not None:
        check_memory_mb(memory_limit_mb)
    if on_complete is not None:
        get_kind(on_complete)
    return {"max_attempts": max_attempts, "timeout_s": timeout_s, "memory_limit_mb": memory_limit_mb,
            "on_complete": on_complete}


def _row_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: options[k] for k in ("max_attempts", "timeout_s", "memory_limit_mb")}


def _name(name: str | None) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
        raise InvalidInput(f"a run's name must be text of at most {MAX_NAME_CHARS} characters")
    check_text(name, "name")
    return name.strip() or None


def _check_attempts(max_attempts: Any) -> None:
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or not 1 <= max_attempts <= 100:
        raise InvalidInput(f"max_attempts must be a whole number from 1 to 100, got {max_attempts!r}")


def _check_timeout(timeout_s: Any) -> None:
    if timeout_s is None:
        return
    number = isinstance(timeout_s, (int, float)) and not isinstance(timeout_s, bool)
    if not number or not math.isfinite(timeout_s) or timeout_s <= 0:
        raise InvalidInput(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
