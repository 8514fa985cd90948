"""A tile's details on a 390 px phone: an overlay inside the screen that moves nothing, in Chromium.

A live run of sleep tasks given one by one: a few fail within a second or two, one succeeds, the
rest run for minutes, so the page keeps polling (and morphing the grid) while the test looks.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.task_process.kinds import sleep
from tests.acceptance.procs import Server
from tests.e2e.conftest import SCREENSHOTS

pytestmark = pytest.mark.acceptance

PHONE = {"width": 390, "height": 844}
FAILS = (2, 4, 9)  # positions: tiles 3 (the right edge of the phone's 3 columns), 5 and 10
SUCCEEDS = (1,)
LONG_WORD = "a_path_with_no_break_" + "x" * 160


def task(position: int) -> dict[str, Any]:
    seconds = 1.5 if position in FAILS else 0.5 if position in SUCCEEDS else 300.0
    args = {"seed": 1, "position": position, "min_seconds": seconds, "max_seconds": seconds,
            "failure_rate": 1 if position in FAILS else 0, "transient_rate": 0, "source": LONG_WORD}
    return {"args": args, "label": f"file-{position + 1:02}.csv"}


def start_run(page: Any, server: Server, count: int = 24) -> int:
    body = {"kind": "sleep", "name": "tiles", "tasks": [task(p) for p in range(count)]}
    answer = page.request.post(server.url + "/api/runs", data=json.dumps(body),
                               headers={"Content-Type": "application/json"})
    assert answer.ok, answer.text()
    return int(answer.json()["id"])


# Each tile's box in the page (not the viewport: a click may scroll it).
BOXES = """() => [...document.querySelectorAll('#grid > li')].map(li => {
    const r = li.getBoundingClientRect(); return [li.id, r.x + scrollX, r.y + scrollY, r.width, r.height]; })"""
PANEL = """n => { const p = document.querySelector(`#tile-d-${n} > .more`), r = p.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, visible: r.width > 0 && r.height > 0,
            inner: p.scrollWidth <= p.clientWidth,
            cells: [...p.querySelectorAll('dd')].every(dd => dd.scrollWidth <= dd.clientWidth + 1)}; }"""


def assert_inside(page: Any, number: int) -> None:
    panel = page.evaluate(PANEL, number)
    assert panel["visible"], panel
    assert 0 <= panel["left"] and panel["right"] <= PHONE["width"], panel
    assert 0 <= panel["top"] and panel["bottom"] <= PHONE["height"], panel
    assert panel["inner"] and panel["cells"], f"text overflows the overlay instead of wrapping: {panel}"
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], "the page got wider"


def test_a_failed_tiles_overlay_on_a_phone_stays_inside_moves_nothing_and_survives_polls(
        browser: Any, server: Server) -> None:
    page = browser.new_page(viewport=PHONE)
    page.set_default_timeout(30_000)
    page.goto(server.url + "/")
    run_id = start_run(page, server)
    page.goto(f"{server.url}/runs/{run_id}")
    page.wait_for_function(f"document.querySelectorAll('.tile.st-failed').length === {len(FAILS)} && "
                           "document.querySelectorAll('.tile.st-succeeded').length === 1")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    # The reason is on the tile, one line; a running tile shows its percentage.
    assert page.inner_text("#tile-d-3 .why") == sleep.plan(task(2)["args"]).reason
    assert page.evaluate("(e => e.scrollWidth > e.clientWidth)(document.querySelector('#tile-d-3 .line'))"), \
        "the reason is cut to the tile's width (with an ellipsis), not wrapped onto more lines"
    assert page.inner_text("#tile-d-1 .pct").endswith("%")

    tops = page.evaluate("[3, 4].map(n => document.querySelector('#tile-' + n).getBoundingClientRect().top)")
    assert tops[1] > tops[0], "tile 3 should end the first row, at the right edge"
    before = page.evaluate(BOXES)
    page.click("#tile-d-3 > summary")
    page.locator("#tile-d-3 > .more").wait_for(state="visible")
    assert_inside(page, 3)
    assert page.evaluate(BOXES) == before, "opening a tile moved the tiles"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "tiles-phone-open.png"))

    # Polls morph the grid (the running tiles move on); the overlay stays open, in place.
    page.evaluate("""() => { window.swaps = 0;
        document.body.addEventListener('htmx:afterSettle', () => { window.swaps += 1; }); }""")
    page.wait_for_function("window.swaps >= 2")
    assert page.get_attribute("#tile-d-3", "open") is not None, "a poll closed the overlay"
    assert_inside(page, 3)
    assert page.evaluate(BOXES) == before

    # Escape closes it and gives the focus back to its tile.
    page.keyboard.press("Escape")
    page.locator("#tile-d-3 > .more").wait_for(state="hidden")
    assert page.evaluate("document.activeElement.matches('#tile-d-3 > summary')")
    # Space opens it again from the keyboard; a click outside closes it, the focus back on the tile.
    page.keyboard.press("Space")
    page.locator("#tile-d-3 > .more").wait_for(state="visible")
    page.click("h1")
    page.locator("#tile-d-3 > .more").wait_for(state="hidden")
    assert page.evaluate("document.activeElement.matches('#tile-d-3 > summary')")
    assert page.evaluate(BOXES) == before

    # One open at a time: opening another closes the first.
    page.click("#tile-d-5 > summary")
    page.click("#tile-d-10 > summary")
    page.locator("#tile-d-10 > .more").wait_for(state="visible")
    assert page.get_attribute("#tile-d-5", "open") is None
    assert_inside(page, 10)
    page.keyboard.press("Escape")
    page.close()


def test_a_tile_is_reached_with_tab_and_opened_with_enter(browser: Any, server: Server) -> None:
    page = browser.new_page(viewport=PHONE)
    page.set_default_timeout(30_000)
    page.goto(server.url + "/")
    run_id = start_run(page, server, count=8)
    page.goto(f"{server.url}/runs/{run_id}")
    page.wait_for_function("document.querySelectorAll('.tile.st-running').length > 0")
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.matches('#tile-d-1 > summary')"):
            break
    else:
        raise AssertionError("Tab never reached the first tile")
    before = page.evaluate(BOXES)
    page.keyboard.press("Enter")
    page.locator("#tile-d-1 > .more").wait_for(state="visible")
    assert_inside(page, 1)
    assert page.evaluate(BOXES) == before
    # The focus ring is drawn around the tile's own box, which did not move.
    ring = page.evaluate("getComputedStyle(document.querySelector('#tile-d-1 > summary')).outlineStyle")
    assert ring == "solid"
    page.keyboard.press("Escape")
    page.locator("#tile-d-1 > .more").wait_for(state="hidden")
    assert page.evaluate("document.activeElement.matches('#tile-d-1 > summary')")
    page.close()
