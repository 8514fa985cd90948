"""Text the database cannot store, given by a person, is refused with 422 naming the field, and
nothing is written, on both backends (README, "Guarantees"; :mod:`service.text`).

PostgreSQL refuses a NUL in any text; no UTF-8 encoder takes a lone surrogate. SQLite would store
a NUL, but a run must mean the same on either backend, so both refuse it before writing.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

NUL = "contains a NUL character (\\u0000), which the database cannot store"
SURROGATE = "contains a lone surrogate (not valid Unicode), which the database cannot store"

REFUSED: dict[str, tuple[str, dict[str, Any], str]] = {
    "run name, NUL": ("/api/runs", {"tasks": 1, "name": "night\u0000ly"}, f"name {NUL}"),
    "run name, surrogate": ("/api/runs", {"tasks": 1, "name": "night\udc80ly"}, f"name {SURROGATE}"),
    "label, NUL": ("/api/runs", {"kind": "echo", "tasks": [{"args": {"x": 1}, "label": "a\u0000"}]},
                   f"tasks[0]: label {NUL}"),
    "label, surrogate": ("/api/runs", {"kind": "echo", "tasks": [{"args": {"x": 1}, "label": "a\udc80"}]},
                         f"tasks[0].label {SURROGATE}"),
    "args, NUL": ("/api/runs", {"kind": "echo", "tasks": [{"i": 1}, {"path": "a\u0000.csv"}]},
                  f"tasks[1]: args.path {NUL}"),
    "nested args, surrogate": ("/api/runs", {"kind": "echo", "tasks": [{"args": {"x": ["ok", "\udc80"]}}]},
                               f"tasks[0]: args.x[1] {SURROGATE}"),
    "args key, NUL": ("/api/runs", {"kind": "echo", "tasks": [{"a\u0000": 1}]}, f"tasks[0]: a key of args {NUL}"),
    "task label, NUL": ("/api/tasks", {"kind": "echo", "args": {"x": 1}, "label": "a\u0000"}, f"label {NUL}"),
    "task label, surrogate": ("/api/tasks", {"kind": "echo", "args": {"x": 1}, "label": "\udc80"},
                              f"label {SURROGATE}"),
    "task args, NUL": ("/api/tasks", {"kind": "echo", "args": {"deep": {"x": ["\u0000"]}}},
                       f"args.deep.x[0] {NUL}"),
    "task args, surrogate": ("/api/tasks", {"kind": "echo", "args": {"path": "\udc80"}}, f"args.path {SURROGATE}"),
}


def nothing_written(client: TestClient) -> bool:
    return client.get("/api/runs").json()["total"] == 0 and client.get("/api/tasks").json()["total"] == 0


@pytest.mark.parametrize(("path", "body", "message"), list(REFUSED.values()), ids=list(REFUSED))
def test_unstorable_text_is_refused_naming_the_field(any_idle_client: TestClient, path: str, body: dict[str, Any],
                                                    message: str) -> None:
    # json.dumps escapes both as \uXXXX, as any JSON encoder may: the server reads them back as sent
    answer = any_idle_client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert (answer.status_code, answer.json()) == (422, {"error": message})
    assert nothing_written(any_idle_client)


def test_unstorable_text_in_the_form_is_refused_naming_the_field(any_idle_client: TestClient) -> None:
    """A form cannot carry a lone surrogate (undecodable bytes are read as U+FFFD), only a NUL."""
    answer = any_idle_client.post("/runs", data={"tasks": "2", "name": "night\u0000ly"}, follow_redirects=False)
    assert answer.status_code == 422
    assert f"name {NUL}" in answer.text
    assert nothing_written(any_idle_client)
