"""Concurrency keys met by one claim: what each still allows, counted under its row's lock.

On PostgreSQL a key's row is locked (``FOR UPDATE``, in name order) before its open attempts and
recent starts are counted; once a claim holds a key's row, any further key is taken ``SKIP
LOCKED`` (treated as full when another claim holds it), since a wait out of name order could
deadlock. On SQLite the claim's write transaction holds the file, and the candidates' own
statement counted each key (its ``k_*`` columns).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, union

from service.storage.db import db_now, status_is
from service.storage.looks import KEY_COUNTS, KEY_LIMITS
from service.storage.models import LimitKey, Outcome, TaskAttempt


class Keys:
    """Concurrency keys met by one claim: what each still allows, and which are full."""

    def __init__(self, lite: bool) -> None:
        self.lite = lite  # SQLite: the candidates' statement counted each key already
        self.room: dict[str, int | None] = {}  # key -> starts it still allows (None: no limit)
        self.full: set[str] = set()
        self.locked = False
        self.now: datetime | None = None  # the database's clock, read after the last key lock
        self.held_back = False
        self.reopen_at: datetime | None = None
        self.windows: dict[str, datetime] = {}  # a rate-limited key -> when its window frees a start, once full
        self.learned = False  # whether every key at a limit now has been read (a hint: see learn_full)

    def meet(self, conn: Connection, rows: Sequence[Any]) -> None:
        """What the keys of candidate ``rows`` not met yet allow. On PostgreSQL their rows are
        locked first, in name order; once this claim holds a key's row, a key another claim holds
        is skipped (treated as full for now): a wait out of name order could deadlock."""
        new = sorted({r.limit_key for r in rows if r.limit_key is not None} - set(self.room))
        if not new:
            return
        first = not self.locked
        if self.lite:
            counted = {r.limit_key: r for r in rows if r.limit_key in new and r.k_name is not None}
            for r in counted.values():  # the clock of the statement that counted them (it stamps the starts)
                self.now = latest(self.now, r.now)
        else:
            locked = [k.name for k in conn.execute(_LOCK_KEYS if first else _LOCK_KEYS_SKIPPING, {"names": new})]
            counted = {k.name: k for k in conn.execute(KEY_COUNTS, {"names": locked})} if locked else {}
            for k in counted.values():
                self.now = latest(self.now, k.now)
        self.locked = self.locked or bool(counted)
        for name in new:
            k = counted.get(name)
            if k is None:  # no limits (no row), or another claim holds its row (a later round)
                self.room[name] = None if first or self.lite or not self._exists(conn, name) else 0
                continue
            concurrency, rate, period, running, recent, oldest = (
                (k.k_concurrency, k.k_rate_count, k.k_rate_period_s, k.k_running, k.k_recent, k.k_window_from)
                if self.lite else (k.concurrency, k.rate_count, k.rate_period_s, k.running, k.recent, k.window_from))
            rooms = []
            if concurrency is not None:
                rooms.append(concurrency - int(running))
            if rate is not None and period is not None:
                rooms.append(rate - int(recent))
                start = oldest if oldest is not None else getattr(k, "now", None)
                frees = start + timedelta(seconds=period) if start is not None else None
                if frees is not None:
                    self.windows[name] = frees  # when this key's window frees a start, once this claim fills it
                if recent >= rate and frees is not None:
                    self.reopen_at = earliest(self.reopen_at, frees)
            self.room[name] = max(0, min(rooms)) if rooms else None

    @staticmethod
    def _exists(conn: Connection, name: str) -> bool:
        return conn.execute(select(LimitKey.name).where(LimitKey.name == name)).first() is not None

    def admit(self, key: str | None) -> bool:
        if key is None:
            return True
        room = self.room.get(key)
        if room is None:
            return True
        if room <= 0:
            self.full.add(key)
            self.held_back = True
            return False
        self.room[key] = room - 1
        if room - 1 == 0:
            self.full.add(key)
            if key in self.windows:  # it may be the rate that is used up: wake when its window frees a start
                self.reopen_at = earliest(self.reopen_at, self.windows[key])
        return True

    def learn_full(self, conn: Connection) -> None:
        """Mark full every key at a limit now, from one read, so that the next round of candidates
        passes them all by. A hint only: a key is admitted only by its count under its lock."""
        if self.learned:
            return
        self.learned = True
        for name in conn.execute(_FULL_KEYS).scalars():
            if name not in self.room:
                self.full.add(name)


def earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


_LOCK_KEYS = (select(*KEY_LIMITS).where(LimitKey.name.in_(bindparam("names", expanding=True)))
              .order_by(LimitKey.name).with_for_update())
_LOCK_KEYS_SKIPPING = _LOCK_KEYS.with_for_update(skip_locked=True)
_RUNNING = (select(TaskAttempt.limit_key.label("name"), func.count().label("n"))
            .where(status_is(TaskAttempt.outcome, Outcome.RUNNING.value), TaskAttempt.limit_key.is_not(None))
            .group_by(TaskAttempt.limit_key).subquery())
_FULL_KEYS = union(
    select(LimitKey.name).join(_RUNNING, _RUNNING.c.name == LimitKey.name).where(LimitKey.concurrency <= _RUNNING.c.n),
    select(LimitKey.name).join(TaskAttempt, TaskAttempt.limit_key == LimitKey.name)
    .where(LimitKey.rate_count.is_not(None), TaskAttempt.started_at > db_now(-LimitKey.rate_period_s))
    .group_by(LimitKey.name, LimitKey.rate_count).having(func.count() >= LimitKey.rate_count),
)
