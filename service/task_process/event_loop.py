"""A host's event loop: where the ``async def`` task code it hosts runs, with no thread per task.

A kind whose ``run()`` is ``async def`` runs as an :class:`asyncio.Task` on one event loop per
host, started on a thread of its own the first time one arrives; the host's main thread stays
free for blocking ``run()`` calls. An async ``run()`` that returns ``None`` from an object with
``check_output()`` is a polling task, as any other: an ``async def`` ``check_output()`` runs on
the loop too, a plain one on a short-lived thread.

**Stopping.** A stop (timeout, cancel, lost lease) sets the attempt's stop event and cancels
its asyncio Task on the loop; nothing here keeps a reference to it afterwards. A task that
blocks the loop (CPU-bound or blocking code in ``async def``) stalls every async task of its
host: when the loop has not taken a stop request within :data:`STUCK_S` and is still running
the code of the attempt being stopped, the host says ``stuck`` and the supervisor ends the
host (its other tasks come back *lost*, not charged, as from any process stopped on purpose).

Threads here: the loop's. Every method but :meth:`AsyncSide.start`, :meth:`AsyncSide.cancel`,
:meth:`AsyncSide.check` and :meth:`AsyncSide.watch` runs on it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.task_process.runner import Occupant, Runner

STUCK_S = 0.5  # a stop request the loop has not taken within this long: the loop is blocked

current: contextvars.ContextVar[Occupant | None] = contextvars.ContextVar("tenure_occupant", default=None)


def is_async(method: Any) -> bool:
    """True if ``method`` is an ``async def`` (calling it makes a coroutine)."""
    return inspect.iscoroutinefunction(method)


class AsyncSide:
    """The event loop of one host and the asyncio Tasks of its attempts."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread_ident: int | None = None
        self.tasks: dict[tuple[int, int], asyncio.Task[None]] = {}  # loop thread only
        self.stops: dict[tuple[int, int], tuple[float, Occupant]] = {}  # stop requests the loop has not taken
        self.lock = threading.Lock()
        self._arrivals: list[tuple[Occupant, dict[str, Any] | None]] = []  # to begin, in one loop turn

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self.lock:
            if self.loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=self._serve, args=(loop,), name="host-loop", daemon=True)
                thread.start()
                self.loop = loop
            return self.loop

    def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        self.thread_ident = threading.get_ident()
        asyncio.set_event_loop(loop)
        loop.run_forever()

    # -- from other threads ---------------------------------------------------------------

    def start(self, occupant: Occupant, message: dict[str, Any] | None) -> None:
        """Run the occupant's ``run()`` on the loop; with ``message``, build its task there first."""
        occupant.on_loop = True
        with self.lock:
            first = not self._arrivals
            self._arrivals.append((occupant, message))
        if first:  # a burst of arrivals costs the loop one wake-up, not one each
            self._ensure().call_soon_threadsafe(self._begin)

    def check(self, occupant: Occupant) -> None:
        """One ``async def`` ``check_output()`` call, on the loop."""
        self._ensure().call_soon_threadsafe(self._spawn, occupant, self._check(occupant))

    def cancel(self, occupant: Occupant) -> None:
        """Cancel the occupant's asyncio Task (its stop event is set already)."""
        with self.lock:
            self.stops[occupant.key] = (time.monotonic(), occupant)
        self.runner.occupied.set()  # the flusher watches until the loop takes it
        self._ensure().call_soon_threadsafe(self._cancel, occupant.key)

    def watch(self) -> bool:
        """From the flusher: report a stop the loop has not taken because the stopped task blocks it.
        Returns True while stop requests are pending (the flusher keeps watching)."""
        if not self.stops:
            return False
        now = time.monotonic()
        with self.lock:
            overdue = [key for key, (since, _) in self.stops.items() if now - since >= STUCK_S]
        if overdue:
            blocker = self._blocker()
            if blocker in overdue:
                with self.lock:
                    self.stops.pop(blocker, None)
                self.runner.send({"op": "stuck", "key": list(blocker)})
        return bool(self.stops)

    def _blocker(self) -> tuple[int, int] | None:
        """The attempt whose code the loop's thread is executing now, if any."""
        frame = sys._current_frames().get(self.thread_ident or -1)
        while frame is not None:
            if frame.f_code in _OURS:
                occupant = frame.f_locals.get("occupant")
                return occupant.key if occupant is not None else None
            frame = frame.f_back
        return None

    # -- on the loop ----------------------------------------------------------------------

    def _begin(self) -> None:
        with self.lock:
            arrivals, self._arrivals = self._arrivals, []
        for occupant, message in arrivals:
            if occupant.key in self.runner.occupants:  # else dropped before it began
                self._spawn(occupant, self._drive(occupant, message))

    def _spawn(self, occupant: Occupant, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self.tasks[occupant.key] = task
        task.add_done_callback(functools.partial(self._done, occupant.key))

    def _done(self, key: tuple[int, int], task: asyncio.Task[None]) -> None:
        if self.tasks.get(key) is task:
            del self.tasks[key]

    def _cancel(self, key: tuple[int, int]) -> None:
        with self.lock:
            self.stops.pop(key, None)
        task = self.tasks.pop(key, None)
        if task is not None:
            task.cancel()

    async def _drive(self, occupant: Occupant, message: dict[str, Any] | None) -> None:
        current.set(occupant)
        host = self.runner
        try:
            if message is not None:  # placed here as async: built on the loop
                occupant.task = host.build(occupant, message)
                if not is_async(getattr(occupant.task, "run", None)):
                    host.decline(occupant)
                    return
            value = await occupant.task.run()
        except asyncio.CancelledError:
            return  # stopped: the supervisor has let it go
        except BaseException as exc:  # noqa: BLE001 - task code may raise anything; all are reported
            host.failed(occupant, "ran", exc)
            return
        if occupant.key in host.occupants:
            host.ran(occupant, value)

    async def _check(self, occupant: Occupant) -> None:
        current.set(occupant)
        try:
            value = await occupant.task.check_output()
        except asyncio.CancelledError:
            return
        except BaseException as exc:  # noqa: BLE001
            occupant.checking = False
            self.runner.failed(occupant, "checked", exc, keep=True)
            return
        occupant.checking = False
        if occupant.key in self.runner.occupants:
            self.runner.report(occupant, "checked", value=value, keep=value is None)


_OURS = {AsyncSide._drive.__code__, AsyncSide._check.__code__}
