"""Flow options of a submission, checked before anything is written: one set of rules for every face.

* ``queue``: where the work waits (default: its kind's queue, else ``default``);
* ``priority``: higher starts first within its queue (-1000 to 1000; default: the kind's, else 0);
* ``key`` and ``key_limit``: a concurrency key its tasks count against, and at most how many
  attempts with that key run at once across every host (a kind may derive the key from args);
* ``unique_key`` (single tasks): while a task holding that key is queued, retrying or running,
  no second one is created; the answer names the first.

Rates (``10/s``, ``100/m``, ``5/30s``) and limits of queues and keys are parsed here too.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from service.config import check_queue_name
from service.errors import InvalidInput
from service.faces.plans import P, TaskPlan, fingerprint
from service.storage.submit import Placement
from service.task_process.protocol import get_kind
from service.text import check_text

MAX_PRIORITY = 1000
MAX_KEY_CHARS = 200
MAX_LIMIT = 100_000
_RATE = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(\d+(?:\.\d+)?)?\s*(ms|s|sec|second|m|min|minute|h|hour)s?\s*$", re.I)
_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0,
          "hour": 3600.0}


@dataclass(frozen=True)
class FlowOptions:
    queue: str | None = None
    priority: int | None = None
    key: str | None = None
    key_limit: int | None = None
    unique_key: str | None = None


def plan_flow(queue: Any = None, priority: Any = None, key: Any = None, key_limit: Any = None,
              unique_key: Any = None) -> FlowOptions:
    """Checked flow options (None: not given).

    Raises:
        InvalidInput: a bad queue name, a priority that is not a whole number in range, a key that
            is not short text, a limit below 1, or a limit without a key.
    """
    if queue is not None:
        check_queue_name(queue, "queue")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)
                                 or not -MAX_PRIORITY <= priority <= MAX_PRIORITY):
        raise InvalidInput(f"priority must be a whole number from {-MAX_PRIORITY} to {MAX_PRIORITY} (higher starts "
                           f"first), got {priority!r}")
    for name, value in (("key", key), ("unique_key", unique_key)):
        if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > MAX_KEY_CHARS):
            raise InvalidInput(f"{name} must be text of 1 to {MAX_KEY_CHARS} characters, got {value!r}")
        check_text(value, name)
    if key_limit is not None:
        check_limit(key_limit, "key_limit")
        if key is None:
            raise InvalidInput("key_limit needs a key: the limit is of running tasks that carry that key")
    return FlowOptions(queue, priority, key, key_limit, unique_key)


def check_limit(value: Any, what: str) -> int:
    """A limit of running attempts: a whole number from 1. Raises InvalidInput."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise InvalidInput(f"{what} must be a whole number from 1 to {MAX_LIMIT:,} (the most running at once), "
                           f"got {value!r}")
    return value


MAX_AGE_S = 366 * 86400.0


def check_age(value: Any, what: str = "age_s") -> float:
    """How long a task may wait before it goes ahead of higher priorities: seconds, above 0, at most
    a year. Raises InvalidInput."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not 0 < value <= MAX_AGE_S:
        raise InvalidInput(f"{what} must be a number of seconds above 0 and at most a year (31,622,400), "
                           f"got {value!r}")
    return float(value)


def parse_rate(value: Any, what: str = "rate") -> tuple[int, float]:
    """``10/s``, ``100/m``, ``5/30s``, ``1 per 2 minutes`` (or a pair (count, period in seconds)) as
    (starts, period in seconds).

    Raises:
        InvalidInput: not a rate, a count below 1, or no period.
    """
    if isinstance(value, (tuple, list)) and len(value) == 2:
        count, period = value
    elif isinstance(value, str):
        found = _RATE.match(value)
        if found is None:
            raise InvalidInput(f"{what} {value!r} is not a rate; write it as starts per period, like 10/s, 100/m "
                               "or 5/30s (a rate needs its period)")
        count = int(found.group(1))
        period = float(found.group(2) or 1) * _UNITS[found.group(3).lower()]
    else:
        raise InvalidInput(f"{what} must be a rate like 10/s, got {value!r}")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_LIMIT:
        raise InvalidInput(f"{what}: the number of starts must be a whole number from 1 to {MAX_LIMIT:,}, "
                           f"got {count!r}")
    number = isinstance(period, (int, float)) and not isinstance(period, bool)
    if not number or not math.isfinite(period) or not 0.001 <= period <= 86400 * 7:
        raise InvalidInput(f"{what}: the period must be from 1 ms to 7 days, got {period!r}")
    return count, float(period)


def with_flow(plan: P, flow: FlowOptions | None) -> P:
    """``plan`` placed by ``flow`` and its kinds' defaults; the idempotency fingerprint covers the
    options as asked."""
    flow = flow or FlowOptions()
    if isinstance(plan, TaskPlan):
        kind = get_kind(plan.row["kind"])
        keyed = flow.key if flow.key is not None else _key_of(kind, plan.row["args"])
        plan.row.update(priority=_priority(flow, kind), limit_key=keyed, unique_key=flow.unique_key)
        plan.placement = Placement(queue=flow.queue or kind.queue or "default",
                                   key_limits=_limits(flow, kind, {keyed}))
    else:
        run_kind = get_kind(plan.kind)
        keys = set()
        for row in plan.rows:
            kind = run_kind if row["kind"] == plan.kind else get_kind(row["kind"])
            row["priority"] = _priority(flow, kind)
            row["limit_key"] = flow.key if flow.key is not None else _key_of(kind, row["args"])
            keys.add(row["limit_key"])
        plan.placement = Placement(queue=flow.queue or run_kind.queue or "default",
                                   key_limits=_limits(flow, run_kind, keys))
    if flow != FlowOptions():
        plan.fingerprint = fingerprint([plan.fingerprint, vars(flow)])
    return plan


def _priority(flow: FlowOptions, kind: Any) -> int:
    return flow.priority if flow.priority is not None else (kind.priority or 0)


def _key_of(kind: Any, args: dict[str, Any]) -> str | None:
    if kind.key is None:
        return None
    try:
        key = kind.key(args)
    except Exception as exc:  # noqa: BLE001 - the kind's own function, on input a person gave
        raise InvalidInput(f"kind {kind.name!r} could not derive its concurrency key from these args: "
                           f"{type(exc).__name__}: {exc}") from None
    if key is None:
        return None
    plan_flow(key=str(key))
    return str(key)


def _limits(flow: FlowOptions, kind: Any, keys: set[str | None]) -> tuple[tuple[str, int], ...]:
    limit = flow.key_limit if flow.key_limit is not None else kind.key_limit
    if limit is None:
        return ()
    return tuple(sorted((k, limit) for k in keys if k is not None))
