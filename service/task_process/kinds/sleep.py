"""``sleep``: the headline simulation of a long, failure-prone backend task.

Each task's duration is uniform between min_seconds and max_seconds (in either order, as
``random.uniform`` takes them); a ``failure_rate`` share of tasks fail for good part-way
through, and a ``transient_rate`` share of the others fail once part-way and succeed on a
retry. All of it derives from the run's ``seed`` and the task's ``position``, so
a task re-run after a crash behaves the same. Progress is reported as it sleeps and the
elapsed time is checkpointed: an attempt interrupted at 80 % resumes near 80 %.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from service.errors import PermanentError, TransientError
from service.task_process.protocol import TaskContext, register

log = logging.getLogger("tenure.sleep")
STEP_MAX_S = 0.25  # progress is recorded at least this often
FAILURES = (
    "upstream service answered 503 Service Unavailable",
    "input record 17 is malformed",
    "quota exceeded for the nightly batch",
)


class Stopped(Exception):
    """The supervisor asked the attempt to stop (cancelled, timed out, lease lost, shutdown)."""


@dataclass(frozen=True)
class Plan:
    duration_s: float
    fate: str  # ok | fail | transient
    fail_at: float  # fraction of the duration where a failure strikes
    reason: str


def plan(args: dict[str, Any]) -> Plan:
    """What this task will do, from its run's seed and its position alone."""
    rng = random.Random(f"{args['seed']}:{args['position']}")
    duration = rng.uniform(args["min_seconds"], args["max_seconds"])
    fails, stumbles = rng.random(), rng.random()
    fate = "ok"
    if fails < args["failure_rate"]:
        fate = "fail"
    elif stumbles < args["transient_rate"]:
        fate = "transient"
    return Plan(duration, fate, rng.uniform(0.3, 0.9), rng.choice(FAILURES))


def validate(params: dict[str, Any]) -> dict[str, Any]:
    from service.task_process.kinds import models  # pydantic: not in the processes that run tasks

    return models.validate_sleep(params)


class Sleep:
    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.plan = plan(args)
        self.ctx = ctx

    def run(self) -> dict[str, Any]:
        plan, ctx = self.plan, self.ctx
        saved = ctx.saved if isinstance(ctx.saved, dict) else {}
        elapsed = float(saved.get("elapsed_s", 0.0))
        transient_done = bool(saved.get("transient_done", False))
        resumed_at = elapsed
        log.info("working for %.1f s%s", plan.duration_s, f", resuming at {elapsed:.1f} s" if elapsed else "")
        quarter = int(4 * elapsed / plan.duration_s) if plan.duration_s else 4
        step = min(STEP_MAX_S, max(0.005, plan.duration_s / 100))
        t0 = time.monotonic() - elapsed
        while True:
            elapsed = min(time.monotonic() - t0, plan.duration_s)
            struck = plan.fate != "ok" and elapsed >= plan.fail_at * plan.duration_s
            # The error is the same for alike failures (people group by it); how far the task got
            # is in its progress.
            if struck and plan.fate == "fail":
                ctx.progress(elapsed / plan.duration_s)
                log.error("giving up at %.0f%%: %s", 100 * elapsed / plan.duration_s, plan.reason)
                raise PermanentError(plan.reason)
            if struck and plan.fate == "transient" and not transient_done:
                log.warning("connection reset at %.0f%%; saved %.1f s of work", 100 * elapsed / plan.duration_s,
                            elapsed)
                transient_done = True
                ctx.progress(elapsed / plan.duration_s)
                ctx.checkpoint({"elapsed_s": elapsed, "transient_done": True})
                raise TransientError("connection reset while working; a retry resumes")
            ctx.progress(elapsed / plan.duration_s if plan.duration_s else 1.0)
            if plan.duration_s and int(4 * elapsed / plan.duration_s) > quarter:
                quarter = int(4 * elapsed / plan.duration_s)
                log.info("%d%% done", 25 * quarter)
            ctx.checkpoint({"elapsed_s": round(elapsed, 3), "transient_done": transient_done})
            if elapsed >= plan.duration_s:
                break
            if ctx.wait(min(step, plan.duration_s - elapsed)):
                raise Stopped("stopped by the supervisor")
        return {"slept_s": round(plan.duration_s, 3), "resumed_from_s": round(resumed_at, 3)}


@register("sleep", description="sleeps a seeded random duration; fails or retries at seeded rates",
          params="service.task_process.kinds.models:SleepParams", validate=validate)
def build(args: dict[str, Any], ctx: TaskContext) -> Sleep:
    return Sleep(args, ctx)
