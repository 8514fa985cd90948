"""One read and one render of a run's status, shared by every browser that polls it at once.

A hundred people watching a big run poll its fragment a hundred times a second. Each full
answer is a database read and a render of tens of milliseconds; done once per poll they would
take more CPU than the machine has and starve the run they watch. So:

* requests for the same view of the same run that arrive while its read is under way wait for
  that read and share it (no second read starts);
* an answer is reused for ``ttl_s`` (the ``TENURE_FRAGMENT_TTL_S`` of ``tenure serve``, 0.25 s by
  default; 0 in the tests, so that every poll sees the database): whoever polls in that window
  gets it, as a 304 if their ETag matches it.

So a run's page is at most ``ttl_s`` older than the database, and its fragment is read and
rendered at most ``1 / ttl_s`` times a second, however many people watch it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

MAX_ENTRIES = 256  # views kept at once; the oldest go first


@dataclass(frozen=True)
class Answer:
    """A computed answer: its ETag and what to send when the browser's copy is not current."""

    etag: str
    status_code: int
    body: bytes
    media_type: str
    gzipped: bytes = b""  # the body compressed once, for every browser that accepts gzip


class SharedAnswers:
    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.clock = ttl_s, clock
        self._kept: dict[Hashable, tuple[float, Answer]] = {}
        self._pending: dict[Hashable, asyncio.Future[Answer]] = {}
        self.computed = 0  # how many answers were computed (the others were shared)

    def fresh(self, key: Hashable) -> Answer | None:
        """The answer kept for ``key`` if it is younger than the TTL, else None."""
        kept = self._kept.get(key)
        return kept[1] if kept is not None and kept[0] > self.clock() else None

    def put(self, key: Hashable, answer: Answer) -> Answer:
        """Keep ``answer`` for the TTL (a no-op with a TTL of 0)."""
        self.computed += 1
        if self.ttl_s > 0:
            if len(self._kept) >= MAX_ENTRIES:
                self._kept.pop(next(iter(self._kept)))
            self._kept[key] = (self.clock() + self.ttl_s, answer)
        return answer

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[Answer]]) -> Answer:
        """The fresh answer for ``key``, or the one being computed, or one computed now."""
        answer = self.fresh(key)
        if answer is not None:
            return answer
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            answer = self.put(key, await compute())
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting for it
            raise
        finally:
            del self._pending[key]
        future.set_result(answer)
        return answer


def kept_for(app_state: Any) -> SharedAnswers:
    """The app's shared answers (made on first use, with the app's TTL)."""
    shared = getattr(app_state, "shared_answers", None)
    if shared is None:
        shared = app_state.shared_answers = SharedAnswers(getattr(app_state, "fragment_ttl_s", 0.0))
    return shared  # type: ignore[no-any-return]
