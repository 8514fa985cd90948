"""Where the pool places an attempt, and what it knows of each kind's shape.

A kind is *async* (its ``run()`` is ``async def``) or blocking, and a blocking kind may *park*
(its ``run()`` returns ``None`` and ``check_output()`` is polled: a polling task, whose object
stays in its task process between checks). The supervisor never imports task code, so it
learns a kind's shape from the task processes that run it: whether it is async from the first
one built (its ``began`` message; meanwhile the others of the kind wait here a few
milliseconds, so that ten thousand async tasks claimed at once go to one event loop rather than
to ten thousand processes), and whether it parks from the first that does.

* A blocking ``run()`` goes to an idle task process of the same memory limit that hosts no
  async task (one that crashes would take them all with it, one that computes would slow their
  loop), no check executing or slow. Parked tasks gather in few processes: a run() of a kind
  known to park prefers a process that holds parked tasks; any other run() is kept *out* of
  such a process, since stopping it (a timeout, a cancel) would end the process and interrupt
  every task parked there.
* An isolated task (one whose last process died with blame unclear) runs alone in a *fresh*
  process, one that nobody ran in before, so that its next crash, if any, is its own.
* An async task goes to a process that already hosts async tasks (up to
  :data:`ASYNC_PER_HOST`), else to an empty one.
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


def choose(processes: Iterable[TaskProcess], limit: int | None, *, isolated: bool,
           parks: bool) -> TaskProcess | None:
    """A task process for a blocking run() (see the module); None: fork a new one.

    ``isolated``: only a fresh process will do. ``parks``: its kind is known to park, so it may
    join parked tasks; otherwise it never does.
    """
    idle = [p for p in processes
            if p.open_to_new and p.running is None and not p.isolated and p.memory_limit_mb == limit
            and not p.asyncs and not p.checks and p.slowest_check_s <= SLOW_CHECK_S]
    if isolated:
        idle = [p for p in idle if p.fresh]
    elif not parks:
        idle = [p for p in idle if not p.parked]
    if not idle:
        return None
    # Gather parked tasks in few processes; among equals take the oldest (its pages are warm).
    return max(idle, key=lambda p: (len(p.parked), -p.id))


def choose_async(processes: Iterable[TaskProcess], limit: int | None) -> TaskProcess | None:
    """A task process for an async task: the fullest one hosting async tasks with room left, else an empty one."""
    fits = [p for p in processes
            if p.open_to_new and not p.isolated and p.memory_limit_mb == limit and len(p.asyncs) < ASYNC_PER_HOST
            and (p.asyncs or p.empty)]
    return max(fits, key=lambda p: (len(p.asyncs), -p.id)) if fits else None


def frame(ex: Execution, *, on_loop: bool) -> bytes:
    """The ``run`` message for ``ex`` (``on_loop``: the task process starts it on its event loop).

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
        self.parking: set[str] = set()  # kinds a task of which has parked (returned None to be polled)
        self._probes: dict[str, Execution] = {}
        self._held: dict[str, dict[Key, Execution]] = {}

    def on_loop(self, ex: Execution) -> bool:
        """True if ``ex`` goes to an event loop: its kind is async, and it is not isolated."""
        return self.known.get(ex.lease.kind, False) and not ex.lease.isolated

    def parks(self, ex: Execution) -> bool:
        """True if ``ex``'s kind is known to park (a task of it returned None to be polled)."""
        return ex.lease.kind in self.parking

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
