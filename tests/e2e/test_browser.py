"""The headline case in a real browser: start 50 tasks from the form, watch, survive a restart.

An end-to-end test with real processes and a real browser: about 15 s.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.acceptance.procs import Server
from tests.e2e.conftest import SCREENSHOTS

pytestmark = pytest.mark.acceptance


def test_fifty_tasks_from_the_form_survive_a_server_restart(browser: Any, server: Server) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(30_000)
    page.goto(server.url + "/")
    page.fill("input[name=tasks]", "50")
    page.fill("input[name=min_seconds]", "2")
    page.fill("input[name=max_seconds]", "5")
    page.fill("input[name=failure_rate]", "0.1")
    page.fill("input[name=transient_rate]", "0.1")
    page.fill("input[name=seed]", "42")
    page.fill("input[name=name]", "browser <run>")
    page.click("button[type=submit]")
    page.wait_for_url("**/runs/*")
    assert page.locator(".tile").count() == 50

    bar = page.locator("[role=progressbar]")
    # Tiles show progress as heartbeats write it; a reader's focus and open tile survive polls.
    page.wait_for_function("document.querySelectorAll('.tile.st-running').length > 0")
    page.focus("#tile-d-0 > summary")
    page.click("#tile-d-7 > summary")
    page.wait_for_function("document.querySelector('#tile-d-3 .mini > span').style.width !== '0%'")
    assert page.evaluate("document.activeElement.parentElement.id") == "tile-d-7"
    page.focus("#tile-d-0 > summary")
    start_width = page.evaluate("document.querySelector('#tile-d-0 .mini > span').style.width")
    page.wait_for_function(
        f"document.querySelector('#tile-d-0 .mini > span').style.width !== '{start_width}'")
    assert page.evaluate("document.activeElement.parentElement.id") == "tile-d-0", "focus lost in a poll"
    assert page.get_attribute("#tile-d-7", "open") is not None, "an open tile closed in a poll"
    assert "✓" in page.title() and "tenure" in page.title()

    # Some tasks done, the rest running: kill -9 the server.
    page.wait_for_function("Number(document.querySelector('[role=progressbar]').getAttribute('aria-valuenow')) >= 1")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "run-live.png"), full_page=True)
    done_before = int(bar.get_attribute("aria-valuenow") or 0)
    assert done_before < 50
    server.kill9()
    notice = page.locator("#connection")
    notice.wait_for(state="visible", timeout=10_000)
    assert "Connection lost" in notice.inner_text()
    assert page.locator(".tile").count() == 50, "a failed poll blanked the page"

    server.start()
    notice.wait_for(state="hidden", timeout=20_000)  # recovered by itself: no reload, no click
    page.locator("#summary").wait_for(state="visible", timeout=40_000)
    page.screenshot(path=str(SCREENSHOTS / "run-finished.png"), full_page=True)

    assert bar.get_attribute("aria-valuenow") == "50"
    announce = page.locator("#announce").inner_text()
    assert "completed" in announce and "succeeded" in announce
    assert "completed" in page.title()
    # Once over, the page stops polling.
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if r.url.endswith("/status") else None)
    page.wait_for_timeout(2500)  # a window in which polling, were it still on, would fire twice
    assert polls == []
    run = page.request.get(server.url + "/api/runs/1").json()
    assert sum(run["counts"].values()) == 50 and run["counts"]["running"] == 0
    assert run["counts"]["succeeded"] + run["counts"]["failed"] == 50
    assert "browser <run>" in page.inner_text("h1")  # shown as text, not markup
    page.close()
