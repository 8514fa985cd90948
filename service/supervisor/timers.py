"""When an idle supervisor must wake: the earliest delayed task (or retry) comes due, or a
schedule's slot does.

Both are judged by the database's clock: one read (:meth:`Firing.upcoming`, index probes only)
says how many seconds away each is, and the loop sleeps until then on its own monotonic clock,
so no process's wall clock is compared with another's. Whatever is submitted or scheduled
meanwhile rings the supervisor (NOTIFY, or the SQLite doorbell), which looks again.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Engine

from service.storage.firing import Fired, Firing
from service.storage.looks import Claimed, Look

log = logging.getLogger("tenure.schedules")

WAKE_AFTER_S = 0.001  # past the due time, so that the claim finds it due by the database's clock
WAITING_POLL_S = 0.25  # while a fire waits for the previous run's end: how often to look (a read)
DUE_AGAIN_S = 0.005  # a task due already but not claimed (another claimer holds its row): look again this soon


class _Firing(Firing):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine


class Timers:
    """Deadlines on the loop's monotonic clock: ``task_due`` (claim) and ``slot_due`` (fire)."""

    def __init__(self, engine: Engine, metrics: Any, idle_s: float) -> None:
        self.firing = _Firing(engine)
        self.metrics = metrics
        self.idle_s = idle_s
        self.task_due = float("inf")
        self.slot_due = 0.0  # look at once after start: slots may be due already

    def look(self, now: float, queues: list[str] | None = None) -> None:
        """Read how far away the next due task (of ``queues``; None: any) and slot are. Raises TenureError."""
        ahead = self.firing.upcoming(queues)
        self.task_due = float("inf") if ahead.task_in_s is None else \
            now + (ahead.task_in_s + WAKE_AFTER_S if ahead.task_in_s > 0 else DUE_AGAIN_S)
        self.slot_due = float("inf") if ahead.slot_in_s is None else now + ahead.slot_in_s + WAKE_AFTER_S
        if ahead.waiting:  # a fire queued behind a running one: look again soon (its release follows the run's end)
            self.slot_due = min(self.slot_due, now + min(self.idle_s, WAITING_POLL_S))

    def after_claim(self, now: float, found: Look, got: Claimed, queues: tuple[str, ...] | None) -> None:
        """A claim left slots free: when to claim again. Raises TenureError.

        Looks ahead at the queues it may start (those ``queues`` served, None: all, that are
        neither paused nor at a limit). Due work held back by a pause or a limit is no reason to
        claim again soon (an end elsewhere, a resume or a new limit rings); a rate window that
        holds work back frees a start at a known time, and the loop wakes for it.
        """
        plain = queues is None and all(not q.paused and q.room is None for q in found.queues)
        self.look(now, None if plain else [q.name for q in found.queues if not q.paused and q.room != 0])
        if (found.blocked or got.held_back) and self.task_due <= now + DUE_AGAIN_S:
            self.task_due = now + self.idle_s
        reopen = found.reopen_in_s()
        if got.reopen_at is not None and got.now is not None:
            after = max(0.0, (got.reopen_at - got.now).total_seconds())
            reopen = after if reopen is None else min(reopen, after)
        if reopen is not None:
            self.task_due = min(self.task_due, now + reopen + WAKE_AFTER_S)

    def fire(self, now: float, supervisor_id: int | None) -> list[Fired]:
        """Handle the due slots, then look ahead again. Raises TenureError."""
        self.slot_due = now + self.idle_s  # were this to fail, try again after an idle poll
        fired = self.firing.fire_due()
        for f in fired:
            self.metrics.fired(f.schedule, f.outcome, f.catch_up, f.slots, f.lag_s)
            log.info("schedule.%s schedule=%r slot=%s catch_up=%s slots=%s run=%s task=%s lag_ms=%s supervisor=%s",
                     f.outcome, f.schedule, f.slot_at.isoformat() + "Z" if f.slot_at else None, f.catch_up, f.slots,
                     f.run_id, f.task_id, None if f.lag_s is None else round(f.lag_s * 1000), supervisor_id)
        self.look(now)
        if not fired and self.slot_due <= now + WAKE_AFTER_S:  # due, yet another firer holds it: not a spin
            self.slot_due = now + DUE_AGAIN_S * 10
        return fired
