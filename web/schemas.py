"""The HTTP API's requests and answers as pydantic models: one source for validation and OpenAPI.

Every body the API reads is validated by a model here, and ``/openapi.json`` is generated from
the same models (:mod:`web.openapi`), so a field added here is checked and described at once.
Requests name task kinds, and a simulation takes its kind's own parameters (the kind's
``params`` model), so the request models are built from the registry of kinds
(:func:`catalog`), once per set of kinds.

A run request is one of:

* a **simulation** of a kind: ``tasks`` a number, beside that kind's parameters (one variant
  per kind, told apart by ``kind``; ``sleep`` when it is absent);
* **explicit tasks**: ``tasks`` a list, each entry the task's args (an object without an
  ``args`` key) or a spec (``args`` and options of its own).

JSON is read strictly (no ``"5"`` for 5, no ``true`` for 1), except that a whole number may be
written ``30762.0``, as JSON Schema's ``integer`` allows.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from annotated_types import Ge, Gt, Le, MaxLen, MinLen
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, WithJsonSchema, create_model

from service.config import MAX_MEMORY_LIMIT_MB, MIN_MEMORY_LIMIT_MB, QUEUE_NAME
from service.faces.flow import MAX_KEY_CHARS, MAX_LIMIT, MAX_PRIORITY
from service.faces.plans import MAX_LABEL_CHARS, MAX_NAME_CHARS, MAX_START_AHEAD, MAX_TASKS_PER_RUN
from service.task_process.kinds.params import Finite
from service.task_process.protocol import Kind, kinds
from service.validation import Integral

MAX_INTEGER = 2**63 - 1
DEFAULT_KIND = "sleep"
TAGS = frozenset({"~tasks", "~spec", "~args"})  # union tags: left out of error locations

TaskCount = Annotated[int, Ge(1), Le(MAX_TASKS_PER_RUN), Integral]
Attempts = Annotated[int, Ge(1), Le(100), Integral]
MemoryMb = Annotated[int, Ge(MIN_MEMORY_LIMIT_MB), Le(MAX_MEMORY_LIMIT_MB), Integral]
Timeout = Annotated[float, Finite, Gt(0)]
Name = Annotated[str, MaxLen(MAX_NAME_CHARS)]
Label = Annotated[str, MaxLen(MAX_LABEL_CHARS)]
Args = Annotated[dict[str, Any], Field(description="the task's own JSON arguments")]
START = ("start_at", "delay_s")  # when submitted work may start: one or neither
StartAt = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
Delay = Annotated[float, Finite, Ge(0), Le(MAX_START_AHEAD.total_seconds())]
FLOW = ("queue", "priority", "key", "key_limit")  # where submitted work waits, and what limits it
# A queue's name and a key are checked by service.faces.flow (its sentences name the field); the
# description states the same rules.
QueueName = Annotated[str, WithJsonSchema({"type": "string", "pattern": QUEUE_NAME.pattern})]
LIMIT_KEY_PATTERN = r"\S"  # not blank
LimitKey = Annotated[str, WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS,
                                          "pattern": LIMIT_KEY_PATTERN})]
Priority = Annotated[int, Ge(-MAX_PRIORITY), Le(MAX_PRIORITY), Integral]
Limit = Annotated[int, Ge(1), Le(MAX_LIMIT), Integral]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _options(kind_name: Any) -> dict[str, Any]:
    """The fields every run request has, whatever its shape."""
    return {
        "name": (Name | None, Field(None, description="what people call the run")),
        "max_attempts": (Attempts, Field(3, description="attempts charged before a task fails")),
        "timeout_s": (Timeout | None, Field(None, description="seconds one attempt may run (default 3600)")),
        "memory_limit_mb": (MemoryMb | None, Field(
            None, description="of each task's process, in MiB (default: the worker's --memory-limit)")),
        "on_complete": (kind_name | None, Field(None, description="a kind run once when the run completes")),
        **_start("its tasks"), **_flow("its tasks"),
    }


def _start(what: str) -> dict[str, Any]:
    """start_at or delay_s: when the work may start (neither: at once)."""
    return {
        "start_at": (StartAt | None, Field(None, description=f"hold {what} back until this time: RFC 3339 with its "
                                                             "offset (2026-12-03T14:05:00+01:00), at most a year "
                                                             "ahead; not beside delay_s")),
        "delay_s": (Delay | None, Field(None, description=f"hold {what} back this many seconds (at most a year); "
                                                          "not beside start_at")),
    }


def _flow(what: str) -> dict[str, Any]:
    """queue, priority, key, key_limit: where the work waits and what limits it (service.faces.flow)."""
    return {
        "queue": (QueueName | None, Field(None, description=f"the queue {what} wait in (default: the kind's, else "
                                                            "default); once a queue is declared, only declared "
                                                            "ones take work (422)")),
        "priority": (Priority | None, Field(None, description="higher starts first within its queue (default: "
                                                              "the kind's, else 0)")),
        "key": (LimitKey | None, Field(None, description=f"a concurrency key {what} count against (default: one "
                                                         "the kind derives from args, if any)")),
        "key_limit": (Limit | None, Field(None, description="at most this many attempts with that key run at once "
                                                            "on every host (needs key)")),
    }


def _task_options(kind_name: Any) -> dict[str, Any]:
    return {
        "kind": (kind_name | None, Field(None, description="its kind (default: the run's)")),
        "label": (Label | None, Field(None, description="what its tile says (default: a short form of its args)")),
        "max_attempts": (Attempts | None, Field(None, description="default: the run's")),
        "timeout_s": (Timeout | None, Field(None, description="default: the run's")),
        "memory_limit_mb": (MemoryMb | None, Field(None, description="default: the run's")),
    }


def _model_name(kind: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", kind) if part) or "Unnamed"


def _simulation(kind: Kind, kind_name: Any) -> type[BaseModel]:
    own: dict[str, Any]
    if kind.params is not None:
        own = {name: (info.annotation, info) for name, info in kind.params.model_fields.items()}
    else:
        own = {name: (Any, Field(None)) for name in sorted(kind.takes)}
    kind_field: Any = (Literal[kind.name], Field(kind.name) if kind.name == DEFAULT_KIND else Field())
    return create_model(  # type: ignore[call-overload,no-any-return]
        f"{_model_name(kind.name)}Simulation", __base__=Request,
        __doc__=f"A simulation: {kind.name} builds each task's args from these parameters. {kind.description}",
        tasks=(TaskCount, Field(description=f"how many tasks to simulate (1 to {MAX_TASKS_PER_RUN:,}); required, "
                                            "as starting hours of work is never a default")),
        kind=kind_field, **own, **_options(kind_name),
    )


def _entry_shape(value: Any) -> str:
    return "~spec" if isinstance(value, dict) and "args" in value else "~args"


PlainArgs = Annotated[dict[str, Any], WithJsonSchema({
    "type": "object", "not": {"required": ["args"]},
    "description": "the task's args themselves (an object without an \"args\" key)"})]


def _run_shape(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("tasks"), list):
        return "~tasks"
    kind = value.get("kind", DEFAULT_KIND)
    return f"~{kind}" if isinstance(kind, str) else None


@dataclass(frozen=True, eq=False)
class Catalog:
    """The request models for one set of registered kinds."""

    kind_names: tuple[str, ...]
    simulations: dict[str, type[BaseModel]]
    explicit: type[BaseModel]
    spec: type[BaseModel]
    run: TypeAdapter[Any]  # the run request: a simulation of some kind, or explicit tasks
    task: type[BaseModel]  # one task outside any run

    @property
    def hidden(self) -> frozenset[str]:
        return TAGS | {f"~{name}" for name in self.simulations}

    @property
    def owners(self) -> dict[str, tuple[str, list[str]]]:
        """What takes each simulation's fields, and their names: for "sleep does not take x"."""
        return {f"~{name}": (f"a run of {name}", list(model.model_fields)) for name, model in self.simulations.items()}


@functools.cache
def _catalog(registry: tuple[tuple[str, int], ...]) -> Catalog:
    known = {k.name: k for k in kinds()}
    names = tuple(name for name, _ in registry)
    kind_name: Any = Literal[names]  # type: ignore[valid-type]
    spec: Any = create_model(  # type: ignore[call-overload]
        "TaskSpec", __base__=Request, __doc__="One task of a run, with options of its own.",
        args=(Args, Field()), **_task_options(kind_name))
    entry = Annotated[Union[Annotated[spec, Tag("~spec")], Annotated[PlainArgs, Tag("~args")]],  # noqa: UP007
                      Discriminator(_entry_shape)]
    explicit = create_model(  # type: ignore[call-overload]
        "TasksRun", __base__=Request, __doc__="A run of your own tasks, each with its own args.",
        tasks=(Annotated[list[entry], MinLen(1), MaxLen(MAX_TASKS_PER_RUN)],  # type: ignore[valid-type]
               Field(description=f"the run's tasks (1 to {MAX_TASKS_PER_RUN:,})")),
        kind=(kind_name, Field(DEFAULT_KIND, description="the kind of every task that names none")),
        **_options(kind_name))
    simulations = {name: _simulation(known[name], kind_name) for name in names}
    choices = [Annotated[explicit, Tag("~tasks")],
               *(Annotated[model, Tag(f"~{name}")] for name, model in simulations.items())]
    union: Any = Union[tuple(choices)]  # noqa: UP007
    run: TypeAdapter[Any] = TypeAdapter(Annotated[union, Discriminator(_run_shape)])
    task = create_model(  # type: ignore[call-overload]
        "TaskRequest", __base__=Request, __doc__="One task outside any run.",
        kind=(kind_name, Field(description="a registered task kind")),
        args=(dict[str, Any], Field(default_factory=dict, description="the task's JSON arguments")),
        label=(Label | None, Field(None, description="what people call it (default: a short form of its args)")),
        max_attempts=(Attempts, Field(3, description="attempts charged before it fails")),
        timeout_s=(Timeout | None, Field(None, description="seconds one attempt may run (default 3600)")),
        memory_limit_mb=(MemoryMb | None, Field(None, description="of its process, in MiB")), **_start("it"),
        **_flow("it"), unique_key=(LimitKey | None, Field(
            None, description="while a task with this key is queued, retrying or running, none is queued: the "
                              "answer is that task (200, unique true)")))
    return Catalog(kind_names=names, simulations=simulations, explicit=explicit, spec=spec, run=run, task=task)


def catalog() -> Catalog:
    """The request models for the kinds registered now (built once per set of kinds)."""
    return _catalog(tuple((k.name, id(k)) for k in kinds()))


# -- parameters -----------------------------------------------------------------------------

MAX_PAGE = 100
MAX_OFFSET = 10**9
DEFAULT_TASK_SLICE = 1000
MAX_TASK_SLICE = 10_000
KEY_PATTERN = r"^[!-~]([ -~]{0,188}[!-~])?$"  # visible ASCII, inner spaces: what survives HTTP intact


class Page(BaseModel):
    """The query of a listing (read from text, so ``?limit=5`` is the number 5)."""

    model_config = ConfigDict(extra="ignore")

    limit: Annotated[int, Ge(1), Le(MAX_PAGE)] = Field(20, description="how many to answer")
    offset: Annotated[int, Ge(0), Le(MAX_OFFSET)] = Field(0, description="how many to skip, newest first")


class TaskSlice(BaseModel):
    """Which of a run's tasks to answer with it, in position order (a run may have 100,000)."""

    model_config = ConfigDict(extra="ignore")

    limit: Annotated[int, Ge(1), Le(MAX_TASK_SLICE)] = Field(
        DEFAULT_TASK_SLICE, description=f"how many of its tasks to answer (default {DEFAULT_TASK_SLICE:,})")
    offset: Annotated[int, Ge(0), Le(MAX_OFFSET)] = Field(0, description="how many of its tasks to skip, by position")


IdempotencyKey = Annotated[str, Field(
    pattern=KEY_PATTERN, min_length=1, max_length=190,
    description="the same key with the same body returns what the first request made (200); with another "
                "body, 409. 1 to 190 visible ASCII characters (spaces inside)")]
RowId = Annotated[int, Ge(0), Le(MAX_INTEGER)]


# -- answers ---------------------------------------------------------------------------------

Status = Literal["queued", "running", "retrying", "succeeded", "failed", "cancelled"]
Outcome = Literal["running", "succeeded", "failed", "timed_out", "crashed", "lost", "released", "cancelled"]


class Counts(BaseModel):
    queued: int
    running: int
    retrying: int
    succeeded: int
    failed: int
    cancelled: int


class Run(BaseModel):
    id: int
    name: str | None
    status: Literal["running", "completed", "cancelled", "deleting"]  # deleting: retention is deleting it
    kind: str
    total: int
    params: dict[str, Any] = Field(description="a simulation's parameters as completed ({} for explicit tasks)")
    counts: Counts
    created_at: datetime
    finished_at: datetime | None
    on_complete: str | None
    hook_task_id: int | None
    scheduled_for: datetime | None = Field(description="the start asked for (UTC); null: at once")
    queue: str = Field(description="where its tasks wait")
    paused: bool = Field(description="none of its tasks starts until it is resumed")
    paused_at: datetime | None
    url: str = Field(description="its page")


class Task(BaseModel):
    id: int
    run_id: int | None
    position: int = Field(description="0-based, as in SQL; pages number tiles from 1")
    kind: str
    label: str | None
    args: dict[str, Any]
    status: Status
    attempts: int = Field(description="times claimed")
    max_attempts: int
    charged: int = Field(description="attempts charged against max_attempts")
    lost: int = Field(description="attempts lost through no fault of the task (never charged)")
    progress: float = Field(ge=0, le=1)
    result: Any = None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    scheduled_for: datetime | None = Field(description="the start asked for (UTC); null: at once")
    queue: str
    priority: int = Field(description="higher starts first within its queue")
    key: str | None = Field(description="the concurrency key it counts against")
    unique_key: str | None
    url: str = Field(description="its page")


class Attempt(BaseModel):
    attempt: int
    outcome: Outcome
    charged: bool
    error: str | None
    supervisor_id: int | None
    started_at: datetime
    finished_at: datetime | None
    logs: str | None = Field(description="the last 64 KiB of what it wrote (logging, stdout, stderr)")
    logs_cut: int = Field(description="characters of output dropped before those")
    traceback: str | None


class TaskDetail(Task):
    history: list[Attempt] = Field(description="every attempt so far, with its outcome and output")


class TaskFound(TaskDetail):
    """A task submitted earlier: by this Idempotency-Key and body, or holding this unique_key."""

    unique: bool = Field(False, description="true: an active task holds the unique_key asked for; this is that "
                                            "task, and nothing new was queued")
    message: str | None = Field(None, description="with unique: which task, and that it is already queued")


class RunWithTasks(Run):
    tasks: list[Task] = Field(description="its tasks in position order, from ?offset= (default 0), at most "
                                          "?limit= of them (default 1,000); total says how many it has")


class RunPage(BaseModel):
    runs: list[Run]
    total: int
    limit: int
    offset: int


class TaskPage(BaseModel):
    tasks: list[Task]
    total: int
    limit: int
    offset: int


class TaskResult(BaseModel):
    id: int
    status: Status
    progress: float = Field(ge=0, le=1)
    result: Any = None
    error: str | None = None


class Cancelled(BaseModel):
    cancelled: int
    run: Run


class Retried(BaseModel):
    queued: int
    run: Run


class Error(BaseModel):
    error: str


class Health(BaseModel):
    status: str
    database: str
    supervisor: str


ANSWERS: tuple[type[BaseModel], ...] = (Run, RunWithTasks, RunPage, Task, TaskDetail, TaskFound, TaskPage,
                                        TaskResult, Cancelled, Retried, Error, Health)
