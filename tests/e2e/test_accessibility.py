"""Accessibility in a real browser: axe-core on the pages people use, and the keyboard alone.

axe-core is vendored for these tests only (tests/e2e/vendor); tenure never serves it. Each page
is checked in the light and the dark scheme (pico follows the system's), for WCAG 2.1 A and AA.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.procs import Server
from tests.conftest import report, wait_for

pytestmark = pytest.mark.acceptance

AXE = Path(__file__).parent / "vendor" / "axe-core-4.14.1.min.js"
BLOCKING = ("serious", "critical")
JSON_HEADERS = {"Content-Type": "application/json"}
# A finished run with failures, retries and a success or two: what a summary has to show.
FINISHED = {"tasks": 12, "name": "finished", "min_seconds": 0.05, "max_seconds": 0.2, "failure_rate": 0.3,
            "transient_rate": 0.3, "seed": 7}
# A run that is still going when the pages are checked.
LIVE = {"tasks": 20, "name": "live", "min_seconds": 20, "max_seconds": 40, "failure_rate": 0.0,
        "transient_rate": 0.0, "seed": 3}


def axe(page: Any) -> list[dict[str, Any]]:
    """The violations axe finds on the page as it is now (WCAG 2.0/2.1 A and AA rules)."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = page.evaluate("""async () => {
        const rules = {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']};
        const r = await axe.run(document, {runOnly: rules});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                       nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
    }""")
    return found


def post(server: Server, page: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = page.request.post(server.url + path, data=json.dumps(body), headers=JSON_HEADERS)
    assert answer.ok, answer.text()
    made: dict[str, Any] = answer.json()
    return made


def test_home_live_and_finished_run_pages_have_no_serious_violations(browser: Any, server: Server) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(30_000)
    page.goto(server.url + "/")
    finished = post(server, page, "/api/runs", FINISHED)["id"]
    wait_for(lambda: page.request.get(f"{server.url}/api/runs/{finished}").json()["status"] != "running", 30,
             "the short run to finish")
    live = post(server, page, "/api/runs", LIVE)["id"]
    pages = {"home": "/", "live run": f"/runs/{live}", "finished run": f"/runs/{finished}",
             "a task": f"/tasks/{finished}"}
    blocking: dict[str, list[dict[str, Any]]] = {}
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        for name, path in pages.items():
            page.goto(server.url + path)
            if name == "live run":
                page.wait_for_function("document.querySelectorAll('.tile.st-running').length > 0")
            found = axe(page)
            report(f"axe, {name} ({scheme}): " + (", ".join(f"{v['id']} ({v['impact']}, {len(v['nodes'])} nodes)"
                                                             for v in found) or "no violations"))
            bad = [v for v in found if v["impact"] in BLOCKING]
            if bad:
                blocking[f"{name} ({scheme})"] = bad
    assert not blocking, json.dumps(blocking, indent=1)
    page.close()


def tab_to(page: Any, selector: str, most: int = 80) -> None:
    """Press Tab until the element ``selector`` has the focus (as a keyboard user would)."""
    for _ in range(most):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement && document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{selector} is not reachable with Tab within {most} presses")


def test_start_open_a_tile_cancel_and_retry_with_the_keyboard_alone(browser: Any, server: Server) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(30_000)
    page.goto(server.url + "/")
    tab_to(page, "input[name=tasks]")
    page.keyboard.press("Control+A")
    page.keyboard.type("6")
    for name, value in (("min_seconds", "30"), ("max_seconds", "40"), ("failure_rate", "0"),
                        ("transient_rate", "0"), ("name", "by keyboard")):
        tab_to(page, f"input[name={name}]")
        page.keyboard.press("Control+A")
        page.keyboard.type(value)
    tab_to(page, "form button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_url("**/runs/*")
    run_id = int(page.url.rsplit("/", 1)[1])
    assert "by keyboard" in page.inner_text("h1")

    # Open a running tile: its details show, with its status.
    page.wait_for_function("document.querySelectorAll('.tile.st-running').length > 0")
    tab_to(page, "#tile-d-1 > summary")
    page.keyboard.press("Enter")
    details = page.locator("#tile-d-1 .more")
    details.wait_for(state="visible")
    assert "Status" in details.inner_text() and "Attempts" in details.inner_text()
    page.keyboard.press("Enter")  # and closed again
    details.wait_for(state="hidden")

    # Cancel the run: the button is in the tab order; the page then offers to retry.
    page.keyboard.press("Shift+Tab")
    tab_to(page, "#actions button")
    assert page.evaluate("document.activeElement.textContent").strip() == "Cancel run"
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#actions button') && "
                           "document.querySelector('#actions button').textContent.startsWith('Retry')")
    run = page.request.get(f"{server.url}/api/runs/{run_id}").json()
    assert run["status"] == "cancelled" and run["counts"]["cancelled"] == 6

    page.keyboard.press("Shift+Tab")
    tab_to(page, "#actions button")
    assert page.evaluate("document.activeElement.textContent").strip() == "Retry 6 tasks that did not succeed"
    page.keyboard.press("Enter")
    wait_for(lambda: page.request.get(f"{server.url}/api/runs/{run_id}").json()["status"] == "running", 20,
             "the retried run to be live again")
    page.wait_for_function("document.querySelector('#actions button') && "
                           "document.querySelector('#actions button').textContent.trim() === 'Cancel run'")
    page.close()
