"""A big submit never holds up anyone else: bodies are parsed, checked and planned off the event loop.

The planning step is made to wait until a concurrent ``GET /healthz`` has answered. Were it run on
the event loop, that GET could never be answered while planning waits, so planning would reach its
deadline and the test fails; off the loop, the GET answers at once and planning goes on.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import pytest
from starlette.requests import Request
from starlette.testclient import TestClient

from tests.conftest import wait_for
from web import api, forms, http

DEADLINE_S = 10.0


class Held:
    """Wraps a planning step so that it waits (up to DEADLINE_S) for ``release`` before going on."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real, self.started, self.release = real, threading.Event(), threading.Event()
        self.released_in_time: list[bool] = []
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.started.is_set():  # only the first call waits; later ones go straight on
            self.started.set()
            self.released_in_time.append(self.release.wait(DEADLINE_S))
        self.calls += 1
        return self.real(*args, **kwargs)


def in_background(call: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    answer: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: answer.update(response=call()), daemon=True)
    thread.start()
    return thread, answer


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Held]:
    module, name = request.param
    hold = Held(getattr(module, name))
    monkeypatch.setattr(module, name, hold)
    yield hold
    hold.release.set()  # never leave a request waiting, whatever the test did


SUBMITS = {
    "json run, parsing": ((api, "parse_json"), "/api/runs", {"json": {"kind": "echo", "tasks": [{"i": 1}]}}),
    "json run, planning": ((api, "plan_run"), "/api/runs", {"json": {"kind": "echo", "tasks": [{"i": 1}]}}),
    "json task, planning": ((api, "plan_task"), "/api/tasks", {"json": {"kind": "echo", "args": {"i": 1}}}),
    "form run, planning": ((forms, "plan_form"), "/runs", {"data": {"tasks": "2", "min_seconds": "1"},
                                                             "follow_redirects": False}),
}


@pytest.mark.parametrize(("held", "path", "send"), list(SUBMITS.values()), ids=list(SUBMITS),
                         indirect=["held"])
def test_other_requests_are_answered_while_a_submit_is_planned(
    idle_client: TestClient, held: Held, path: str, send: dict[str, Any],
) -> None:
    poster, posted = in_background(lambda: idle_client.post(path, **send))
    assert held.started.wait(DEADLINE_S), "the submit never reached the step under test"
    health = idle_client.get("/healthz")  # with the step on the event loop, this waits for its deadline
    held.release.set()
    poster.join(DEADLINE_S * 2)
    assert health.status_code == 200
    assert held.released_in_time == [True], "the step blocked the event loop: GET /healthz waited for it"
    assert posted["response"].status_code in (201, 303), posted["response"].text


BIG = {"kind": "echo", "tasks": [{"path": f"/data/part-{i:05d}.csv"} for i in range(100)]}  # about 3.4 KB


@pytest.fixture
def one_big_slot(idle_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[Held]:
    """Bodies over 2 KB count as big, one is handled at a time, and the first run's planning is held."""
    monkeypatch.setattr(http, "BIG_BODY_BYTES", 2000)
    idle_client.app.state.big_bodies = http.BigBodies(slots=1, wait_s=DEADLINE_S)  # type: ignore[attr-defined]
    hold = Held(api.plan_run)
    monkeypatch.setattr(api, "plan_run", hold)
    yield hold
    hold.release.set()


def test_big_bodies_take_turns_and_small_ones_never_wait(idle_client: TestClient, one_big_slot: Held) -> None:
    gate: http.BigBodies = idle_client.app.state.big_bodies  # type: ignore[attr-defined]
    first, first_answer = in_background(lambda: idle_client.post("/api/runs", json=BIG))
    assert one_big_slot.started.wait(DEADLINE_S)  # the first big body holds the only slot
    chunked = (part for part in [json.dumps(BIG).encode()])  # no Content-Length: found big while reading
    second, second_answer = in_background(lambda: idle_client.post(
        "/api/runs", content=chunked, headers={"content-type": "application/json"}))
    wait_for(lambda: gate.waiting == 1, DEADLINE_S, "the second big body to wait for the slot")
    small = idle_client.post("/api/runs", json={"kind": "echo", "tasks": [{"i": 1}]})
    assert small.status_code == 201, small.text  # a small body passes a full gate
    assert one_big_slot.calls == 1 and gate.waiting == 1  # only the small one was planned meanwhile
    one_big_slot.release.set()
    first.join(DEADLINE_S)
    second.join(DEADLINE_S)
    assert first_answer["response"].status_code == 201, first_answer["response"].text
    assert second_answer["response"].status_code == 201, second_answer["response"].text
    assert gate.waiting == 0 and one_big_slot.calls == 3
    assert idle_client.get("/api/runs").json()["total"] == 3


def test_a_big_body_that_waits_past_its_deadline_is_refused_with_retry_after(
    idle_client: TestClient, one_big_slot: Held,
) -> None:
    idle_client.app.state.big_bodies.wait_s = 0.2  # type: ignore[attr-defined]
    first, first_answer = in_background(lambda: idle_client.post("/api/runs", json=BIG))
    assert one_big_slot.started.wait(DEADLINE_S)
    refused = idle_client.post("/api/runs", json=BIG)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
    assert refused.json()["error"] == ("tenure is busy with as many large submissions as it handles at once (1) "
                                       "and none ended within 0.2 s; send this one again in 5 s")
    one_big_slot.release.set()
    first.join(DEADLINE_S)
    assert first_answer["response"].status_code == 201
    assert idle_client.get("/api/runs").json()["total"] == 1  # the refused one wrote nothing
    assert idle_client.post("/api/runs", json=BIG).status_code == 201  # and its slot was given back


def test_a_body_in_many_small_chunks_is_joined_in_linear_time() -> None:
    """32,000 chunks of 512 bytes: joined once, a few milliseconds; joined by ``+=``, copying them
    takes over 250 GB of memory traffic, and reading stops at the deadline."""
    chunk, count = b"x" * 512, 32_000
    deadline = time.monotonic() + DEADLINE_S / 2
    sent = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if time.monotonic() > deadline:
            raise AssertionError(f"reading {sent:,} chunks passed its deadline: each chunk copies the body so far")
        sent += 1
        return {"type": "http.request", "body": chunk, "more_body": sent < count}

    request = Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)
    # On a thread of its own: the test's thread may already run an event loop (a test before it on this
    # worker left one running), and anyio.run refuses to start another there.
    with ThreadPoolExecutor(1) as pool:
        body = pool.submit(anyio.run, http.read_body, request, 16 * 1024 * 1024).result()
    assert len(body) == count * len(chunk)
