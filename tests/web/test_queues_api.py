"""Flow control over HTTP: queues (declare, read, pause, resume), concurrency keys, paused runs,
and the flow options of submits, against the real app and database.

The limits themselves are the engine's (tests/integration); here: that each field reaches it,
that every refusal names its field, and that a unique-key duplicate answers the task it found.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests import kinds_for_tests  # noqa: F401 - registers t_blocking
from tests.conftest import wait_for

JSON = {"content-type": "application/json"}


def put(client: TestClient, path: str, body: Any) -> Any:
    return client.put(path, json=body, headers=JSON)


def post(client: TestClient, path: str, body: Any = None) -> Any:
    return client.post(path, json=body, headers=JSON) if body is not None else client.post(path)


def queue(client: TestClient, name: str) -> dict[str, Any]:
    found = client.get(f"/api/queues/{name}")
    assert found.status_code == 200, found.text
    return found.json()  # type: ignore[no-any-return]


def test_a_queue_is_declared_read_and_listed_and_a_field_left_out_keeps_its_value(any_idle_client: TestClient) -> None:
    assert [q["name"] for q in any_idle_client.get("/api/queues").json()["queues"]] == ["default"]
    made = put(any_idle_client, "/api/queues/imports", {"concurrency": 4, "rate": "10/s"})
    assert made.status_code == 200, made.text
    body = made.json()
    assert (body["name"], body["concurrency"], body["rate"], body["rate_count"], body["rate_period_s"]) == (
        "imports", 4, "10/s", 10, 1.0)
    assert (body["declared"], body["paused"], body["waiting"], body["running"], body["oldest_wait_s"]) == (
        True, False, 0, 0, None)
    assert body["url"].endswith("/queues#queue-imports") and body["age_s"] == 300.0
    assert queue(any_idle_client, "imports") == body
    assert [q["name"] for q in any_idle_client.get("/api/queues").json()["queues"]] == ["default", "imports"]

    changed = put(any_idle_client, "/api/queues/imports", {"age_s": 60}).json()  # the limits stay
    assert (changed["concurrency"], changed["rate"], changed["age_s"]) == (4, "10/s", 60.0)
    cleared = put(any_idle_client, "/api/queues/imports", {"rate": None, "concurrency": None}).json()
    assert (cleared["concurrency"], cleared["rate"], cleared["rate_count"]) == (None, None, None)
    assert cleared["age_s"] == 60.0
    assert any_idle_client.put("/api/queues/mail").json()["declared"] is True  # no body: declared, no limits


@pytest.mark.parametrize(("body", "words"), [
    ({"concurrency": 0}, "concurrency must be at least 1, got 0"),
    ({"concurrency": -3}, "concurrency must be at least 1, got -3"),
    ({"concurrency": "4"}, "concurrency must be a whole number, got '4'"),
    ({"concurrency": 100_001}, "concurrency must be at most 100000"),
    ({"rate": "10"}, "rate '10' is not a rate; write it as starts per period, like 10/s"),
    ({"rate": "0/s"}, "rate: the number of starts must be a whole number from 1"),
    ({"rate": "5/0s"}, "rate: the period must be from 1 ms to 7 days"),
    ({"rate": 10}, "rate must be text, got 10"),
    ({"age_s": 0}, "age_s must be more than 0, got 0"),
    ({"age_s": 1e12}, "age_s must be at most"),
    ({"limit": 4}, "unknown field 'limit'"),
    ([4], "the body must be a JSON object"),
])
def test_bad_limits_are_refused_naming_the_field_and_change_nothing(
        idle_client: TestClient, body: Any, words: str) -> None:
    put(idle_client, "/api/queues/imports", {"concurrency": 2})
    refused = put(idle_client, "/api/queues/imports", body)
    assert refused.status_code == 422, refused.text
    assert words in refused.json()["error"], refused.json()
    assert queue(idle_client, "imports")["concurrency"] == 2


def test_a_name_no_queue_can_have_is_refused_when_declared_and_not_found_otherwise(idle_client: TestClient) -> None:
    refused = put(idle_client, "/api/queues/-imports", {})
    assert refused.status_code == 422
    assert refused.json()["error"].startswith("queue must be a name of 1 to 100 letters, digits")
    assert idle_client.get("/api/queues/-imports").status_code == 404
    missing = post(idle_client, "/api/queues/nope/pause")
    assert missing.status_code == 404 and missing.json()["error"] == "there is no queue 'nope'; queues: default"
    assert idle_client.get("/api/queues/nope").status_code == 404
    assert idle_client.delete("/api/queues/default").status_code == 405
    sent_text = idle_client.put("/api/queues/imports", content=b"concurrency=4",
                                headers={"content-type": "application/x-www-form-urlencoded"})
    assert sent_text.status_code == 415


def test_pause_and_resume_of_a_queue_keep_its_work_waiting_and_say_so(any_idle_client: TestClient) -> None:
    put(any_idle_client, "/api/queues/imports", {"concurrency": 2})
    made = post(any_idle_client, "/api/runs", {"kind": "echo", "queue": "imports",
                                               "tasks": [{"i": i} for i in range(3)]})
    assert made.status_code == 201, made.text
    paused = post(any_idle_client, "/api/queues/imports/pause")
    assert paused.status_code == 200
    body = paused.json()
    assert body["paused"] is True and body["paused_at"].endswith("Z")
    assert (body["waiting"], body["due"], body["running"]) == (3, 3, 0) and body["oldest_wait_s"] >= 0
    assert post(any_idle_client, "/api/queues/imports/pause").json()["paused_at"] == body["paused_at"]  # once
    resumed = post(any_idle_client, "/api/queues/imports/resume").json()
    assert (resumed["paused"], resumed["paused_at"]) == (False, None)


def test_submits_carry_queue_priority_and_key_into_the_run_and_task_json(any_idle_client: TestClient) -> None:
    put(any_idle_client, "/api/queues/imports", {})
    run = post(any_idle_client, "/api/runs", {"kind": "echo", "tasks": [{"i": 1}], "queue": "imports",
                                              "priority": 7, "key": "customer-42", "key_limit": 2})
    assert run.status_code == 201, run.text
    assert (run.json()["queue"], run.json()["paused"], run.json()["paused_at"]) == ("imports", False, None)
    task = any_idle_client.get(f"/api/runs/{run.json()['id']}").json()["tasks"][0]
    assert (task["queue"], task["priority"], task["key"], task["unique_key"]) == ("imports", 7, "customer-42", None)
    assert any_idle_client.get("/api/keys/customer-42").json() == {
        "name": "customer-42", "concurrency": 2, "rate": None, "rate_count": None, "rate_period_s": None, "running": 0}

    sim = post(any_idle_client, "/api/runs", {"kind": "sleep", "tasks": 2, "queue": "imports", "priority": -5})
    assert sim.status_code == 201, sim.text
    assert "queue" not in sim.json()["params"] and "priority" not in sim.json()["params"]  # flow, not parameters
    single = post(any_idle_client, "/api/tasks", {"kind": "echo", "queue": "imports", "priority": 3})
    assert single.status_code == 201, single.text
    assert (single.json()["queue"], single.json()["priority"]) == ("imports", 3)
    plain = post(any_idle_client, "/api/tasks", {"kind": "echo"}).json()
    assert (plain["queue"], plain["priority"], plain["key"]) == ("default", 0, None)  # default is always there


@pytest.mark.parametrize(("path", "change", "words"), [
    ("/api/tasks", {"queue": "mail"}, "queue 'mail' is not declared; the queues are: default, imports"),
    ("/api/runs", {"queue": "mail"}, "queue 'mail' is not declared; the queues are: default, imports"),
    ("/api/tasks", {"queue": "no spaces"}, "queue must be a name of 1 to 100 letters"),
    ("/api/runs", {"priority": 1001}, "priority must be at most 1000, got 1001"),
    ("/api/tasks", {"priority": 1.5}, "priority must be a whole number"),
    ("/api/tasks", {"key_limit": 2}, "key_limit needs a key"),
    ("/api/runs", {"key": "k", "key_limit": 0}, "key_limit must be at least 1, got 0"),
    ("/api/tasks", {"key": "   "}, "key must be text of 1 to 200 characters"),
    ("/api/tasks", {"unique_key": ""}, "unique_key must be text of 1 to 200 characters"),
    ("/api/runs", {"unique_key": "x"}, "unknown field 'unique_key'"),
])
def test_bad_flow_options_are_refused_naming_the_field_and_nothing_is_queued(
        idle_client: TestClient, path: str, change: dict[str, Any], words: str) -> None:
    put(idle_client, "/api/queues/imports", {})
    body = {"kind": "echo", **({"tasks": [{"i": 1}]} if path == "/api/runs" else {}), **change}
    refused = post(idle_client, path, body)
    assert refused.status_code == 422, refused.text
    assert words in refused.json()["error"], refused.json()
    assert idle_client.get("/api/runs").json()["total"] == 0 and idle_client.get("/api/tasks").json()["total"] == 0


def test_a_unique_key_duplicate_answers_200_with_the_task_that_holds_it(any_idle_client: TestClient) -> None:
    first = post(any_idle_client, "/api/tasks", {"kind": "echo", "args": {"n": 1}, "unique_key": "report-2026-12"})
    assert first.status_code == 201, first.text
    assert first.json()["unique_key"] == "report-2026-12" and "unique" not in first.json()
    again = post(any_idle_client, "/api/tasks", {"kind": "echo", "args": {"n": 2}, "unique_key": "report-2026-12"})
    assert again.status_code == 200, again.text
    body = again.json()
    assert (body["id"], body["unique"], body["args"]) == (first.json()["id"], True, {"n": 1})
    assert body["message"] == f"task {body['id']} with unique key 'report-2026-12' is already queued"
    assert again.headers["location"].endswith(f"/api/tasks/{body['id']}")
    assert any_idle_client.get("/api/tasks").json()["total"] == 1

    assert post(any_idle_client, f"/api/tasks/{body['id']}/cancel").status_code == 200
    after = post(any_idle_client, "/api/tasks", {"kind": "echo", "unique_key": "report-2026-12"})
    assert after.status_code == 201 and after.json()["id"] != body["id"]  # unique while active only


def test_a_concurrency_keys_limits_are_set_and_read_and_a_key_may_hold_a_slash(any_idle_client: TestClient) -> None:
    made = put(any_idle_client, "/api/keys/tenant/7", {"concurrency": 3, "rate": "5/30s"})
    assert made.status_code == 200, made.text
    assert made.json() == {"name": "tenant/7", "concurrency": 3, "rate": "5/30s", "rate_count": 5,
                           "rate_period_s": 30.0, "running": 0}
    assert any_idle_client.get("/api/keys/tenant%2F7").json() == made.json()
    kept = put(any_idle_client, "/api/keys/tenant/7", {"rate": None}).json()
    assert (kept["concurrency"], kept["rate"]) == (3, None)
    assert any_idle_client.get("/api/keys/nobody").status_code == 404
    refused = put(any_idle_client, "/api/keys/tenant/7", {"rate": "10"})
    assert refused.status_code == 422 and "rate '10' is not a rate" in refused.json()["error"]
    refused = put(any_idle_client, "/api/keys/tenant/7", {"concurrency": 0})
    assert refused.status_code == 422 and refused.json()["error"] == "concurrency must be at least 1, got 0"
    assert put(any_idle_client, "/api/keys/" + "k" * 201, {}).status_code == 422


def test_a_live_run_is_paused_and_resumed_and_an_ended_one_is_a_conflict(any_idle_client: TestClient) -> None:
    run = post(any_idle_client, "/api/runs", {"kind": "echo", "tasks": [{"i": 1}, {"i": 2}]}).json()
    paused = post(any_idle_client, f"/api/runs/{run['id']}/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["changed"] is True
    assert paused.json()["run"]["paused"] is True and paused.json()["run"]["paused_at"].endswith("Z")
    assert post(any_idle_client, f"/api/runs/{run['id']}/pause").json()["changed"] is False
    assert any_idle_client.get(f"/api/runs/{run['id']}").json()["paused"] is True
    resumed = post(any_idle_client, f"/api/runs/{run['id']}/resume").json()
    assert resumed["changed"] is True and resumed["run"]["paused"] is False
    assert post(any_idle_client, "/api/runs/99999/pause").status_code == 404
    post(any_idle_client, f"/api/runs/{run['id']}/cancel")
    ended = post(any_idle_client, f"/api/runs/{run['id']}/resume")
    assert ended.status_code == 409 and "only a live run can be paused or resumed" in ended.json()["error"]


def test_a_queue_at_its_limit_and_a_paused_run_say_so_while_a_worker_runs(client: TestClient) -> None:
    put(client, "/api/queues/imports", {"concurrency": 2})
    run = post(client, "/api/runs", {"kind": "t_blocking", "queue": "imports",
                                     "tasks": [{"seconds": 30} for _ in range(4)]}).json()
    wait_for(lambda: queue(client, "imports")["running"] == 2, 10, "two of the run's tasks to start")
    full = queue(client, "imports")
    assert (full["running"], full["concurrency"], full["waiting"], full["due"]) == (2, 2, 2, 2)
    assert client.get(f"/api/runs/{run['id']}").json()["counts"]["running"] == 2

    # In the default queue, which has no limit; held back a moment so that it is paused before it is due.
    held = post(client, "/api/runs", {"kind": "echo", "tasks": [{"i": 1}], "delay_s": 0.5}).json()
    post(client, f"/api/runs/{held['id']}/pause")
    other = post(client, "/api/runs", {"kind": "echo", "tasks": [{"i": 2}], "delay_s": 0.5}).json()
    wait_for(lambda: client.get(f"/api/runs/{other['id']}").json()["status"] == "completed", 10, "a run beside it")
    assert client.get(f"/api/runs/{held['id']}").json()["counts"]["queued"] == 1  # paused: not started
    assert "paused: this run is paused (resume it to go on)" in client.get(f"/runs/{held['id']}").text
    post(client, f"/api/runs/{held['id']}/resume")
    wait_for(lambda: client.get(f"/api/runs/{held['id']}").json()["status"] == "completed", 10, "it after resume")
    post(client, f"/api/runs/{run['id']}/cancel")


def test_the_openapi_description_lists_the_flow_routes_and_fields() -> None:
    from web.openapi import spec

    described = spec()
    paths = described["paths"]
    assert set(paths["/api/queues/{name}"]) == {"get", "put"} and set(paths["/api/keys/{name}"]) == {"get", "put"}
    for path in ("/api/queues", "/api/queues/{name}/pause", "/api/queues/{name}/resume", "/api/runs/{run_id}/pause",
                 "/api/runs/{run_id}/resume"):
        assert path in paths
    components = described["components"]["schemas"]
    assert {"queue", "priority", "key", "key_limit", "unique_key"} <= set(components["TaskRequest"]["properties"])
    assert components["TaskRequest"]["dependentRequired"] == {"key_limit": ["key"]}
    assert {"queue", "paused", "paused_at"} <= set(components["Run"]["required"])
    assert paths["/api/tasks"]["post"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TaskFound"}
