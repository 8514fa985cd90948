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
    page.focus("#tile-d-1 > summary")
    page.click("#tile-d-8 > summary")
    page.wait_for_function("document.querySelector('#tile-d-4 .mini > span').style.width !== '0%'")
    assert page.evaluate("document.activeElement.parentElement.id") == "tile-d-8"
    page.focus("#tile-d-1 > summary")
    # Then a poll that changes the grid (any running task's progress; tile 1's own may be done by now).
    page.evaluate("window.gridBefore = document.getElementById('grid').innerHTML")
    page.wait_for_function("document.getElementById('grid').innerHTML !== window.gridBefore")
    assert page.evaluate("document.activeElement.parentElement.id") == "tile-d-1", "focus lost in a poll"
    assert page.get_attribute("#tile-d-8", "open") is not None, "an open tile closed in a poll"
    assert "✓" in page.title() and "tenure" in page.title()

    # Some tasks done, the rest running: kill -9 the server.
    page.wait_for_function("Number(document.querySelector('[role=progressbar]').getAttribute('aria-valuenow')) >= 1")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "run-live.png"), full_page=True)
    # The pictures draw the live run too: a bar per attempt so far, "now" marked. (Waited for, not
    # read at once: a CI run once read it mid-redraw, with the charts' morph under way.)
    page.locator("#charts svg line.now").first.wait_for(state="attached", timeout=5_000)
    assert page.locator("#charts svg line.now").count() >= 1
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
    # Its pictures once it has ended: the crash's band and the lost attempts on the timeline
    # (the kill -9 above interrupted running tasks), and the durations with the slowest named.
    page.wait_for_function("document.querySelector('#charts') && !document.querySelector('#charts[hx-get]')")
    timeline = page.inner_text("#charts")
    assert "server down" in timeline and "lost" in timeline and "slowest" in timeline.lower()
    page.locator("#charts").screenshot(path=str(SCREENSHOTS / "charts-finished.png"))

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
    page.goto(server.url + "/")
    assert page.locator("#runs-chart svg a").count() == 1  # the recent runs: this one, a link to it
    page.screenshot(path=str(SCREENSHOTS / "home.png"), full_page=True)
    page.close()


@pytest.fixture
def chatty_server(tmp_path: Any) -> Any:
    s = Server(tmp_path / "tenure.db", tmp_path / "serve.log", env={"TENURE_IMPORT": "tests.kinds_for_tests"})
    s.start()
    yield s
    s.stop()


def test_a_run_of_your_own_tasks_shows_labels_logs_and_a_page_per_task(browser: Any, chatty_server: Server) -> None:
    tasks = [{"args": {"seconds": 0.3}, "label": "report-2026-11.csv"},
             {"args": {"seconds": 0.5, "fail": True}, "label": "broken.csv", "max_attempts": 1},
             *({"seconds": 0.2 * i, "lines": i} for i in range(1, 5))]
    made = browser.new_context().request.post(
        chatty_server.url + "/api/runs", data={"kind": "t_chatty", "name": "convert", "tasks": tasks},
        headers={"Content-Type": "application/json"})
    assert made.status == 201, made.text()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    page.goto(made.json()["url"])
    assert page.locator(".tile").count() == 6
    assert page.locator("#tile-1 .name").inner_text() == "report-2026-11.csv"
    # No label: a short form of its args, in their order.
    assert page.locator("#tile-3 .name").inner_text() == "seconds=0.2, lines=1"
    page.locator("#summary").wait_for(state="visible")
    page.click("#tile-d-2 > summary")
    output = page.locator("#tile-d-2 pre.logs")
    output.wait_for(state="visible")
    assert "hello from logging, attempt 1" in output.inner_text() and "hello from a subprocess" in output.inner_text()
    assert "the chatty task failed on purpose" in page.locator("#tile-d-2 .err").inner_text()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "run-own-tasks.png"), full_page=True)

    page.click("#tile-d-2 a")  # the task's own page: every attempt, its output, the traceback collapsed
    page.wait_for_url("**/tasks/*")
    assert "broken.csv" in page.inner_text("h1")
    assert "hello from print" in page.locator("pre.output").first.inner_text()
    traceback = page.locator("details.traceback")
    assert traceback.get_attribute("open") is None and not traceback.locator("pre").is_visible()
    traceback.locator("summary").click()
    assert "raise ValueError" in traceback.locator("pre").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "task-page.png"), full_page=True)
    page.close()
