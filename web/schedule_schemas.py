"""The schedules API's requests and answers as pydantic models (see :mod:`web.schemas`).

A request's shape is checked here (types, ranges, the policies' names); what JSON Schema
cannot say (an expression that never fires, a zone this machine does not know, one of ``task``
and ``run``) is checked by :func:`service.faces.schedules.plan_schedule`, which names the field.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le, MaxLen, MinLen
from pydantic import BaseModel, Field, create_model

from service.cron import MAX_EXPRESSION_CHARS
from service.faces.schedules import DEFAULT_CATCH_UP_MAX, DEFAULT_GRACE_S, MAX_CATCH_UP, MAX_GRACE_S
from service.faces.schedules import MAX_NAME_CHARS as MAX_SCHEDULE_NAME_CHARS
from service.task_process.kinds.params import Finite
from service.validation import Integral
from web import schemas
from web.http import MAX_ID

CatchUp = Literal["none", "latest", "all"]
OverlapPolicy = Literal["skip", "allow", "queue"]
Outcome = Literal["fired", "queued", "skipped", "missed", "failed"]
ScheduleName = Annotated[str, MinLen(1), MaxLen(MAX_SCHEDULE_NAME_CHARS)]
CatchUpMax = Annotated[int, Ge(1), Le(MAX_CATCH_UP), Integral]
Grace = Annotated[float, Finite, Gt(0), Le(MAX_GRACE_S)]


@functools.cache
def request_model(catalog: schemas.Catalog) -> type[BaseModel]:
    """The body of ``POST /api/schedules`` for the kinds of ``catalog``."""
    kind: Any = Literal[catalog.kind_names]  # type: ignore[valid-type]
    task: Any = create_model(  # type: ignore[call-overload]
        "ScheduleTask", __base__=schemas.Request, __doc__="One task of a kind for each slot.",
        kind=(kind, Field(description="a registered task kind")),
        args=(dict[str, Any], Field(default_factory=dict, description="its JSON arguments")),
        label=(schemas.Label | None, Field(None, description="what people call it")),
        max_attempts=(schemas.Attempts, Field(3, description="attempts charged before it fails")),
        timeout_s=(schemas.Timeout | None, Field(None, description="seconds one attempt may run")),
        memory_limit_mb=(schemas.MemoryMb | None, Field(None, description="of its process, in MiB")))
    run: Any = create_model(  # type: ignore[call-overload]
        "ScheduleRun", __base__=schemas.Request,
        __doc__="A whole run for each slot: tasks (a list of their args) or count (a simulation), one of them.",
        kind=(kind, Field(description="the kind of its tasks")),
        tasks=(Annotated[list[dict[str, Any]], MinLen(1), MaxLen(10_000)] | None,  # type: ignore[valid-type]
               Field(None, description="each task's args, or a spec with args and its own options")),
        count=(schemas.TaskCount | None, Field(None, description="how many tasks to simulate")),
        params=(dict[str, Any] | None, Field(None, description="a simulation's parameters")),
        name=(schemas.Name | None, Field(None, description="what people call each run")),
        max_attempts=(schemas.Attempts, Field(3, description="attempts charged before a task fails")),
        timeout_s=(schemas.Timeout | None, Field(None, description="seconds one attempt may run")),
        memory_limit_mb=(schemas.MemoryMb | None, Field(None, description="of each task's process, in MiB")),
        on_complete=(kind | None, Field(None, description="a kind run once when each run completes")))
    return create_model(  # type: ignore[call-overload,no-any-return]
        "ScheduleRequest", __base__=schemas.Request,
        __doc__="A schedule: each slot of a cron expression in a zone starts a task or a run (one of them).",
        name=(ScheduleName, Field(description="unique; the path may name a schedule by it")),
        cron=(Annotated[str, MinLen(1), MaxLen(MAX_EXPRESSION_CHARS)], Field(
            description="five fields (minute hour day month weekday), six with seconds first, or @hourly, "
                        "@daily, @weekly, @monthly, @yearly; one that never fires is refused (422)")),
        timezone=(str, Field("UTC", description="an IANA zone (Europe/Berlin); the slots are its wall-clock "
                                                "times; one this machine does not know is refused (422)")),
        task=(task | None, Field(None, description="one task per slot (not beside run)")),
        run=(run | None, Field(None, description="one run per slot (not beside task)")),
        catch_up=(CatchUp, Field("latest", description="slots missed while nothing ran: none (record them), "
                                                       "latest (start the latest), all (each, up to catch_up_max)")),
        catch_up_max=(CatchUpMax, Field(DEFAULT_CATCH_UP_MAX, description="missed slots started at most (all)")),
        overlap=(OverlapPolicy, Field("skip", description="a slot while the previous fire's work runs: skip it, "
                                                          "allow it beside, or queue it until that ends")),
        grace_s=(Grace, Field(DEFAULT_GRACE_S, description="a slot found later than this was missed")))


class Fire(BaseModel):
    id: int
    schedule_id: int
    slot_at: datetime | None = Field(description="the slot it stands for (UTC); null: fired by hand")
    slots: int = Field(description="slots this row stands for (a missed span may be many)")
    last_slot_at: datetime | None = Field(description="the last slot of a missed span")
    outcome: Outcome
    catch_up: bool = Field(description="started late, for a slot missed while nothing ran")
    reason: str | None
    fired_at: datetime
    run_id: int | None
    task_id: int | None
    status: str | None = Field(description="its run's or task's status now")
    url: str | None = Field(description="the page of what it started")


class Schedule(BaseModel):
    id: int
    name: str
    cron: str
    timezone: str
    description: str = Field(description="the expression in words, with its zone")
    target: Literal["task", "run"]
    kind: str
    starts: dict[str, Any] = Field(description="what each slot starts: a task's kind, args and options, or a "
                                               "run's kind, total, params and name")
    catch_up: CatchUp
    catch_up_max: int
    overlap: OverlapPolicy
    grace_s: float
    paused: bool
    origin: str = Field(description="api, or code (defined with tenure.schedule)")
    next_slot_at: datetime | None
    upcoming: list[datetime] = Field(description="the next fire times (UTC); none while paused")
    waiting: bool = Field(description="a queued fire waits for the previous one's work to end")
    created_at: datetime
    updated_at: datetime
    fires: list[Fire] = Field(description="the latest fires, newest first")
    url: str = Field(description="its page")


class ScheduleList(BaseModel):
    schedules: list[Schedule]


class FireList(BaseModel):
    fires: list[Fire]


class FiredNow(BaseModel):
    outcome: Outcome
    run_id: int | None
    task_id: int | None
    url: str | None = Field(description="the page of what it started")
    schedule: Schedule


class Deleted(BaseModel):
    deleted: str


class FirePage(BaseModel):
    """Which fires to answer: newest first, ``before`` an id to page back."""

    limit: Annotated[int, Ge(1), Le(schemas.MAX_PAGE)] = Field(50, description="how many to answer")
    before: Annotated[int, Ge(0), Le(MAX_ID)] = Field(0, description="only fires older than this fire id "
                                                                     "(0: from the newest)")


ANSWERS: tuple[type[BaseModel], ...] = (Schedule, ScheduleList, FireList, FiredNow, Deleted)
