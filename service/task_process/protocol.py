"""The task protocol: what task code sees, and how a kind is registered.

A *kind* is a name bound to a factory that builds a task object from JSON ``args`` and a
:class:`TaskContext`, so any task can be rebuilt from its row after a restart. The task
object is a black box with ``run()`` and, optionally, ``check_output()``:

* a *blocking* task's ``run()`` blocks until done and returns the output;
* a *polling* task's ``run()`` starts the work and returns ``None`` at once; its
  ``check_output()`` returns ``None`` until the output is ready, then the output.

The engine tells them apart only by what ``run()`` returns (see :mod:`service.supervisor.attempt`).
"""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from service.errors import InvalidInput

if TYPE_CHECKING:  # pydantic is imported only where parameters are checked: never in the zygote for built-ins
    from pydantic import BaseModel

MAX_CHECKPOINT_BYTES = 1024 * 1024  # written to the database at every heartbeat that changed it


@runtime_checkable
class Runnable(Protocol):
    def run(self) -> Any: ...


class TaskContext:
    """Handed to task code: report progress, save a checkpoint, notice a stop request.

    ``progress()`` and ``checkpoint()`` only record the values in memory; the supervisor's
    heartbeat writes them, so task code never waits on the database and a busy task cannot
    delay a heartbeat. After a crash the next attempt finds the last saved state in
    :attr:`saved`.
    """

    def __init__(
        self,
        *,
        task_id: int,
        attempt: int,
        run_id: int | None,
        position: int,
        saved: Any = None,
    ) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self.run_id = run_id
        self.position = position
        self.saved = saved
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._progress = 0.0
        self._version = 0

    def progress(self, fraction: float) -> None:
        """Record how far the task is, in [0, 1] (values outside are clamped; NaN is ignored)."""
        value = float(fraction)
        if value != value:
            return
        with self._lock:
            self._progress = min(1.0, max(0.0, value))
            self._version += 1

    def checkpoint(self, state: Any) -> None:
        """Save ``state`` (JSON, at most 1 MiB) so that a later attempt resumes from it.

        Raises:
            TypeError, ValueError: ``state`` cannot be written as JSON (a text in it that is not valid
                Unicode included), or is over 1 MiB.
        """
        size = len(json.dumps(state, allow_nan=False, ensure_ascii=False).encode())  # lone surrogates raise here
        if size > MAX_CHECKPOINT_BYTES:
            raise ValueError(f"a checkpoint of {size} bytes is over the limit of {MAX_CHECKPOINT_BYTES} bytes; "
                             "keep a reference (a path, a key) in it rather than the data")
        with self._lock:
            self.saved = state
            self._version += 1

    @property
    def stopped(self) -> bool:
        """True once the attempt should stop: cancelled, timed out, lease lost or shutting down."""
        return self.stop_event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early on a stop request; True if stopped."""
        return self.stop_event.wait(max(0.0, seconds))

    @property
    def version(self) -> int:
        """How many progress and checkpoint calls it took (read without the lock: a hint)."""
        return self._version

    def snapshot(self) -> tuple[int, float, Any]:
        """(version, progress, saved state): the version changes whenever either is set."""
        with self._lock:
            return self._version, self._progress, self.saved


Factory = Callable[[dict[str, Any], TaskContext], Runnable]


@dataclass(frozen=True)
class Kind:
    """A registered task kind.

    ``params`` is a pydantic model of the run parameters a simulation of it takes (None: it
    takes none, or says nothing of them); ``validate`` checks and completes them before
    anything is written (raising InvalidInput); ``args_for`` turns them into one task's args.
    A model may be registered as ``"module:Name"``: it is imported when first needed (so the
    processes that only run tasks never import pydantic for it).
    """

    name: str
    build: Factory
    description: str = ""
    validate: Callable[[dict[str, Any]], dict[str, Any]] = field(default=lambda p: dict(p))
    args_for: Callable[[dict[str, Any], int], dict[str, Any]] = field(
        default=lambda params, position: {**params, "position": position}
    )
    named: frozenset[str] = frozenset()  # the run parameters it accepts, when it has no model
    model: type[BaseModel] | str | None = None
    # Flow control defaults (see service.faces.flow): its queue, its priority, the concurrency key
    # derived from a task's args, and at most how many with one key run at once.
    queue: str | None = None
    priority: int | None = None
    key: Callable[[dict[str, Any]], str | None] | None = None
    key_limit: int | None = None

    @property
    def params(self) -> type[BaseModel] | None:
        if isinstance(self.model, str):
            object.__setattr__(self, "model", _resolved(self.model))  # once: imported now
        return self.model  # type: ignore[return-value]

    @property
    def takes(self) -> frozenset[str]:
        """The run parameters it accepts (for forms and docs)."""
        model = self.params
        return frozenset(model.model_fields) if model is not None else self.named


_REGISTRY: dict[str, Kind] = {}


def register(
    name: str,
    *,
    description: str = "",
    validate: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    args_for: Callable[[dict[str, Any], int], dict[str, Any]] | None = None,
    takes: frozenset[str] | set[str] = frozenset(),
    params: type[BaseModel] | str | None = None,
    queue: str | None = None,
    priority: int | None = None,
    key: Callable[[dict[str, Any]], str | None] | None = None,
    key_limit: int | None = None,
) -> Callable[[Factory], Factory]:
    """Register a factory under ``name`` (a decorator). Re-registering a name replaces it.

    ``params`` (a pydantic model, or ``"module:Name"`` to import it when first needed) describes and
    checks a simulation's run parameters; without it ``takes`` names them, unchecked. ``queue``,
    ``priority``, ``key`` (args -> a concurrency key, or None) and ``key_limit`` are its tasks' flow
    defaults (a submission may override them).
    """

    def decorate(build: Factory) -> Factory:
        options: dict[str, Any] = {"named": frozenset(takes), "model": params, "queue": queue,
                                   "priority": priority, "key": key, "key_limit": key_limit}
        if validate is not None:
            options["validate"] = validate
        elif params is not None:
            options["validate"] = lambda values: _checked(params, name, values)
        if args_for is not None:
            options["args_for"] = args_for
        _REGISTRY[name] = Kind(name=name, build=build, description=description, **options)
        return build

    return decorate


def _resolved(model: type[BaseModel] | str) -> type[BaseModel]:
    if isinstance(model, str):
        module, _, name = model.partition(":")
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
    return model


def _checked(model: type[BaseModel] | str, owner: str, values: dict[str, Any]) -> dict[str, Any]:
    from service.validation import check

    return check(_resolved(model), values, owner=owner).model_dump()


def get_kind(name: str) -> Kind:
    """The kind registered as ``name``.

    Raises:
        InvalidInput: no kind has that name.
    """
    _load_builtins()
    kind = _REGISTRY.get(name)
    if kind is None:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise InvalidInput(f"unknown task kind {name!r}; known kinds: {known}")
    return kind


def kinds() -> list[Kind]:
    _load_builtins()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def _load_builtins() -> None:
    import service.task_process.kinds  # noqa: F401  (registers the built-in kinds on import)
