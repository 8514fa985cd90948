"""web.shared: one read and render of a run's status for everyone polling it at once."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from web.shared import Answer, SharedAnswers

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on a thread of its own: the browser tests' Playwright may own this thread's loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def answer(tag: str) -> Answer:
    return Answer(tag, 200, tag.encode(), "text/html")


def test_requests_that_arrive_while_a_read_runs_share_it() -> None:
    shared = SharedAnswers(ttl_s=0.0)
    release = asyncio.Event()
    calls = 0

    async def compute() -> Answer:
        nonlocal calls
        calls += 1
        await release.wait()
        return answer(f"v{calls}")

    async def main() -> list[Answer]:
        waiting = [asyncio.create_task(shared.get("run", compute)) for _ in range(50)]
        await asyncio.sleep(0)  # let them all arrive before the read ends
        release.set()
        return await asyncio.gather(*waiting)

    answers = run(main())
    assert calls == 1 and {a.etag for a in answers} == {"v1"}
    assert shared.fresh("run") is None, "a TTL of 0 keeps nothing once the read is done"


def test_an_answer_is_kept_for_the_ttl_then_computed_again() -> None:
    clock = Clock()
    shared = SharedAnswers(ttl_s=0.25, clock=clock)
    versions = iter(["v1", "v2"])

    async def compute() -> Answer:
        return answer(next(versions))

    assert run(shared.get("run", compute)).etag == "v1"
    clock.now += 0.2
    assert run(shared.get("run", compute)).etag == "v1"
    assert shared.fresh("other") is None, "kept per key"
    clock.now += 0.1
    assert shared.fresh("run") is None
    assert run(shared.get("run", compute)).etag == "v2"
    assert shared.computed == 2


def test_a_failed_read_reaches_everyone_waiting_and_is_not_kept() -> None:
    shared = SharedAnswers(ttl_s=10.0)
    release = asyncio.Event()

    async def compute() -> Answer:
        await release.wait()
        raise RuntimeError("database gone")

    async def main() -> list[object]:
        waiting = [asyncio.create_task(shared.get("run", compute)) for _ in range(3)]
        await asyncio.sleep(0)
        release.set()
        return await asyncio.gather(*waiting, return_exceptions=True)

    results = run(main())
    assert all(isinstance(r, RuntimeError) for r in results)
    assert shared.fresh("run") is None
    with pytest.raises(RuntimeError):
        run(shared.get("run", compute_fails))


async def compute_fails() -> Answer:
    raise RuntimeError("still gone")
