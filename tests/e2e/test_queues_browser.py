"""Queues in a real browser against a real `tenure serve`: the table, a queue at its limit, pause and
resume by button, and a run paused from its page. About 10 s: the imports queue's sleeps keep it
full while the page is read; the screenshot is the README's.
"""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

import pytest

from tests.acceptance.procs import REPO, Server
from tests.conftest import report, wait_for
from tests.e2e.conftest import SCREENSHOTS
from tests.e2e.test_accessibility import BLOCKING, axe

pytestmark = pytest.mark.acceptance
DOCS = REPO / "docs" / "screenshots"
SLEEP = {"min_seconds": 120, "max_seconds": 120, "failure_rate": 0, "transient_rate": 0}


def api(server: Server, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.url + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def queue(server: Server, name: str) -> dict[str, Any]:
    return api(server, "GET", f"/api/queues/{name}")  # type: ignore[no-any-return]


def test_the_queues_page_shows_limits_and_its_pause_buttons_work(browser: Any, server: Server) -> None:
    api(server, "PUT", "/api/queues/imports", {"concurrency": 3, "rate": "10/s"})
    api(server, "PUT", "/api/queues/reports", {"concurrency": 4, "rate": "5/m"})
    api(server, "PUT", "/api/queues/mail", {"concurrency": 10})
    imports = api(server, "POST", "/api/runs", {"kind": "sleep", "tasks": 8, "name": "nightly import",
                                                "queue": "imports", **SLEEP})
    reports = api(server, "POST", "/api/runs", {"kind": "sleep", "tasks": 1, "name": "monthly report",
                                                "queue": "reports", **SLEEP})
    wait_for(lambda: queue(server, "imports")["running"] == 3 and queue(server, "reports")["running"] == 1, 20,
             "the imports queue to fill and the report to start")

    page = browser.new_page(viewport={"width": 1280, "height": 760})
    page.set_default_timeout(20_000)
    page.goto(server.url + "/")
    page.click("nav >> text=Queues")
    page.wait_for_url("**/queues")
    full = page.locator("tr#queue-imports")
    assert "● at its limit" in full.inner_text() and "3 / 3" in full.inner_text()
    assert full.locator("td").nth(1).inner_text().strip() == "5"  # waiting
    assert "10/s" in full.inner_text()

    page.get_by_role("button", name="Pause mail").click()
    page.wait_for_url("**/queues#queue-mail")
    mail = page.locator("tr#queue-mail")
    assert "‖ paused" in mail.inner_text()
    assert mail.get_by_role("button", name="Resume mail").count() == 1
    assert queue(server, "mail")["paused"] is True

    # Work sent to a paused queue waits, whichever worker is free.
    newsletter = api(server, "POST", "/api/runs", {"kind": "echo", "name": "newsletter", "queue": "mail",
                                                   "tasks": [{"to": f"reader-{i}@example.com"} for i in range(12)]})
    page.reload()
    mail = page.locator("tr#queue-mail")
    assert mail.locator("td").nth(1).inner_text().strip() == "12"
    assert re.search(r"\d+ s|under 1 s", mail.locator("td").nth(4).inner_text())
    assert api(server, "GET", f"/api/runs/{newsletter['id']}")["counts"]["queued"] == 12
    page.emulate_media(color_scheme="light")
    found = axe(page)
    report("axe, queues: " + (", ".join(f"{v['id']} ({v['impact']})" for v in found) or "no violations"))
    assert not [v for v in found if v["impact"] in BLOCKING], found
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    DOCS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "queues.png"), full_page=True)
    page.screenshot(path=str(DOCS / "queues.png"), full_page=True)

    # The run's page says what holds it back, and pauses the run itself.
    page.goto(f"{server.url}/runs/{newsletter['id']}")
    assert "queue mail is paused" in page.locator(".bar-legend .times").inner_text()
    page.get_by_role("button", name="Pause run").click()
    page.wait_for_url(f"**/runs/{newsletter['id']}")
    assert "‖ paused" in page.locator("#actions").inner_text()
    assert api(server, "GET", f"/api/runs/{newsletter['id']}")["paused"] is True

    page.goto(server.url + "/queues")
    page.get_by_role("button", name="Resume mail").click()
    page.wait_for_url("**/queues#queue-mail")
    assert page.locator("tr#queue-mail").get_by_role("button", name="Pause mail").count() == 1
    assert queue(server, "mail")["waiting"] == 12  # its run is still paused
    api(server, "POST", f"/api/runs/{newsletter['id']}/resume")
    wait_for(lambda: api(server, "GET", f"/api/runs/{newsletter['id']}")["status"] == "completed", 20,
             "the newsletter to go out once its queue and run are resumed")
    for run in (imports, reports):
        api(server, "POST", f"/api/runs/{run['id']}/cancel")
