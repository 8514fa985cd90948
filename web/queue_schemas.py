"""Flow control's requests and answers as pydantic models (see :mod:`web.schemas`): queues, keys, paused runs.

A request's shape is checked here (types, ranges); a rate's text (``10/s``) and a name's form
are checked by :mod:`service.faces.flow` and :func:`service.config.check_queue_name`, whose
sentences name the field (422). In a body, a field left out keeps its value and ``null``
removes that limit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from annotated_types import Gt, Le, MaxLen, MinLen
from pydantic import BaseModel, Field, WithJsonSchema

from service.faces.plans import MAX_START_AHEAD
from service.task_process.kinds.params import Finite
from web import schemas

MAX_RATE_CHARS = 40
RATE_WORDS = "starts per period: 10/s, 100/m, 5/30s or 1 per 2 minutes (a rate needs its period; 422 without)"


def _any_case(*words: str) -> str:
    return "(?:" + "|".join("".join(f"[{c.lower()}{c.upper()}]" for c in word) for word in words) + ")"


# service.faces.flow's form of a rate, for the description (JSON Schema has no flag for any case); the
# engine checks it, and its count (1 to 100,000) and period (1 ms to 7 days), in a sentence (422).
RATE_PATTERN = (r"^\s*[0-9]+\s*(?:/|" + _any_case("per") + r")\s*(?:[0-9]+(?:\.[0-9]+)?)?\s*"
                + _any_case("ms", "s", "sec", "second", "m", "min", "minute", "h", "hour") + r"[sS]?\s*$")
Rate = Annotated[str, MinLen(1), MaxLen(MAX_RATE_CHARS),
                 WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_RATE_CHARS,
                                 "pattern": RATE_PATTERN})]
# A task waits at most this long before it goes ahead of higher priorities: a year, as a start may be
# asked for; the claim subtracts it from now, which a much larger figure would take past year 1.
MAX_AGE_S = MAX_START_AHEAD.total_seconds()
Age = Annotated[float, Finite, Gt(0), Le(MAX_AGE_S)]


class QueueRequest(schemas.Request):
    """Declare a queue (made if new) and set its limits. Once any queue is declared, submits to a
    queue that is not are refused (422)."""

    concurrency: schemas.Limit | None = Field(None, description="at most this many of its attempts run at once, "
                                                                "on every host together (null: no limit)")
    rate: Rate | None = Field(None, description=f"at most this many of its attempts start per period: {RATE_WORDS} "
                                                "(null: no limit)")
    age_s: Age | None = Field(None, description="a task due at once that waited this many seconds goes ahead of "
                                                "higher priorities (null: the default, 300)")


class KeyRequest(schemas.Request):
    """Set the limits of a concurrency key: of every attempt, on every host, whose task carries it."""

    concurrency: schemas.Limit | None = Field(None, description="at most this many run at once (null: no limit)")
    rate: Rate | None = Field(None, description=f"{RATE_WORDS} (null: no limit)")


class Queue(BaseModel):
    name: str
    paused: bool = Field(description="no attempt of it starts until it is resumed; what runs finishes")
    paused_at: datetime | None
    concurrency: int | None = Field(description="most attempts running at once on every host (null: no limit)")
    rate: str | None = Field(description="most starts per period, like 10/s (null: no limit)")
    rate_count: int | None
    rate_period_s: float | None
    age_s: float = Field(description="a task due at once that waited this long goes ahead of higher priorities")
    declared: bool = Field(description="declared (PUT); false: made by the first submit to it")
    waiting: int = Field(description="its tasks queued or retrying, due now or later (its depth)")
    due: int = Field(description="of them, due now")
    running: int = Field(description="its attempts running now")
    oldest_wait_s: float | None = Field(description="how long the longest-waiting task due at once has waited")
    url: str = Field(description="its row on the queues page")


class QueueList(BaseModel):
    queues: list[Queue]


class Key(BaseModel):
    name: str
    concurrency: int | None = Field(description="most attempts with this key running at once (null: no limit)")
    rate: str | None = Field(description="most starts per period, like 10/s (null: no limit)")
    rate_count: int | None
    rate_period_s: float | None
    running: int = Field(description="attempts with this key running now")


class RunPaused(BaseModel):
    changed: bool = Field(description="false: it was already so")
    run: schemas.Run


ANSWERS: tuple[type[BaseModel], ...] = (Queue, QueueList, Key, RunPaused)
