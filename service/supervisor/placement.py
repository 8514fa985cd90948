"""Where the pool places an attempt, and what it knows of each kind's shape.

A kind is *async* (its ``run()`` is ``async def``) or blocking. The supervisor never imports
task code, so it learns a kind's shape from the host that first builds one (its ``began``
message). Until then one task of the kind runs, as a blocking one would, and the others of the
kind wait here (a few milliseconds), so that ten thousand async tasks claimed at once go to one
event loop rather than to ten thousand processes.

A blocking ``run()`` goes to an idle host that hosts no async task (one that crashes would take
them all with it, one that computes would slow their loop). An async task goes to a host that
already hosts async tasks (up to :data:`ASYNC_PER_HOST`), else to an empty one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from service.supervisor.attempt import Execution
from service.supervisor.processes import TaskProcess
from service.supervisor.spawner import kind_module, main_path
from service.task_process import wire

Key = tuple[int, int]

ASYNC_PER_HOST = 10_000  # async tasks one host's event loop takes at most
SLOW_CHECK_S = 0.05  # a host whose checks take longer than this gets no run() beside them


def choose(hosts: Iterable[TaskProcess], limit: int | None, *, isolated: bool) -> TaskProcess | None:
    """An idle host for a blocking run(): same memory limit, no async tasks, no check executing or slow."""
    idle = [h for h in hosts
            if h.alive and h.running is None and not h.isolated and h.memory_limit_mb == limit
            and not h.asyncs and not h.checks and h.slowest_check_s <= SLOW_CHECK_S]
    if isolated:
        idle = [h for h in idle if not h.parked]
    if not idle:
        return None
    # Gather polling tasks in few hosts; among equals take the oldest (its pages are warm).
    return max(idle, key=lambda h: (len(h.parked), -h.id))


def choose_async(hosts: Iterable[TaskProcess], limit: int | None) -> TaskProcess | None:
    """A host for an async task: the fullest one hosting async tasks with room left, else an empty one."""
    fits = [h for h in hosts
            if h.alive and not h.isolated and h.memory_limit_mb == limit and len(h.asyncs) < ASYNC_PER_HOST
            and (h.asyncs or h.empty)]
    return max(fits, key=lambda h: (len(h.asyncs), -h.id)) if fits else None


def frame(ex: Execution, *, on_loop: bool) -> bytes:
    """The ``run`` message for ``ex`` (``on_loop``: the host starts it on its event loop).

    Raises:
        wire.FrameTooLarge, TypeError, ValueError: its args or checkpoint cannot be sent.
    """
    lease = ex.lease
    message: dict[str, Any] = {
        "op": "run", "key": list(ex.key), "kind": lease.kind, "module": kind_module(lease.kind),
        "main": main_path(), "args": lease.args, "async": on_loop,
        "ctx": {"run_id": lease.run_id, "position": lease.position, "saved": ex.snapshot()[2]},
    }
    return wire.encode(message)


class Modes:
    """Kinds' shapes, the probe in flight of each unknown kind, and the executions held meanwhile."""

    def __init__(self) -> None:
        self.known: dict[str, bool] = {}  # kind -> its run() is async
        self._probes: dict[str, Execution] = {}
        self._held: dict[str, dict[Key, Execution]] = {}

    def on_loop(self, ex: Execution) -> bool:
        """True if ``ex`` goes to an event loop: its kind is async, and it is not isolated."""
        return self.known.get(ex.lease.kind, False) and not ex.lease.isolated

    def learn(self, kind: str, is_async: bool) -> None:
        self.known[kind] = is_async
        self._probes.pop(kind, None)

    def admit(self, ex: Execution) -> bool:
        """True: place ``ex`` now (its kind's shape is known, or it goes first to learn it);
        False: it is held until the shape is known."""
        kind = ex.lease.kind
        if kind in self.known:
            return True
        probe = self._probes.get(kind)
        if probe is None or probe.process is None:  # none went first, or it ended before telling
            self._probes[kind] = ex
            return True
        self._held.setdefault(kind, {})[ex.key] = ex
        return False

    def release(self, ex: Execution) -> bool:
        """Forget a held ``ex`` (stopped before it was placed); True if it was held."""
        held = self._held.get(ex.lease.kind)
        if held is None or held.pop(ex.key, None) is None:
            return False
        if not held:
            del self._held[ex.lease.kind]
        return True

    @property
    def holding(self) -> int:
        return sum(len(held) for held in self._held.values())

    def ready(self) -> list[Execution]:
        """What to place now: all held of kinds now known, or the next to go first of the others."""
        out: list[Execution] = []
        for kind in list(self._held):
            held = self._held[kind]
            if kind in self.known:
                out.extend(held.values())
                del self._held[kind]
                continue
            probe = self._probes.get(kind)
            if probe is None or probe.process is None:
                ex = held.pop(next(iter(held)))
                self._probes[kind] = ex
                out.append(ex)
                if not held:
                    del self._held[kind]
        return out
