"""A big run's page: one map cell per task, tiles paged and filtered by status, bad views refused.

Runs are submitted with the Python API and put mid-run with one UPDATE per status, as
bench/fragment.py does: no worker runs 10,000 tasks here.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

import pytest
from sqlalchemy import event, text
from starlette.testclient import TestClient

import service
from service.faces import summary
from service.storage.views import CELL, TilePage
from web.board import TILE_PAGE, TILES_UP_TO

BIG = 10_000
FAILED = [p for p in range(BIG) if p % 833 == 7]  # 12 failed tasks
RUNNING = set(range(6000, 6064))


def expected_status(position: int) -> str:
    if position in FAILED:
        return "failed"
    if position in RUNNING:
        return "running"
    if position < 6000:
        return "cancelled" if position % 1000 == 999 else "succeeded"
    if position % 500 == 3:
        return "retrying"
    return "queued"


def mid_run(t: service.Tenure, tasks: int = BIG) -> int:
    """A run of ``tasks`` echo tasks in the mix of :func:`expected_status`."""
    run_id = t.submit_run("echo", [{}] * tasks, name="big")
    failed = ", ".join(str(p) for p in FAILED) or "-1"
    with t.engine.begin() as conn:
        conn.execute(text("UPDATE tasks SET status = 'succeeded', progress = 1, attempts = 1, started_at = created_at, "
                          "finished_at = created_at WHERE run_id = :r AND position < 6000"), {"r": run_id})
        conn.execute(text("UPDATE tasks SET status = 'cancelled' WHERE run_id = :r AND position < 6000 "
                          "AND position % 1000 = 999"), {"r": run_id})
        conn.execute(text("UPDATE tasks SET status = 'running', attempts = 1, progress = 0.5, started_at = created_at "
                          "WHERE run_id = :r AND position >= 6000 AND position < 6064"), {"r": run_id})
        conn.execute(text("UPDATE tasks SET status = 'retrying', attempts = 1, charged = 1, error = 'flaky' "
                          "WHERE run_id = :r AND position >= 6064 AND position % 500 = 3"), {"r": run_id})
        conn.execute(text("UPDATE tasks SET status = 'failed', attempts = 3, charged = 3, "
                          "error = 'PermanentError: disk ' || CAST(position % 2 AS TEXT) || ' full (at 40%)', "
                          "started_at = created_at, finished_at = created_at "
                          f"WHERE run_id = :r AND position IN ({failed})"), {"r": run_id})
    return run_id


@pytest.fixture
def tenure(idle_client: TestClient) -> service.Tenure:
    t: service.Tenure = idle_client.app.state.tenure  # type: ignore[attr-defined]
    return t


def cells_of(page: str) -> str:
    match = re.search(r'<canvas id="map" data-cells="([a-z]*)"', page)
    assert match, "no map"
    return match.group(1)


def tiles_of(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<li id="tile-(\d+)">', page)]


def test_a_big_run_has_one_map_cell_per_task_and_one_page_of_tiles(idle_client: TestClient,
                                                                 tenure: service.Tenure) -> None:
    run_id = mid_run(tenure)
    fragment = idle_client.get(f"/runs/{run_id}/status")
    assert fragment.status_code == 200
    cells = cells_of(fragment.text)
    assert cells == "".join(CELL[expected_status(p)] for p in range(BIG))
    assert tiles_of(fragment.text) == list(range(1, TILE_PAGE + 1))  # not one tile per task
    assert fragment.text.count("<li") < TILE_PAGE + 20
    assert "Tasks 1–100 of 10,000" in fragment.text
    # The map says in words what its cells show, and the filters carry each status's count.
    assert "10,000 tasks, one cell each in order: 12 failed, 64 running" in fragment.text
    assert re.search(r'status=failed">.*failed <span class="n">12</span>', fragment.text)
    page = idle_client.get(f"/runs/{run_id}")
    assert page.status_code == 200 and cells_of(page.text) == cells


def test_the_failed_filter_lists_exactly_the_failed_tasks_with_their_reason(idle_client: TestClient,
                                                                           tenure: service.Tenure) -> None:
    run_id = mid_run(tenure)
    page = idle_client.get(f"/runs/{run_id}?status=failed")
    assert page.status_code == 200
    assert tiles_of(page.text) == [p + 1 for p in FAILED]
    assert page.text.count('class="tile st-failed"') == len(FAILED) == page.text.count('class="tile st-')
    assert "PermanentError: disk 1 full (at 40%)" in page.text
    assert "Failed 1–12 of 12" in page.text
    tiles = page.text.split('id="tiles"')[1].split("</ol>")[0]  # not the charts' links to the slowest tasks
    ids = [int(i) for i in re.findall(r'href="http://testserver/tasks/(\d+)"', tiles)]
    assert len(ids) == len(FAILED)
    for task_id, position in zip(ids, FAILED, strict=True):
        task = idle_client.get(f"/api/tasks/{task_id}").json()
        assert (task["status"], task["position"]) == ("failed", position)
    # The page polls the same view, and the fragment shows it too.
    assert f'hx-get="http://testserver/runs/{run_id}/status?status=failed"' in page.text
    fragment = idle_client.get(f"/runs/{run_id}/status?status=failed")
    assert tiles_of(fragment.text) == [p + 1 for p in FAILED]
    running = idle_client.get(f"/runs/{run_id}/status?status=running")
    assert tiles_of(running.text) == [p + 1 for p in sorted(RUNNING)]
    empty = idle_client.get(f"/runs/{run_id}/status?status=cancelled&page=1")
    assert tiles_of(empty.text) == [p + 1 for p in range(999, 6000, 1000)]


def test_tiles_come_in_pages(idle_client: TestClient, tenure: service.Tenure) -> None:
    run_id = mid_run(tenure)
    second = idle_client.get(f"/runs/{run_id}?page=2")
    assert tiles_of(second.text) == list(range(101, 201))
    assert "page 2 of 100" in second.text
    assert f'href="http://testserver/runs/{run_id}" rel="prev"' in second.text
    assert f'href="http://testserver/runs/{run_id}?page=3" rel="next"' in second.text
    last = idle_client.get(f"/runs/{run_id}?page=100")
    assert tiles_of(last.text) == list(range(9901, 10_001)) and 'rel="next"' not in last.text
    queued = tenure.store.run_status(run_id).run.counts["queued"]
    pages = -(-queued // TILE_PAGE)
    tail = idle_client.get(f"/runs/{run_id}?status=queued&page={pages}")
    shown = tiles_of(tail.text)
    assert 0 < len(shown) <= TILE_PAGE and all(expected_status(n - 1) == "queued" for n in shown)
    assert shown[-1] == BIG  # the last task is queued
    # Past the end: the page is a 404; the polled fragment, whose tasks may have moved on, is empty.
    past = idle_client.get(f"/runs/{run_id}?status=failed&page=2")
    assert past.status_code == 404
    assert f"there is no page 2 of run {run_id}&#39;s failed tasks: there is 1 (page 1 to 1)" in past.text
    gone = idle_client.get(f"/runs/{run_id}/status?status=failed&page=2")
    assert gone.status_code == 200 and tiles_of(gone.text) == []
    assert "No failed tasks on page 2 any more" in gone.text


@pytest.mark.parametrize(("query", "status", "message"), [
    ("status=bogus", 400, "there is no task status 'bogus': show one of queued, running, retrying, succeeded, failed"),
    ("status=%3Cscript%3E", 400, "there is no task status"),
    ("page=abc", 400, "page must be a whole number from 1, got 'abc'"),
    ("page=0", 400, "page must be a whole number from 1, got '0'"),
    ("page=-3", 400, "page must be a whole number from 1, got '-3'"),
    ("page=1.5", 400, "page must be a whole number from 1"),
    ("page=%D9%A3", 400, "page must be a whole number from 1"),  # an Arabic-Indic three: a digit, not ours
    ("page=" + "9" * 40, 404, "there is no page"),
    ("page=101", 404, "there is no page 101 of run"),
])
def test_a_bad_view_is_a_clear_4xx(idle_client: TestClient, tenure: service.Tenure, query: str, status: int,
                                   message: str) -> None:
    run_id = mid_run(tenure, TILES_UP_TO + 500)
    page = idle_client.get(f"/runs/{run_id}?{query}")
    assert page.status_code == status and message in html.unescape(page.text), page.text
    assert "<script>" not in page.text
    fragment = idle_client.get(f"/runs/{run_id}/status?{query}")
    assert fragment.status_code == (200 if status == 404 else status)
    if status == 400:
        assert message in fragment.text


def test_a_small_run_keeps_every_tile_and_refuses_what_it_has_not(idle_client: TestClient,
                                                                 tenure: service.Tenure) -> None:
    small = tenure.submit_run("echo", [{}] * TILES_UP_TO)
    fragment = idle_client.get(f"/runs/{small}/status")
    assert tiles_of(fragment.text) == list(range(1, TILES_UP_TO + 1))
    assert 'id="map"' not in fragment.text and 'class="filters"' not in fragment.text
    assert idle_client.get(f"/runs/{small}?page=2").status_code == 404
    assert idle_client.get(f"/runs/{small}?status=nope").status_code == 400
    bigger = tenure.submit_run("echo", [{}] * (TILES_UP_TO + 1))
    assert len(cells_of(idle_client.get(f"/runs/{bigger}/status").text)) == TILES_UP_TO + 1


def test_a_map_cell_opens_its_task(idle_client: TestClient, tenure: service.Tenure) -> None:
    run_id = mid_run(tenure)
    found = idle_client.get(f"/runs/{run_id}/tasks/{FAILED[0] + 1}", follow_redirects=False)
    assert found.status_code == 303
    task = idle_client.get(found.headers["location"])
    assert task.status_code == 200 and "PermanentError: disk" in task.text
    assert f'data-task-url="http://testserver/runs/{run_id}/tasks/0"' in idle_client.get(f"/runs/{run_id}").text
    for number in (0, BIG + 1, 2**70):
        missing = idle_client.get(f"/runs/{run_id}/tasks/{number}")
        assert missing.status_code == 404 and "there is no task" in missing.text
    assert idle_client.get(f"/runs/{run_id + 1}/tasks/1").status_code == 404


def test_a_big_run_answers_304_until_something_shown_changes(idle_client: TestClient,
                                                             tenure: service.Tenure) -> None:
    run_id = mid_run(tenure)
    url = f"/runs/{run_id}/status"
    etag = idle_client.get(url).headers["etag"]
    assert idle_client.get(url, headers={"If-None-Match": etag}).status_code == 304

    def changed_by(sql: str) -> str:
        nonlocal etag
        with tenure.engine.begin() as conn:
            conn.execute(text(sql), {"r": run_id})
        answer = idle_client.get(url, headers={"If-None-Match": etag})
        assert answer.status_code == 200 and answer.headers["etag"] != etag, sql
        etag = answer.headers["etag"]
        return answer.text

    changed_by("UPDATE tasks SET progress = 0.75 WHERE run_id = :r AND position = 6001")
    changed_by("UPDATE tasks SET output_chars = 10 WHERE run_id = :r AND position = 6002")
    # One running task hands over to a queued one: the counts stay, who runs does not.
    swapped = changed_by("UPDATE tasks SET status = CASE status WHEN 'running' THEN 'queued' ELSE 'running' END "
                         "WHERE run_id = :r AND position IN (6003, 9999)")
    assert cells_of(swapped)[6003] == "q" and cells_of(swapped)[9999] == "r"
    done = changed_by("UPDATE tasks SET status = 'succeeded' WHERE run_id = :r AND position = 7000")
    assert cells_of(done)[7000] == "s"
    assert idle_client.get(url, headers={"If-None-Match": etag}).status_code == 304


def test_a_finished_big_run_sums_up_as_a_small_one_would(open_tenure: Callable[..., service.Tenure]) -> None:
    """The compact summary (GROUP BY error, the slowest found in SQL rows) equals the one from every task."""
    t = open_tenure()
    run_id = mid_run(t, 2_000)
    with t.engine.begin() as conn:
        conn.execute(text("UPDATE tasks SET status = 'succeeded', finished_at = created_at, started_at = created_at "
                          "WHERE run_id = :r AND status NOT IN ('failed', 'cancelled')"), {"r": run_id})
        for position, seconds in ((10, 7), (1500, 9), (30, 8), (40, 1)):
            earlier = (f"created_at - INTERVAL '{seconds} seconds'" if t.engine.dialect.name == "postgresql" else
                       f"strftime('%Y-%m-%d %H:%M:%f000', created_at, '-{seconds} seconds')")
            conn.execute(text(f"UPDATE tasks SET started_at = {earlier} WHERE run_id = :r AND position = :p"),
                         {"r": run_id, "p": position})
        conn.execute(text("UPDATE runs SET status = 'failed', finished_at = created_at WHERE id = :r"), {"r": run_id})
    whole = t.store.run_status(run_id)
    compact = t.store.run_status(run_id, page=TilePage(over=TILES_UP_TO, status="failed"))
    assert compact.compact is not None and whole.tasks is not None
    expected = summary.summarize(whole.run, whole.tasks, whole.outcomes or {})
    got = summary.summarize_grouped(compact.run, compact.compact.errors, compact.compact.slowest,
                                    compact.outcomes or {})
    assert got == expected
    assert expected.failures == [("PermanentError: disk 1 full", 2), ("PermanentError: disk 0 full", 1)]
    assert [n for n, _ in got.slowest] == [1501, 31, 11]
    assert [task.position for task in compact.tasks or []] == [p for p in FAILED if p < 2_000]
    assert compact.compact.cells == "".join(CELL[t_.status] for t_ in whole.tasks)


def test_a_poll_of_a_big_run_costs_the_same_statements_at_any_size(idle_client: TestClient,
                                                                   tenure: service.Tenure) -> None:
    engine = tenure.engine
    statements: list[str] = []

    def count(*args: object) -> None:
        if not str(args[2]).startswith("BEGIN"):
            statements.append(str(args[2]))

    runs = [mid_run(tenure, TILES_UP_TO + 1), mid_run(tenure, BIG), mid_run(tenure, 3 * BIG)]
    event.listen(engine, "before_cursor_execute", count)
    try:
        costs = []
        for run_id in runs:
            for view in ("", "?status=failed", "?status=queued&page=3"):
                statements.clear()
                etag = idle_client.get(f"/runs/{run_id}/status{view}").headers["etag"]
                full = len(statements)
                statements.clear()
                assert idle_client.get(f"/runs/{run_id}/status{view}",
                                       headers={"If-None-Match": etag}).status_code == 304
                costs.append((full, len(statements)))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(set(costs)) == 1, costs
    assert costs[0] == (5, 2), costs  # the 304: the run row, and one UNION ALL of two index reads
