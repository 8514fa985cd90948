"""Schedules in a real browser against a real `tenure serve`: the list, fire now, pause and resume,
and a run made to start later. About 10 s: a schedule with a seconds field fires every 2 s, so
the page has fires of its own (and skips, while the previous run still sleeps) without waiting
for 02:00; the screenshots are the README's.
"""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

import pytest

from tests.acceptance.procs import REPO, Server
from tests.conftest import wait_for
from tests.e2e.conftest import SCREENSHOTS

pytestmark = pytest.mark.acceptance
DOCS = REPO / "docs" / "screenshots"


def api(server: Server, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.url + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def fires(server: Server, name: str) -> list[dict[str, Any]]:
    return api(server, "GET", f"/api/schedules/{name}/fires")["fires"]  # type: ignore[no-any-return]


def test_the_schedules_page_lists_fires_and_its_buttons_work(browser: Any, server: Server) -> None:
    api(server, "POST", "/api/schedules", {
        "name": "nightly-import", "cron": "0 2 * * *", "timezone": "Europe/Berlin", "overlap": "queue",
        "run": {"kind": "echo", "name": "import", "tasks": [{"file": f"part-{i}.csv"} for i in range(3)]}})
    api(server, "POST", "/api/schedules", {
        "name": "pulse", "cron": "*/2 * * * * *", "overlap": "skip",
        "run": {"kind": "sleep", "count": 2, "params": {"min_seconds": 3, "max_seconds": 3, "failure_rate": 0,
                                                        "transient_rate": 0}}})
    api(server, "POST", "/api/schedules", {"name": "weekly-report", "cron": "30 6 * * 1",
                                           "timezone": "America/New_York", "task": {"kind": "echo", "args": {}}})
    api(server, "POST", "/api/schedules/weekly-report/pause")
    # The pulse fires every 2 s; its run sleeps 3 s, so the slot after a fire is skipped.
    wait_for(lambda: {f["outcome"] for f in fires(server, "pulse")} >= {"fired", "skipped"}, 20,
             "the pulse schedule to fire and skip")
    api(server, "POST", "/api/schedules/pulse/pause")  # still from here on: the screenshot shows what it did

    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(20_000)
    page.goto(server.url + "/")
    page.click("nav >> text=Schedules")
    page.wait_for_url("**/schedules")
    nightly = page.locator("article.schedule", has_text="nightly-import")
    assert "At 02:00 every day, Europe/Berlin" in nightly.inner_text()
    assert re.search(r"\d{4}-\d\d-\d\d 02:00 CET \(in [^)]+\)", nightly.inner_text())

    nightly.get_by_role("button", name="Fire nightly-import now").click()
    page.wait_for_url("**/schedules#schedule-*")
    nightly = page.locator("article.schedule", has_text="nightly-import")
    fired = nightly.locator("li.fire").first
    assert "fired by hand" in fired.inner_text()
    assert fired.locator("a", has_text="run #").count() == 1

    nightly.get_by_role("button", name="Pause nightly-import").click()
    page.wait_for_url("**/schedules#schedule-*")
    nightly = page.locator("article.schedule", has_text="nightly-import")
    assert "‖ paused" in nightly.inner_text()
    assert nightly.locator("time").count() == 0
    assert api(server, "GET", "/api/schedules/nightly-import")["paused"] is True
    nightly.get_by_role("button", name="Resume nightly-import").click()
    page.wait_for_url("**/schedules#schedule-*")
    nightly = page.locator("article.schedule", has_text="nightly-import")
    assert nightly.get_by_role("button", name="Pause nightly-import").count() == 1
    assert nightly.locator("time").count() == 3
    assert api(server, "GET", "/api/schedules/nightly-import")["paused"] is False

    pulse = page.locator("article.schedule", has_text="pulse")
    assert pulse.locator("li.fire.out-skipped").count() >= 1
    assert "had not ended" in pulse.locator("li.fire.out-skipped").first.inner_text()
    page.goto(server.url + "/schedules")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    DOCS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "schedules.png"), full_page=True)
    page.screenshot(path=str(DOCS / "schedules.png"), full_page=True)

    # Delete asks first: the button is inside a closed <details>.
    weekly = page.locator("article.schedule", has_text="weekly-report")
    assert not weekly.get_by_role("button", name="Delete weekly-report").is_visible()
    weekly.locator("summary", has_text="Delete").click()
    weekly.get_by_role("button", name="Delete weekly-report").click()
    page.wait_for_url("**/schedules")
    assert page.locator("article.schedule", has_text="weekly-report").count() == 0


def test_a_run_made_to_start_later_says_when(browser: Any, server: Server) -> None:
    run = api(server, "POST", "/api/runs", {"kind": "echo", "name": "report at three",
                                            "tasks": [{"page": i} for i in range(12)], "delay_s": 185})
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(20_000)
    page.goto(f"{server.url}/runs/{run['id']}")
    times = page.locator(".bar-legend .times")
    said = times.inner_text()
    assert re.search(r"Scheduled for (\d{4}-\d\d-\d\d )?\d\d:\d\d(:\d\d)? UTC \(in 3 min\)", said), said
    assert "waiting for" not in times.inner_text()
    page.screenshot(path=str(SCREENSHOTS / "scheduled-run.png"), full_page=True)
    page.screenshot(path=str(DOCS / "scheduled-run.png"), full_page=True)
    api(server, "POST", f"/api/runs/{run['id']}/cancel")
    page.wait_for_function("!document.querySelector('.bar-legend .times').textContent.includes('Scheduled for')")
