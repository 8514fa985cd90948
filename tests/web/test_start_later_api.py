"""Work that starts later over HTTP: start_at and delay_s in, scheduled_for out, and what pages say."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import wait_for

JSON = {"content-type": "application/json"}


def post(client: TestClient, path: str, body: Any) -> Any:
    return client.post(path, json=body, headers=JSON)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_a_task_given_a_start_time_with_an_offset_is_scheduled_for_that_instant_in_utc(
        any_idle_client: TestClient) -> None:
    start = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    text = start.astimezone(UTC).replace(tzinfo=None).isoformat() + "+00:00"
    berlin = (start + timedelta(hours=1)).replace(tzinfo=None).isoformat() + "+01:00"  # the same instant
    made = post(any_idle_client, "/api/tasks", {"kind": "echo", "args": {"x": 1}, "start_at": berlin})
    assert made.status_code == 201, made.text
    task = made.json()
    assert task["status"] == "queued" and utc(task["scheduled_for"]) == utc(text)
    assert task["scheduled_for"].endswith("Z")
    again = any_idle_client.get(f"/api/tasks/{task['id']}").json()
    assert again["scheduled_for"] == task["scheduled_for"]
    listed = any_idle_client.get("/api/tasks").json()["tasks"]
    assert [t["scheduled_for"] for t in listed if t["id"] == task["id"]] == [task["scheduled_for"]]


def test_a_run_given_a_delay_is_scheduled_that_far_ahead_and_others_say_null(any_idle_client: TestClient) -> None:
    before = datetime.now(UTC)
    run = post(any_idle_client, "/api/runs", {"kind": "echo", "tasks": [{"i": 1}, {"i": 2}], "delay_s": 600}).json()
    at = utc(run["scheduled_for"])
    assert before + timedelta(seconds=590) < at < datetime.now(UTC) + timedelta(seconds=610)
    tasks = any_idle_client.get(f"/api/runs/{run['id']}").json()["tasks"]
    assert {t["scheduled_for"] for t in tasks} == {run["scheduled_for"]}
    sim = post(any_idle_client, "/api/runs", {"tasks": 2, "kind": "sleep", "delay_s": 60}).json()
    assert sim["params"].keys().isdisjoint({"start_at", "delay_s"})  # not taken for the kind's parameters
    plain = post(any_idle_client, "/api/runs", {"kind": "echo", "tasks": [{}]}).json()
    assert plain["scheduled_for"] is None
    assert any_idle_client.get(f"/api/runs/{plain['id']}").json()["scheduled_for"] is None


@pytest.mark.parametrize(("body", "words"), [
    ({"start_at": "2026-12-03T14:05:00"}, "start_at 2026-12-03T14:05:00 has no time zone"),
    ({"start_at": "2099-01-01T00:00:00Z"}, "start_at 2099-01-01T00:00:00+00:00 is more than a year away"),
    ({"start_at": "2026-12-03T14:05:00Z", "delay_s": 5}, "give start_at or delay_s, not both"),
    ({"delay_s": -1}, "delay_s must be at least 0, got -1"),
    ({"delay_s": 10**9}, "delay_s must be at most"),
    ({"start_at": "tomorrow"}, "start_at 'tomorrow' is not an RFC 3339 time"),
    ({"start_at": "0001-01-01T00:00:00+23:59"}, "start_at 0001-01-01T00:00:00+23:59 is out of range"),
    ({"start_at": 1733234700}, "start_at must be"),
])
@pytest.mark.parametrize("path", ["/api/tasks", "/api/runs"])
def test_a_bad_start_is_refused_naming_the_field_and_writes_nothing(
        idle_client: TestClient, path: str, body: dict[str, Any], words: str) -> None:
    shape = {"kind": "echo", "args": {}} if path == "/api/tasks" else {"kind": "echo", "tasks": [{}]}
    refused = post(idle_client, path, {**shape, **body})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"].startswith(words), refused.json()
    assert idle_client.get(path).json()["total"] == 0


def test_the_run_page_says_when_a_scheduled_run_starts_instead_of_waiting_for_a_slot(idle_client: TestClient) -> None:
    run = post(idle_client, "/api/runs", {"kind": "echo", "tasks": [{}], "delay_s": 300}).json()
    page = idle_client.get(f"/runs/{run['id']}").text
    said = re.search(r"Scheduled for (?:\d{4}-\d\d-\d\d )?\d\d:\d\d(?::\d\d)? UTC \(in (\d) min\)", page)
    assert said, page[page.find('class="times"'):][:400]
    assert said.group(1) in ("4", "5")
    assert "waiting for" not in page and "to start at" in page


def test_a_scheduled_runs_status_fragment_changes_when_its_start_comes(any_idle_client: TestClient) -> None:
    run = post(any_idle_client, "/api/runs", {"kind": "echo", "tasks": [{}], "delay_s": 1.5}).json()
    first = any_idle_client.get(f"/runs/{run['id']}/status")
    assert "Scheduled for" in first.text
    etag = first.headers["etag"]

    def moved() -> Any:
        answer = any_idle_client.get(f"/runs/{run['id']}/status", headers={"If-None-Match": etag})
        return answer if answer.status_code == 200 and "Scheduled for" not in answer.text else None

    after = wait_for(moved, timeout_s=10, what="the fragment to stop saying 'Scheduled for'")
    assert after.headers["etag"] != etag  # type: ignore[attr-defined]
    assert "waiting for a worker" in after.text  # type: ignore[attr-defined]  # no supervisor in this app


def test_the_task_page_says_when_it_starts_until_then(idle_client: TestClient) -> None:
    later = post(idle_client, "/api/tasks", {"kind": "echo", "args": {}, "delay_s": 7200}).json()
    assert re.search(r"Scheduled for [\d:\- ]+ UTC \(in 2 h\)", idle_client.get(f"/tasks/{later['id']}").text)
    now = post(idle_client, "/api/tasks", {"kind": "echo", "args": {}}).json()
    assert "Scheduled for" not in idle_client.get(f"/tasks/{now['id']}").text


def test_a_started_task_no_longer_says_scheduled(client: TestClient) -> None:
    task = post(client, "/api/tasks", {"kind": "echo", "args": {"x": 1}, "delay_s": 0.3}).json()
    wait_for(lambda: client.get(f"/api/tasks/{task['id']}").json()["status"] == "succeeded", 10, "the task")
    page = client.get(f"/tasks/{task['id']}").text
    assert "Scheduled for" not in page and "to start at" in page


def test_the_start_form_takes_a_utc_time_or_a_delay(idle_client: TestClient) -> None:
    base = {"tasks": "2", "kind": "sleep", "min_seconds": "0", "max_seconds": "0.1"}
    later = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    made = idle_client.post("/runs", data={**base, "start_at_utc": later}, follow_redirects=False)
    assert made.status_code == 303, made.text
    run_id = int(made.headers["location"].rsplit("/", 1)[1])
    assert idle_client.get(f"/api/runs/{run_id}").json()["scheduled_for"] == later + ":00Z"
    delayed = idle_client.post("/runs", data={**base, "delay_s": "90"}, follow_redirects=False)
    assert delayed.status_code == 303
    both = idle_client.post("/runs", data={**base, "delay_s": "90", "start_at_utc": later})
    assert both.status_code == 422 and "give start_at or delay_s, not both" in both.text
    negative = idle_client.post("/runs", data={**base, "delay_s": "-5"})
    assert negative.status_code == 422 and "delay_s must be at least 0" in negative.text
    assert 'name="start_at_utc"' in idle_client.get("/").text
