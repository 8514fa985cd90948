"""The schedules API against the real app and database: make, read, page fires, pause, resume, fire, delete.

Slots are fired with ``fire_due_schedules(now=...)`` (an injected clock, naive UTC), so a test
handles 02:00 in Berlin without waiting for it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

import service

JSON = {"content-type": "application/json"}
NIGHTLY = {"name": "nightly", "cron": "0 2 * * *", "timezone": "Europe/Berlin",
           "task": {"kind": "echo", "args": {"x": 1}}}


def post(client: TestClient, path: str, body: Any = None) -> Any:
    return client.post(path, json=body, headers=JSON) if body is not None else client.post(path)


def engine(client: TestClient) -> service.Tenure:
    t: service.Tenure = client.app.state.tenure  # type: ignore[attr-defined]
    return t


def test_a_schedule_is_made_and_read_by_id_or_name_in_words(any_idle_client: TestClient) -> None:
    made = post(any_idle_client, "/api/schedules", NIGHTLY)
    assert made.status_code == 201, made.text
    body = made.json()
    assert made.headers["location"].endswith(f"/api/schedules/{body['id']}")
    assert body["description"] == "At 02:00 every day, Europe/Berlin"
    assert (body["cron"], body["timezone"]) == ("0 2 * * *", "Europe/Berlin")
    assert (body["target"], body["kind"]) == ("task", "echo")
    assert body["starts"]["args"] == {"x": 1}
    assert (body["catch_up"], body["catch_up_max"], body["overlap"], body["grace_s"]) == ("latest", 100, "skip", 30.0)
    assert len(body["upcoming"]) == 3 and all(at.endswith("T01:00:00Z") for at in body["upcoming"])  # 02:00 CET
    assert body["fires"] == [] and body["paused"] is False and body["url"].endswith(f"/schedules#schedule-{body['id']}")
    assert any_idle_client.get(f"/api/schedules/{body['id']}").json() == body
    assert any_idle_client.get("/api/schedules/nightly").json() == body
    assert [s["name"] for s in any_idle_client.get("/api/schedules").json()["schedules"]] == ["nightly"]


def test_a_schedule_named_with_digits_is_found_by_its_name_too(idle_client: TestClient) -> None:
    post(idle_client, "/api/schedules", NIGHTLY)
    made = post(idle_client, "/api/schedules", {**NIGHTLY, "name": "2026"}).json()
    assert idle_client.get("/api/schedules/2026").json()["id"] == made["id"]
    assert idle_client.get("/api/schedules/1").json()["name"] == "nightly"  # an id first


@pytest.mark.parametrize(("change", "words"), [
    ({"cron": "0 2 * *"}, "cron '0 2 * *' is not a valid expression"),
    ({"cron": "0 0 30 2 *"}, "cron '0 0 30 2 *' is not a valid expression"),
    ({"timezone": "Mars/Olympus"}, "timezone 'Mars/Olympus' is not a time zone this machine knows"),
    ({"catch_up_max": 0}, "catch_up_max must be at least 1, got 0"),
    ({"catch_up_max": 10_001}, "catch_up_max must be at most 10000"),
    ({"catch_up": "sometimes"}, "catch_up must be one of"),
    ({"overlap": "never"}, "overlap must be one of"),
    ({"grace_s": 0}, "grace_s must be more than 0, got 0"),
    ({"task": None}, "a schedule starts a task or a run"),
    ({"run": {"kind": "echo", "count": 2}}, "a schedule starts a task or a run"),
    ({"task": {"kind": "nope"}}, "task.kind must be one of"),
    ({"name": "   "}, "name must"),
    ({"extra": 1}, "unknown field 'extra'"),
])
def test_a_bad_schedule_is_refused_naming_the_field(
        idle_client: TestClient, change: dict[str, Any], words: str) -> None:
    refused = post(idle_client, "/api/schedules", {**NIGHTLY, **change})
    assert refused.status_code == 422, refused.text
    assert words in refused.json()["error"], refused.json()
    assert idle_client.get("/api/schedules").json()["schedules"] == []


def test_a_second_schedule_of_a_name_is_a_conflict_and_an_unknown_one_is_not_found(any_idle_client: TestClient) -> None:
    assert post(any_idle_client, "/api/schedules", NIGHTLY).status_code == 201
    again = post(any_idle_client, "/api/schedules", {**NIGHTLY, "cron": "@hourly"})
    assert again.status_code == 409 and "nightly" in again.json()["error"]
    for method, path in [("GET", "/api/schedules/weekly"), ("GET", "/api/schedules/999"),
                         ("POST", "/api/schedules/weekly/pause"), ("POST", "/api/schedules/999/resume"),
                         ("POST", "/api/schedules/weekly/fire"), ("DELETE", "/api/schedules/weekly"),
                         ("GET", "/api/schedules/weekly/fires"), ("GET", "/api/schedules/99999999999")]:
        answer = any_idle_client.request(method, path)
        assert answer.status_code == 404 and answer.json()["error"], (method, path, answer.text)


def test_slots_fired_show_as_fires_with_their_outcome_and_the_works_status(any_idle_client: TestClient) -> None:
    post(any_idle_client, "/api/schedules", {**NIGHTLY, "overlap": "allow",
                                             "run": {"kind": "echo", "tasks": [{"a": 1}, {"a": 2}]}, "task": None})
    t = engine(any_idle_client)
    first = t.schedule("nightly").next_slot_at
    assert first is not None
    t.fire_due_schedules(now=first + timedelta(seconds=1))
    t.fire_due_schedules(now=first + timedelta(days=3, hours=1))  # two missed, the latest caught up
    fires = any_idle_client.get("/api/schedules/nightly/fires").json()["fires"]
    assert [(f["outcome"], f["catch_up"], f["slots"]) for f in fires] == [
        ("fired", True, 1), ("missed", False, 2), ("fired", False, 1)]
    caught, missed, on_time = fires
    assert caught["slot_at"] == (first + timedelta(days=3)).isoformat() + "Z"
    assert "missed while no worker fired them" in missed["reason"] and missed["run_id"] is None
    assert on_time["status"] == "running" and on_time["url"].endswith(f"/runs/{on_time['run_id']}")
    assert any_idle_client.get(f"/api/runs/{on_time['run_id']}").json()["total"] == 2
    older = any_idle_client.get(f"/api/schedules/nightly/fires?limit=1&before={caught['id']}").json()["fires"]
    assert [f["id"] for f in older] == [missed["id"]]
    assert any_idle_client.get("/api/schedules/nightly").json()["fires"] == fires
    bad = any_idle_client.get("/api/schedules/nightly/fires?limit=0")
    assert bad.status_code == 422 and "limit" in bad.json()["error"]


def test_pause_resume_fire_now_and_delete(any_idle_client: TestClient) -> None:
    made = post(any_idle_client, "/api/schedules", NIGHTLY).json()
    t = engine(any_idle_client)
    first = t.schedule("nightly").next_slot_at
    assert first is not None
    paused = post(any_idle_client, "/api/schedules/nightly/pause").json()
    assert paused["paused"] is True and paused["upcoming"] == []
    assert t.fire_due_schedules(now=first + timedelta(days=1)) == []  # a paused schedule fires no slot
    fired = post(any_idle_client, f"/api/schedules/{made['id']}/fire").json()  # by hand, paused or not
    assert fired["outcome"] == "fired" and fired["task_id"] is not None
    assert fired["url"].endswith(f"/tasks/{fired['task_id']}")
    assert fired["schedule"]["fires"][0]["slot_at"] is None and fired["schedule"]["fires"][0]["status"] == "queued"
    assert any_idle_client.get(f"/api/tasks/{fired['task_id']}").json()["args"] == {"x": 1}
    resumed = post(any_idle_client, "/api/schedules/nightly/resume").json()
    assert resumed["paused"] is False and len(resumed["upcoming"]) == 3
    gone = any_idle_client.delete("/api/schedules/nightly")
    assert gone.status_code == 200 and gone.json() == {"deleted": "nightly"}
    assert any_idle_client.get("/api/schedules/nightly").status_code == 404
    assert any_idle_client.get(f"/api/tasks/{fired['task_id']}").status_code == 200  # what it started stays


def test_a_schedule_body_that_is_not_json_or_too_big_is_refused(idle_client: TestClient) -> None:
    assert idle_client.post("/api/schedules", content=b"{", headers=JSON).status_code == 400
    assert idle_client.post("/api/schedules", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    big = {**NIGHTLY, "task": {"kind": "echo", "args": {"x": "y" * (1024 * 1024)}}}
    assert post(idle_client, "/api/schedules", big).status_code == 413
    assert idle_client.post("/api/schedules", content=b"[]", headers=JSON).status_code == 422
