"""``gen_task``: the two fakes of the classic task-manager exercise.

``gen_task(value)`` returns, 50/50 at random, either

* a **blocking** fake whose ``run()`` sleeps a random whole number of seconds in [1, 99],
  then returns ``2 * value``; or
* a **polling** fake whose ``run()`` notes the time and returns, and whose
  ``check_output()`` returns ``None`` until its random wait in [1, 99] s has passed, then
  ``2 * value``.

A run's ``time_scale`` multiplies the durations (0.01 turns 99 s into 0.99 s). The polling
fake checkpoints its handle (when it started, how long it waits), so after a crash the next
attempt resumes polling the same work instead of starting it again.
"""

from __future__ import annotations

import random
import time
from typing import Any

from service.errors import InvalidInput
from service.task_process.protocol import TaskContext, register

SHAPES = ("blocking", "polling", "random")


class BlockingFake:
    def __init__(self, value: int, seconds: float, ctx: TaskContext | None = None) -> None:
        self.value, self.seconds, self.ctx = value, seconds, ctx

    def run(self) -> int:
        if self.ctx is None:
            time.sleep(self.seconds)
            return 2 * self.value
        # It knows its wait, so it says how far along it is: in 1 % steps, at most 0.5 s apart.
        step = min(0.5, self.seconds / 100) or self.seconds
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < self.seconds:
            self.ctx.progress(elapsed / self.seconds)
            if self.ctx.wait(min(step, self.seconds - elapsed)):
                raise InterruptedError("stopped by the supervisor")
        self.ctx.progress(1.0)
        return 2 * self.value


class PollingFake:
    def __init__(self, value: int, seconds: float, ctx: TaskContext | None = None) -> None:
        self.value, self.seconds, self.ctx = value, seconds, ctx
        self.started_at: float | None = None
        saved = ctx.saved if ctx is not None else None
        if isinstance(saved, dict) and "started_at" in saved:
            # A previous attempt started the work: keep polling that, do not start again.
            self.started_at = float(saved["started_at"])
            self.seconds = float(saved["wait_s"])

    def run(self) -> None:
        if self.started_at is None:
            self.started_at = time.time()
            if self.ctx is not None:
                self.ctx.checkpoint({"started_at": self.started_at, "wait_s": self.seconds})

    def check_output(self) -> int | None:
        if self.started_at is None:
            return None
        waited = time.time() - self.started_at
        if self.ctx is not None:
            self.ctx.progress(min(1.0, waited / self.seconds) if self.seconds > 0 else 1.0)
        if waited < self.seconds:
            return None
        return 2 * self.value


def gen_task(
    value: int,
    *,
    rng: random.Random | None = None,
    time_scale: float = 1.0,
    ctx: TaskContext | None = None,
    shape: str = "random",
) -> BlockingFake | PollingFake:
    """The exercise's generator: a blocking or a polling fake, 50/50 unless ``shape`` says which."""
    rng = rng or random.Random()
    coin = rng.random()
    kind: type[BlockingFake] | type[PollingFake]
    if shape == "blocking":
        kind = BlockingFake
    elif shape == "polling":
        kind = PollingFake
    else:
        kind = BlockingFake if coin < 0.5 else PollingFake
    return kind(value, rng.randint(1, 99) * time_scale, ctx)


def validate(params: dict[str, Any]) -> dict[str, Any]:
    from service.task_process.kinds import models  # pydantic: not in the processes that run tasks

    return models.validate_gen_task(params)


def _shape(value: Any) -> str:
    if value not in SHAPES:
        raise InvalidInput(f"shape must be one of {', '.join(SHAPES)}, got {value!r}")
    return str(value)


def args_for(params: dict[str, Any], position: int) -> dict[str, Any]:
    return {**params, "position": position, "value": position}


@register("gen_task", description="the exercise's fakes: blocking or polling (shape), 1-99 s, returns 2*value",
          params="service.task_process.kinds.models:GenTaskParams", validate=validate, args_for=args_for)
def build(args: dict[str, Any], ctx: TaskContext) -> BlockingFake | PollingFake:
    if "value" not in args:
        raise InvalidInput('gen_task needs a "value" (a whole number) in its args, like {"value": 21}')
    rng = random.Random(f"{args.get('seed', 0)}:{args.get('position', ctx.task_id)}")
    return gen_task(int(args["value"]), rng=rng, time_scale=float(args.get("time_scale", 1.0)), ctx=ctx,
                    shape=_shape(args.get("shape", "random")))
