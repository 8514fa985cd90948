"""The schedules page and what run and task pages say of the schedule that started them."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from starlette.testclient import TestClient

import service

JSON = {"content-type": "application/json"}
NIGHTLY = {"name": "nightly", "cron": "0 2 * * *", "timezone": "Europe/Berlin", "overlap": "allow",
           "run": {"kind": "echo", "tasks": [{"a": 1}]}}


def engine(client: TestClient) -> service.Tenure:
    t: service.Tenure = client.app.state.tenure  # type: ignore[attr-defined]
    return t


def card(page: str, schedule_id: int) -> str:
    """The schedule's own article on the page."""
    found = re.search(rf'<article class="schedule[^"]*" id="schedule-{schedule_id}".*?</article>', page, re.S)
    assert found, page[:2000]
    return found.group(0)


def make(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    made = client.post("/api/schedules", json=body, headers=JSON)
    assert made.status_code == 201, made.text
    return made.json()  # type: ignore[no-any-return]


def test_the_page_shows_a_schedule_in_words_its_next_times_in_its_zone_and_its_fires(
        any_idle_client: TestClient) -> None:
    made = make(any_idle_client, NIGHTLY)
    t = engine(any_idle_client)
    first = t.schedule("nightly").next_slot_at
    assert first is not None
    t.fire_due_schedules(now=first + timedelta(seconds=1))
    t.fire_due_schedules(now=first + timedelta(days=3, hours=1))
    page = any_idle_client.get("/schedules")
    assert page.status_code == 200
    html = card(page.text, made["id"])
    assert "At 02:00 every day, Europe/Berlin" in html and "<code>0 2 * * *</code>" in html
    assert "catch-up latest · overlap allow · grace 30 s" in html and "a run of 1 echo tasks" in html
    upcoming = re.findall(r"<li><time>(\d{4}-\d\d-\d\d \d\d:\d\d) (\w+)</time> <small>\(([^)]+)\)", html)
    assert len(upcoming) == 3 and {zone for _, zone, _ in upcoming} == {"CET"}
    assert all(stamp.endswith("02:00") and words.startswith("in ") for stamp, _, words in upcoming)
    fires = re.findall(r'<li class="fire out-(\w+)">(.*?)</li>', html, re.S)
    assert [outcome for outcome, _ in fires] == ["fired", "missed", "fired"]
    caught, missed, on_time = (text for _, text in fires)
    slot = (first + timedelta(days=3)).strftime("%Y-%m-%d")
    assert "catch-up</span> for the slot at " + slot + " 02:00 CET" in caught
    assert "2 slots" in missed and "missed while no worker fired them" in missed
    run_id = t.schedule("nightly").fires[-1].run_id
    assert f'href="http://testserver/runs/{run_id}"' in on_time and "▶ running" in on_time
    assert "catch-up" not in on_time


def test_the_run_page_says_which_schedule_and_slot_started_it(idle_client: TestClient) -> None:
    make(idle_client, NIGHTLY)
    t = engine(idle_client)
    first = t.schedule("nightly").next_slot_at
    assert first is not None
    t.fire_due_schedules(now=first + timedelta(days=2, hours=1))  # one missed, the latest caught up
    caught = t.schedule("nightly").fires[0]
    assert caught.catch_up and caught.run_id is not None
    page = idle_client.get(f"/runs/{caught.run_id}").text
    slot = (first + timedelta(days=2)).strftime("%Y-%m-%d")
    said = re.search(r'Started by schedule <a href="([^"]+)">nightly</a> for the slot at ([^<]+)</p>', page)
    assert said, page[:3000]
    assert said.group(1).endswith(f"/schedules#schedule-{t.schedule('nightly').id}")
    assert said.group(2) == f"{slot} 02:00 CET (catch-up)"
    plain = idle_client.post("/api/runs", json={"kind": "echo", "tasks": [{}]}, headers=JSON).json()
    assert "Started by schedule" not in idle_client.get(f"/runs/{plain['id']}").text


def test_the_task_page_says_a_schedule_fired_it_by_hand(idle_client: TestClient) -> None:
    make(idle_client, {"name": "report", "cron": "30 6 * * 1", "timezone": "America/New_York",
                       "task": {"kind": "echo", "args": {"x": 1}}})
    fired = idle_client.post("/api/schedules/report/fire").json()
    page = idle_client.get(f"/tasks/{fired['task_id']}").text
    assert re.search(r'Started by schedule <a href="[^"]+#schedule-\d+">report</a>, fired by hand', page)
    listing = idle_client.get("/schedules").text
    assert "At 06:30 on Monday, America/New_York" in listing
    assert re.search(r"\d{4}-\d\d-\d\d 06:30 EST</time>", listing)  # its own zone, with its abbreviation


def test_pause_resume_fire_and_delete_buttons_post_and_come_back(idle_client: TestClient) -> None:
    made = make(idle_client, NIGHTLY)
    html = card(idle_client.get("/schedules").text, made["id"])
    assert ">Pause nightly</button>" in html and "Resume" not in html
    back = idle_client.post(f"/schedules/{made['id']}/pause", follow_redirects=False)
    assert back.status_code == 303 and back.headers["location"].endswith(f"/schedules#schedule-{made['id']}")
    html = card(idle_client.get("/schedules").text, made["id"])
    assert ">Resume nightly</button>" in html and "‖ paused" in html and "<time>" not in html
    idle_client.post(f"/schedules/{made['id']}/resume")
    assert "<time>" in card(idle_client.get("/schedules").text, made["id"])
    idle_client.post("/schedules/nightly/fire")  # by name too
    html = card(idle_client.get("/schedules").text, made["id"])
    assert "fired by hand" in html and "/runs/" in html
    assert "Delete <strong>nightly</strong> and its fire history?" in html  # asked inside a <details> first
    gone = idle_client.post(f"/schedules/{made['id']}/delete", follow_redirects=False)
    assert gone.status_code == 303
    assert f'id="schedule-{made["id"]}"' not in idle_client.get("/schedules").text
    assert idle_client.post("/schedules/nightly/pause").status_code == 404
    assert idle_client.post("/schedules/1/explode").status_code == 404


def test_the_form_makes_a_schedule_or_says_what_was_wrong(idle_client: TestClient) -> None:
    form = {"name": "hourly", "cron": "@hourly", "timezone": "UTC", "kind": "echo", "target": "task",
            "args": '{"x": 2}', "catch_up": "none", "overlap": "queue"}
    made = idle_client.post("/schedules", data=form, follow_redirects=False)
    assert made.status_code == 303, made.text
    view = engine(idle_client).schedule("hourly")
    assert (view.catch_up, view.overlap, view.spec["row"]["args"]) == ("none", "queue", {"x": 2})
    for change, words in [({"cron": "every day"}, "cron 'every day' is not a valid expression"),
                          ({"name": "x", "timezone": "Berlin"}, "timezone 'Berlin' is not a time zone"),
                          ({"name": "y", "args": "{x"}, "args is not valid JSON"),
                          ({"name": "z", "target": "run", "count": ""}, "count must be a whole number"),
                          ({}, "a schedule named 'hourly' exists already")]:
        refused = idle_client.post("/schedules", data={**form, **change})
        assert refused.status_code in (409, 422), refused.text
        assert "Not made:</strong> " + words in refused.text.replace("&#39;", "'"), (change, refused.text[-3000:])
    runs = idle_client.post("/schedules", data={**form, "name": "runs", "target": "run", "count": "3",
                                                "args": '{"min_seconds": 0}', "kind": "sleep"}, follow_redirects=False)
    assert runs.status_code == 303 and engine(idle_client).schedule("runs").spec["total"] == 3


def test_every_page_links_the_schedules(idle_client: TestClient) -> None:
    assert 'href="http://testserver/schedules">Schedules</a>' in idle_client.get("/").text
    assert "No schedule yet" in idle_client.get("/schedules").text
