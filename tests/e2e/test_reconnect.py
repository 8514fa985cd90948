"""The run page while its server is gone, and as it comes back: kill -9, restart, three times.

While the server is away the view is marked stale (dimmed, "last updated N s ago", its clock
stopped) and a screen reader is told once; when the server answers again the page is fresh by
itself. How long after the server answered the page was fresh is reported, not asserted.
"""

from __future__ import annotations

import json
import statistics
import time
import urllib.request
from typing import Any

import pytest

from tests.acceptance.procs import Server
from tests.conftest import report, wait_for
from tests.e2e.conftest import SCREENSHOTS

pytestmark = pytest.mark.acceptance

RESTARTS = 3
# Tasks that outlast the test: the run stays live, the page keeps polling.
LIVE = {"tasks": 12, "name": "reconnect", "min_seconds": 600, "max_seconds": 600, "failure_rate": 0,
        "transient_rate": 0, "seed": 5}
# Counts what the page says to screen readers (#tenure-live) and how often the notice's count changes.
WATCH = """() => {
    window.said = []; window.agoChanges = 0;
    new MutationObserver(() => { const t = document.getElementById('tenure-live').textContent;
                                 if (t) { window.said.push(t); } })
        .observe(document.getElementById('tenure-live'), {childList: true, characterData: true, subtree: true});
    new MutationObserver(() => { window.agoChanges += 1; })
        .observe(document.getElementById('connection'), {childList: true, characterData: true, subtree: true});
}"""


def health(server: Server) -> bool:
    try:
        with urllib.request.urlopen(server.url + "/healthz", timeout=0.5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def back_at(server: Server) -> float:
    """Start the server again on its port and database; the wall-clock time it first answers /healthz."""
    server.start(wait=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.proc is not None and server.proc.poll() is None, server.log.read_text()[-2000:]
        if health(server):
            return time.time()
        time.sleep(0.01)
    raise AssertionError("tenure serve did not answer within 30 s of a restart")


def test_the_page_marks_itself_stale_while_the_server_is_gone_and_is_fresh_once_it_answers(
        browser: Any, server: Server) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    made = page.request.post(server.url + "/api/runs", data=json.dumps(LIVE),
                             headers={"Content-Type": "application/json"})
    assert made.ok, made.text()
    page.goto(f"{server.url}/runs/{made.json()['id']}")
    page.wait_for_function("document.querySelectorAll('.tile.st-running').length > 0")
    assert not page.evaluate("document.body.classList.contains('stale')")
    page.evaluate(WATCH)

    delays = []
    for restart in range(RESTARTS):
        page.evaluate("window.said = []; window.agoChanges = 0")
        server.kill9()
        page.wait_for_function("document.body.classList.contains('stale')", timeout=10_000)
        notice = page.locator("#connection")
        assert notice.is_visible() and "Connection lost" in notice.inner_text()
        assert "last updated" in notice.inner_text()
        elapsed = page.inner_text("[data-elapsed]")
        # The notice counts the seconds; the run's clock has stopped; a screen reader heard it once.
        page.wait_for_function("parseInt(document.querySelector('#connection [data-ago]').textContent) >= 3")
        assert page.inner_text("[data-elapsed]") == elapsed, "the elapsed clock ticked on while disconnected"
        assert page.evaluate("window.agoChanges") >= 2
        said = page.evaluate("window.said")
        assert len(said) == 1 and said[0].startswith("Connection lost"), said
        assert page.evaluate("getComputedStyle(document.querySelector('#grid')).opacity") != "1", "not dimmed"
        if restart == 0:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "tiles-stale.png"))

        answered = back_at(server)
        page.wait_for_function("!document.body.classList.contains('stale')", polling=10, timeout=30_000)
        fresh = page.evaluate("tenurePoll.updatedAt") / 1000  # when the page's first answer came
        delays.append(fresh - answered)
        notice.wait_for(state="hidden")
        assert page.evaluate("getComputedStyle(document.querySelector('#grid')).opacity") == "1"
        assert page.evaluate("window.said").count("Connection back: the view is up to date.") == 1
        # The clock runs again.
        page.wait_for_function(f"document.querySelector('[data-elapsed]').textContent !== {json.dumps(elapsed)}")

    wait_for(lambda: health(server), 5, "the server to be up at the end")
    report(f"reconnect (kill -9, restart, same port and db; {RESTARTS}×): the page was fresh "
           f"{statistics.median(delays):.2f} s (median) after the server first answered /healthz, "
           f"{max(delays):.2f} s at most; each: {', '.join(f'{d:.2f}' for d in delays)} s")
    page.close()
