"""Real work over HTTP: runs of explicit tasks, single tasks by id, their logs, idempotent submits."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from tests import kinds_for_tests  # noqa: F401 - registers t_chatty and t_blocking
from tests.conftest import wait_for

JSON = {"content-type": "application/json"}


def post(client: TestClient, path: str, body: Any, key: str | None = None) -> Any:
    headers = {**JSON, **({"Idempotency-Key": key} if key else {})}
    return client.post(path, json=body, headers=headers)


def test_a_run_of_explicit_tasks_keeps_each_tasks_args_label_and_options(idle_client: TestClient) -> None:
    body = {"kind": "echo", "name": "convert", "tasks": [
        {"path": "/data/a.csv"},
        {"args": {"path": "/data/b.csv"}, "label": "the big one", "max_attempts": 5, "timeout_s": 9},
        {"args": {"n": 3}, "kind": "t_blocking"},
    ]}
    made = post(idle_client, "/api/runs", body)
    assert made.status_code == 201, made.text
    run = made.json()
    assert (run["total"], run["kind"], run["name"], run["params"]) == (3, "echo", "convert", {})
    assert made.headers["location"].endswith(f"/api/runs/{run['id']}")
    tasks = idle_client.get(f"/api/runs/{run['id']}").json()["tasks"]
    assert [(t["position"], t["kind"], t["args"], t["label"], t["max_attempts"]) for t in tasks] == [
        (0, "echo", {"path": "/data/a.csv"}, "a.csv", 3),  # no label given: a short form of its args, stored
        (1, "echo", {"path": "/data/b.csv"}, "the big one", 5),
        (2, "t_blocking", {"n": 3}, "n=3", 3),
    ]
    page = idle_client.get(f"/runs/{run['id']}/status").text
    assert "a.csv" in page and "the big one" in page and "n=3" in page  # each tile's own label
    assert 'id="tile-1"' in page and 'id="tile-3"' in page and 'id="tile-0"' not in page  # numbered from 1


def test_a_runs_tasks_come_in_slices(idle_client: TestClient) -> None:
    run = post(idle_client, "/api/runs", {"kind": "echo", "tasks": [{"i": i} for i in range(30)]}).json()
    first = idle_client.get(f"/api/runs/{run['id']}?limit=10").json()
    assert [t["args"]["i"] for t in first["tasks"]] == list(range(10)) and first["total"] == 30
    rest = idle_client.get(f"/api/runs/{run['id']}?limit=10&offset=25").json()["tasks"]
    assert [t["args"]["i"] for t in rest] == list(range(25, 30))
    assert len(idle_client.get(f"/api/runs/{run['id']}").json()["tasks"]) == 30  # default: up to 1,000
    bad = idle_client.get(f"/api/runs/{run['id']}?limit=10001")
    assert bad.status_code == 422 and bad.json()["error"] == "limit must be at most 10000, got 10001"


def test_the_same_idempotency_key_never_starts_a_second_run(idle_client: TestClient) -> None:
    body = {"kind": "echo", "tasks": [{"i": 1}, {"i": 2}]}
    first = post(idle_client, "/api/runs", body, key="import-2026-12-01")
    again = post(idle_client, "/api/runs", body, key="import-2026-12-01")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    other = post(idle_client, "/api/runs", {**body, "name": "changed"}, key="import-2026-12-01")
    assert other.status_code == 409
    assert "'import-2026-12-01' was already used with a different request" in other.json()["error"]
    assert idle_client.get("/api/runs").json()["total"] == 1
    assert post(idle_client, "/api/runs", body, key="another").status_code == 201
    assert idle_client.get("/api/runs").json()["total"] == 2
    bad = post(idle_client, "/api/runs", body, key="tab\there")
    assert bad.status_code == 422 and "Idempotency-Key" in bad.json()["error"]
    task = {"kind": "echo", "args": {"x": 1}}
    one, two = post(idle_client, "/api/tasks", task, key="k1"), post(idle_client, "/api/tasks", task, key="k1")
    assert (one.status_code, two.status_code, one.json()["id"]) == (201, 200, two.json()["id"])
    assert post(idle_client, "/api/tasks", {**task, "args": {"x": 2}}, key="k1").status_code == 409


def test_the_same_key_with_other_simulation_parameters_is_a_conflict(idle_client: TestClient) -> None:
    first = post(idle_client, "/api/runs", {"tasks": 5, "min_seconds": 1}, key="nightly-sim")
    again = post(idle_client, "/api/runs", {"tasks": 5, "min_seconds": 1}, key="nightly-sim")
    assert (first.status_code, again.status_code) == (201, 200)  # the seed drawn for the first is no "other body"
    assert again.json()["id"] == first.json()["id"]
    for other in ({"tasks": 5, "min_seconds": 2}, {"tasks": 5, "min_seconds": 1, "seed": 7},
                  {"tasks": 6, "min_seconds": 1}, {"tasks": 5, "min_seconds": 1, "max_attempts": 4}):
        refused = post(idle_client, "/api/runs", other, key="nightly-sim")
        assert refused.status_code == 409, (other, refused.text)
        assert "'nightly-sim' was already used with a different request" in refused.json()["error"]
    assert idle_client.get("/api/runs").json()["total"] == 1


def test_a_single_task_by_id_its_result_and_its_cancel(idle_client: TestClient) -> None:
    made = post(idle_client, "/api/tasks", {"kind": "echo", "args": {"x": 1}, "label": "one echo"})
    assert made.status_code == 201, made.text
    task = made.json()
    assert made.headers["location"].endswith(f"/api/tasks/{task['id']}")
    assert (task["status"], task["run_id"], task["label"], task["history"]) == ("queued", None, "one echo", [])
    assert task["url"].endswith(f"/tasks/{task['id']}")
    waiting = idle_client.get(f"/api/tasks/{task['id']}/result")
    assert waiting.status_code == 202 and waiting.json()["status"] == "queued"
    listed = idle_client.get("/api/tasks").json()
    assert [t["id"] for t in listed["tasks"]] == [task["id"]] and listed["total"] == 1
    cancelled = idle_client.post(f"/api/tasks/{task['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    ended = idle_client.get(f"/api/tasks/{task['id']}/result")
    assert ended.status_code == 409 and ended.json()["status"] == "cancelled"
    again = idle_client.post(f"/api/tasks/{task['id']}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["error"]
    assert idle_client.get("/api/tasks/424242").json() == {"error": "there is no task 424242"}
    assert idle_client.get("/api/tasks/424242/result").status_code == 404
    unknown = post(idle_client, "/api/tasks", {"kind": "nope"})
    assert unknown.status_code == 422 and "unknown task kind 'nope'" in unknown.json()["error"]
    assert idle_client.get("/api/tasks").json()["total"] == 1  # nothing written by the bad one


def test_a_tasks_status_result_error_and_logs_over_http(client: TestClient) -> None:
    ok = post(client, "/api/tasks", {"kind": "t_chatty", "args": {}}).json()
    bad = post(client, "/api/tasks", {"kind": "t_chatty", "args": {"fail": True}, "max_attempts": 1}).json()
    wait_for(lambda: client.get(f"/api/tasks/{ok['id']}/result").status_code == 200, 10, "the task to succeed")
    assert client.get(f"/api/tasks/{ok['id']}/result").json()["result"] == "chatted"
    wait_for(lambda: client.get(f"/api/tasks/{bad['id']}/result").status_code == 409, 10, "the task to fail")
    failed = client.get(f"/api/tasks/{bad['id']}/result").json()
    assert failed["error"] == "ValueError: the chatty task failed on purpose"
    detail = client.get(f"/api/tasks/{ok['id']}").json()
    (attempt,) = detail["history"]
    assert attempt["outcome"] == "succeeded" and attempt["logs_cut"] == 0
    for line in ("hello from print", "hello from logging, attempt 1", "hello from stderr", "hello from a subprocess"):
        assert line in attempt["logs"], attempt["logs"]
    (failure,) = client.get(f"/api/tasks/{bad['id']}").json()["history"]
    assert failure["outcome"] == "failed" and "Traceback" in failure["traceback"]
    assert "raise ValueError" in failure["traceback"] and "\n" not in failure["error"]
    page = client.get(f"/tasks/{bad['id']}")
    assert page.status_code == 200 and "the chatty task failed on purpose" in page.text
    assert "hello from print" in page.text and "<details" in page.text  # the traceback, collapsed
    listing = client.get("/tasks")
    assert listing.status_code == 200 and f"/tasks/{ok['id']}" in listing.text
    assert client.get("/tasks/424242").status_code == 404
