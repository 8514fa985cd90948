"""The run's pictures through the test client: the timeline, the durations, the home page's recent runs.

The history is made with the engine's own lease verbs (two supervisors, one of which dies), then
its times are set with UPDATEs so that every bar has a known place; one test runs a real
supervisor instead.
"""

from __future__ import annotations

import html
import re
import statistics
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import event, select, text, update
from starlette.testclient import TestClient

import service
from service.storage.leases import Leases
from service.storage.models import Outcome, Run, SupervisorRow, Task, TaskAttempt
from tests.conftest import report, wait_for
from tests.web.test_big_runs import mid_run
from web.app import create_app
from web.timeline import MAX_RECTS

BAR = re.compile(r'<rect class="k-(\w+)" x="([\d.]+)%" width="([\d.]+)%" y="([\d.]+)" height="([\d.]+)"><title>([^<]*)')


@pytest.fixture
def idle_any(db_url: str) -> Iterator[TestClient]:
    """The app with no supervisor, once per backend: the history's SQL is the same on both."""
    with TestClient(create_app(db_url, supervise=False, allowed_hosts=["testserver"])) as c:
        yield c


def tenure_of(client: TestClient) -> service.Tenure:
    t: service.Tenure = client.app.state.tenure  # type: ignore[attr-defined]
    return t


def crash_history(t: service.Tenure) -> tuple[int, list[int]]:
    """Four tasks over 40 s: 1 succeeds; 2 fails, is retried and succeeds; 3 fails for good; 4 is lost
    when its server dies after 10 s (its last beat at 6 s, its last finish at 10 s; its tasks taken back
    at 14 s) and succeeds on the next one."""
    run_id = t.submit_run("echo", [{}] * 4, name="crashy")
    leases = Leases(t.engine)
    a, b = leases.register("host-a", 11, None, None), leases.register("host-b", 12, None, None)
    one, two, three, four = leases.claim(a, 4)
    assert leases.finish(one, a, outcome=Outcome.SUCCEEDED, result=1)
    assert leases.finish(two, a, outcome=Outcome.FAILED, error="ValueError: flaky", retry_in_s=0)
    assert leases.finish(three, a, outcome=Outcome.FAILED, error="PermanentError: no such file")
    assert leases.reclaim_supervisor(a, "its supervisor died") == [(four.task_id, 1)]
    again = leases.claim(b, 4)
    assert sorted(lease.task_id for lease in again) == sorted([two.task_id, four.task_id])
    for lease in again:
        assert leases.finish(lease, b, outcome=Outcome.SUCCEEDED, result=2)
    ids = [one.task_id, two.task_id, three.task_id, four.task_id]
    with t.engine.begin() as conn:
        t0 = conn.execute(select(Run.created_at).where(Run.id == run_id)).scalar_one()

        def s(seconds: float) -> datetime:
            return t0 + timedelta(seconds=seconds)

        spans = {(ids[0], 1): (0, 10), (ids[1], 1): (0, 5), (ids[1], 2): (20, 30), (ids[2], 1): (1, 8),
                 (ids[3], 1): (2, 14), (ids[3], 2): (15, 40)}
        for (task, attempt), (start, end) in spans.items():
            conn.execute(update(TaskAttempt).where(TaskAttempt.task_id == task, TaskAttempt.attempt == attempt)
                         .values(started_at=s(start), finished_at=s(end)))
        for task, (start, end) in zip(ids, [(0, 10), (0, 30), (1, 8), (2, 40)], strict=True):
            conn.execute(update(Task).where(Task.id == task).values(started_at=s(start), finished_at=s(end)))
        conn.execute(update(SupervisorRow).where(SupervisorRow.id == a).values(heartbeat_at=s(6)))
        conn.execute(update(Run).where(Run.id == run_id).values(finished_at=s(40)))
    return run_id, ids


def bars(fragment: str) -> list[tuple[str, float, float, float, str]]:
    """The timeline's attempt bars: (kind, x %, end %, y, title)."""
    timeline = fragment.split('<article class="chart histogram"')[0]
    return [(k, float(x), float(x) + float(w), float(y), html.unescape(title))
            for k, x, w, y, _, title in BAR.findall(timeline) if k not in ("outage", "gap")]


def test_the_timeline_shows_each_attempt_the_retry_the_failure_and_the_crash(idle_any: TestClient) -> None:
    run_id, ids = crash_history(tenure_of(idle_any))
    answer = idle_any.get(f"/runs/{run_id}/charts")
    assert answer.status_code == 200
    page = answer.text
    drawn = bars(page)
    assert [(k, round(x, 1), round(end, 1)) for k, x, end, _, _ in drawn] == [
        ("succeeded", 0, 25), ("failed", 0, 12.5), ("succeeded", 50, 75), ("failed", 2.5, 20),
        ("lost", 5, 25),  # it ran until its server's last sign of life: the end of task 1 at 10 s
        ("succeeded", 37.5, 100)]
    lanes = [y for _, _, _, y, _ in drawn]
    assert lanes[1] == lanes[2] and lanes[4] == lanes[5] and len(set(lanes)) == 4  # a retry shares its lane
    assert drawn[1][4] == "task 2, attempt 1: ✗ failed, 0:00–0:05 (5.0s) · ValueError: flaky"
    # The crash: a band across the run from 10 s until its tasks were taken back at 14 s, and the lost task's
    # wait until it ran again, in its lane.
    assert '<rect class="k-outage" x="25.000%" width="10.000%"' in page
    assert "server down 4.0s · 1 lost" in page
    gaps = [(float(a), float(b), float(c))
            for a, b, c in re.findall(r'<rect class="k-gap" x="([\d.]+)%" width="([\d.]+)%" y="([\d.]+)"', page)]
    # Task 2's retry is tied to its failed first attempt across its backoff (5 s to 20 s), and the lost
    # attempt of task 4 to its re-run, from its server's death.
    assert gaps == [(12.5, 37.5, lanes[1]), (25, 12.5, lanes[4])], gaps
    assert "task 2: waited 15s after attempt 1 failed, then ran again as attempt 2" in page
    # The same figures in words: the SVG's description and the table.
    assert ("4 tasks, one lane each; 6 attempts: 3 succeeded, 2 failed, 1 lost, re-run (not charged). "
            "2 tasks ran more than once. The server was down for 4.0s from 0:10; 1 attempt was lost") in page
    assert 'aria-labelledby="tl-title tl-desc"' in page and '<title id="tl-title">' in page
    table = page.split("The timeline as a table")[1]
    assert "✓ succeeded</td><td>3<" in table and "✗ failed</td><td>2<" in table
    assert "⟲ lost, re-run (not charged)</td><td>1<" in table
    assert "server down for 4.0s from 0:10 after the start</td><td>1 lost" in table
    assert (f'href="http://testserver/tasks/{ids[1]}">task 2</a></td>'
            "<td>1: ✗ failed 0:00–0:05; 2: ✓ succeeded 0:20–0:30") in table
    # The legend counts attempts, not tasks: task 2's failed first attempt and task 3's.
    legend = page.split('aria-label="timeline legend"')[1].split("</ul>")[0]
    assert "✓ succeeded <span class=\"n\">3</span>" in legend and "✗ failed <span class=\"n\">2</span>" in legend


def test_an_attempt_lost_while_its_server_lived_on_is_no_outage(idle_any: TestClient) -> None:
    """A shared process crashed for another task's sake: lost, re-run, but the server never went down."""
    t = tenure_of(idle_any)
    run_id = t.submit_run("echo", [{}] * 2)
    leases = Leases(t.engine)
    me = leases.register("host-a", 11, None, None)
    one, two = leases.claim(me, 2)
    assert leases.finish(one, me, outcome=Outcome.LOST, error="its shared process crashed", isolate=True, counted=True)
    leases.heartbeat(me)  # and it lives on
    for lease in (two, *leases.claim(me, 2)):
        assert leases.finish(lease, me, outcome=Outcome.SUCCEEDED, result=1)
    page = idle_any.get(f"/runs/{run_id}/charts").text
    assert [k for k, *_ in bars(page)] == ["lost", "succeeded", "succeeded"]
    assert 'class="k-outage"' not in page and "server down" not in page
    assert "1 lost, re-run (not charged)" in page  # the attempt itself is still counted


def test_a_big_run_with_a_crash_draws_lanes_of_tasks_and_the_outage(idle_any: TestClient) -> None:
    """The big run's SQL (sums per lane and column, signs of life) on both backends."""
    t = tenure_of(idle_any)
    run_id = t.submit_run("echo", [{}] * 150)
    leases = Leases(t.engine)
    a, b = leases.register("host-a", 11, None, None), leases.register("host-b", 12, None, None)
    first = leases.claim(a, 30)
    for lease in first[:10]:
        assert leases.finish(lease, a, outcome=Outcome.FAILED if lease.position == 3 else Outcome.SUCCEEDED,
                             result=1, error="boom")
    assert len(leases.reclaim_supervisor(a, "its supervisor died")) == 20
    while held := leases.claim(b, 50):
        for lease in held:
            assert leases.finish(lease, b, outcome=Outcome.SUCCEEDED, result=1)
    assert not t.run(run_id).live
    page = idle_any.get(f"/runs/{run_id}/charts").text
    assert "One lane per 3 tasks" in page and "150 tasks in 50 lanes of 3" in page
    assert "170 attempts: 149 succeeded, 1 failed, 20 lost, re-run (not charged)." in page
    assert page.count('<rect class="k-outage" x=') == 1 and "server down" in page and "· 20 lost" in page
    lanes = page.split("Attempts per lane")[1].split("</table>")[0]
    assert lanes.count("<tr><td>") == 50 and "<tr><td>4–6</td><td>2</td><td>1</td><td>0</td></tr>" in lanes
    assert "<tr><td>13–15</td><td>3</td><td>0</td><td>3</td></tr>" in lanes  # lost with host-a, then run again


def test_the_histogram_marks_and_links_the_slowest_task(idle_any: TestClient) -> None:
    run_id, ids = crash_history(tenure_of(idle_any))
    page = idle_any.get(f"/runs/{run_id}/charts").text
    assert "▼ slowest: task 4, 38s" in page
    assert f'Slowest: <a href="http://testserver/tasks/{ids[3]}">task 4</a> (38s)' in page
    # Durations from first start to end: 10 s, 30 s, 7 s (failed), 38 s, in bins of 2 s.
    rows = re.findall(r"<tr><td>([^<]+)</td><td>(\d+)</td><td>(\d+)</td></tr>",
                      page.split("The durations as a table")[1])
    assert sum(int(ok) for _, ok, _ in rows) == 3 and sum(int(bad) for _, _, bad in rows) == 1
    assert rows[0] == ("6.0s–8.0s", "0", "1") and rows[-1] == ("38s–40s", "1", "0")
    assert "4 finished tasks by time from first start to end, in bins of 2.0s: 3 succeeded, 1 failed" in page


def test_the_charts_poll_while_live_stop_at_the_end_and_answer_304(idle_client: TestClient) -> None:
    t = tenure_of(idle_client)
    run_id = t.submit_run("echo", [{}] * 3)
    leases = Leases(t.engine)
    me = leases.register("h", 1, None, None)
    assert len(leases.claim(me, 3)) == 3
    live = idle_client.get(f"/runs/{run_id}/charts")
    assert 'hx-trigger="every 2s [window.tenurePoll && tenurePoll.due()]"' in live.text
    assert f'hx-get="http://testserver/runs/{run_id}/charts"' in live.text
    assert '<line class="now"' in live.text and [k for k, *_ in bars(live.text)] == ["running"] * 3
    assert "No task has finished yet" in live.text
    # The page of the run shows the same pictures at once, without waiting for a poll.
    assert 'id="charts"' in idle_client.get(f"/runs/{run_id}").text
    assert 'id="charts"' not in idle_client.get(f"/runs/{run_id}/status").text  # the status fragment stays as it was
    t.cancel_run(run_id)
    ended = idle_client.get(f"/runs/{run_id}/charts")
    assert ended.status_code == 200 and "hx-trigger" not in ended.text and '<line class="now"' not in ended.text
    assert [k for k, *_ in bars(ended.text)] == ["cancelled"] * 3
    etag = ended.headers["etag"]
    again = idle_client.get(f"/runs/{run_id}/charts", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["etag"] == etag
    assert idle_client.get(f"/runs/{run_id + 1}/charts").status_code == 404


def test_a_real_run_with_failures_and_retries_draws_every_attempt(client: TestClient) -> None:
    t = tenure_of(client)
    run_id = t.submit_run(12, "sleep", {"min_seconds": 0.01, "max_seconds": 0.05, "failure_rate": 0.25,
                                        "transient_rate": 0.3, "seed": 5}, max_attempts=3)
    wait_for(lambda: not t.run(run_id).live, 20, "the run to end")
    page = client.get(f"/runs/{run_id}").text
    _, tasks = t.run_with_tasks(run_id)
    outcomes = [a.outcome for task in tasks for a in t.attempts(task.id)]
    drawn = [k for k, *_ in bars(page)]
    assert sorted(drawn) == sorted(outcomes) and "failed" in drawn and len(drawn) > len(tasks)
    table = page.split("The timeline as a table")[1]
    for outcome in set(outcomes):
        label = {"succeeded": "✓ succeeded", "failed": "✗ failed"}[outcome]
        assert f"{label}</td><td>{outcomes.count(outcome)}<" in table


def with_attempts(t: service.Tenure, run_id: int) -> int:
    """Give every started task of a :func:`mid_run` its attempt: a task started every 10 ms from 2 minutes ago,
    each took 2 s (SQLite's date functions)."""
    later = "strftime('%Y-%m-%d %H:%M:%f000', created_at, '+' || (position / 100.0) || ' seconds')"
    with t.engine.begin() as conn:
        for table in ("runs", "tasks"):
            key = "id" if table == "runs" else "run_id"
            conn.execute(text(f"UPDATE {table} SET created_at = strftime('%Y-%m-%d %H:%M:%f000', created_at, "
                              f"'-120 seconds') WHERE {key} = :r"), {"r": run_id})
        conn.execute(text(f"UPDATE tasks SET started_at = {later} WHERE run_id = :r AND started_at IS NOT NULL"),
                     {"r": run_id})
        conn.execute(text("UPDATE tasks SET finished_at = strftime('%Y-%m-%d %H:%M:%f000', started_at, '+2 seconds') "
                          "WHERE run_id = :r AND finished_at IS NOT NULL"), {"r": run_id})
        conn.execute(text(
            "INSERT INTO task_attempts (task_id, attempt, started_at, finished_at, outcome, charged) "
            "SELECT id, 1, started_at, finished_at, CASE status WHEN 'running' THEN 'running' WHEN 'failed' "
            "THEN 'failed' ELSE 'succeeded' END, false FROM tasks WHERE run_id = :r AND started_at IS NOT NULL"),
            {"r": run_id})
    return run_id


def test_a_big_run_is_read_in_a_fixed_number_of_statements_and_drawn_bounded(idle_client: TestClient) -> None:
    t = tenure_of(idle_client)
    statements: list[str] = []

    def count(*args: object) -> None:
        if not str(args[2]).startswith("BEGIN"):
            statements.append(str(args[2]))

    runs = [with_attempts(t, mid_run(t, n)) for n in (501, 10_000, 30_000)]
    event.listen(t.engine, "before_cursor_execute", count)
    try:
        costs = []
        for run_id in runs:
            statements.clear()
            answer = idle_client.get(f"/runs/{run_id}/charts")
            assert answer.status_code == 200
            costs.append(len(statements))
            assert len(answer.content) < 250_000 and answer.text.count("<rect") < MAX_RECTS + 200
            assert 'hx-trigger="every 5s [' in answer.text  # a big run's pictures are redrawn less often
    finally:
        event.remove(t.engine, "before_cursor_execute", count)
    # The run, its attempts' sums, the slowest, the durations; no attempt was lost, so no outage to read.
    assert costs == [4] * 3, costs
    dead = Leases(t.engine).register("host-a", 11, None, None)
    with t.engine.begin() as conn:  # its supervisor died long ago, and the attempt was taken back since
        conn.execute(text("UPDATE supervisors SET heartbeat_at = '2001-01-01 00:00:00.000000' WHERE id = :s"),
                     {"s": dead})
        conn.execute(text("UPDATE task_attempts SET outcome = 'lost', supervisor_id = :s WHERE task_id = "
                          "(SELECT id FROM tasks WHERE run_id = :r AND position = 5)"), {"r": runs[2], "s": dead})
    event.listen(t.engine, "before_cursor_execute", count)
    try:
        statements.clear()
        lost = idle_client.get(f"/runs/{runs[2]}/charts").text
        assert "1 lost, re-run" in lost and "server down" in lost
        assert len(statements) == 6  # and the outages, and the signs of life of the supervisor that died
    finally:
        event.remove(t.engine, "before_cursor_execute", count)
    page = idle_client.get(f"/runs/{runs[1]}/charts").text
    assert "One lane per 200 tasks" in page and 0 < page.count('class="lane-label"') <= 50
    with t.engine.connect() as conn:
        attempts: dict[str, int] = dict(conn.execute(text(
            "SELECT outcome, count(*) FROM task_attempts JOIN tasks ON tasks.id = task_id WHERE run_id = :r "
            "GROUP BY outcome"), {"r": runs[1]}).all())
    said = (f"{sum(attempts.values()):,} attempts: {attempts['succeeded']:,} succeeded, {attempts['failed']} failed, "
            f"{attempts['running']} running")
    assert "10,000 tasks in 50 lanes of 200" in page and said in page, said
    lanes = page.split("Attempts per lane")[1].split("</table>")[0]
    # A row per lane with attempts: the 30 below position 6,000, the running one, 4 with a failed task after it.
    assert lanes.count("<tr><td>") == 35
    assert "<tr><td>1–200</td><td>199</td><td>1</td><td>0</td></tr>" in lanes  # task 8 failed
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        assert idle_client.get(f"/runs/{runs[1]}/charts").status_code == 200
        timings.append(time.perf_counter() - started)
    report(f"charts of a 10,000-task run: {1000 * statistics.median(timings):.0f} ms median (read, geometry, render)")


def test_the_home_page_charts_recent_runs_each_a_link(idle_client: TestClient) -> None:
    t = tenure_of(idle_client)
    assert "No run yet" in idle_client.get("/").text
    run_ids = [t.submit_run("echo", [{}] * 4, name="r0")]
    assert "The only run so far;" in idle_client.get("/").text  # not "the last 1 runs"
    run_ids += [t.submit_run("echo", [{}] * 4, name=f"r{i}") for i in (1, 2)]
    t.cancel_run(run_ids[0])
    page = idle_client.get("/").text
    chart = page.split('id="runs-chart"')[1].split("</section>")[0]
    assert "The last 3 runs, oldest on the left;" in chart
    links = re.findall(r'<a href="http://testserver/runs/(\d+)" aria-label="([^"]+)">', chart)
    assert [int(i) for i, _ in links] == run_ids  # oldest on the left
    assert links[0][1] == "run #1 r0: 0 succeeded, 0 failed, 4 cancelled of 4 · cancelled"
    assert "Recent runs as a table" in chart
    assert re.search(rf'#{run_ids[0]} r0</a></td><td>cancelled</td><td>4</td><td>0</td><td>0</td><td>4</td>', chart)
    # While a run is live the chart polls itself, and its fragment answers alone.
    assert 'hx-get="http://testserver/charts/runs"' in chart
    fragment = idle_client.get("/charts/runs")
    assert fragment.status_code == 200 and fragment.text.lstrip().startswith('<section id="runs-chart"')
    for run_id in run_ids[1:]:
        t.cancel_run(run_id)
    assert "hx-get" not in idle_client.get("/charts/runs").text


def test_a_finished_run_s_history_is_read_once_and_again_after_a_retry(idle_client: TestClient) -> None:
    t = tenure_of(idle_client)
    run_id = t.submit_run("echo", [{}] * 3)
    leases = Leases(t.engine)
    me = leases.register("h", 1, None, None)
    first, *rest = leases.claim(me, 3)
    assert leases.finish(first, me, outcome=Outcome.FAILED, error="PermanentError: no")
    for lease in rest:
        assert leases.finish(lease, me, outcome=Outcome.SUCCEEDED, result=1)
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    def visit() -> tuple[int, str]:
        statements.clear()
        page = idle_client.get(f"/runs/{run_id}")
        assert page.status_code == 200
        return len(statements), page.text

    event.listen(t.engine, "before_cursor_execute", count)
    try:
        cold, page = visit()
        warm, again = visit()
        # The same page, without the history's statements: a finished run's never changes.
        assert cold - warm >= 4 and again.count('<rect class="k-') == page.count('<rect class="k-')
        assert t.retry_run(run_id) == 1  # live again: its history moves, and is read afresh
        live, retried = visit()
        assert live >= warm + 4 and "hx-get" in retried.split('id="charts"')[1][:300]
    finally:
        event.remove(t.engine, "before_cursor_execute", count)


def test_a_heartbeat_in_the_millisecond_of_a_loss_shows_its_server_alive(idle_any: TestClient) -> None:
    """SQLite keeps milliseconds: a beat right after a loss can carry the loss's very time (a flake in CI)."""
    from sqlalchemy import text

    t = tenure_of(idle_any)
    run_id = t.submit_run("echo", [{}])
    leases = Leases(t.engine)
    me = leases.register("host-a", 11, None, None)
    (one,) = leases.claim(me, 1)
    assert leases.finish(one, me, outcome=Outcome.LOST, error="its shared process crashed", isolate=True, counted=True)
    with t.engine.begin() as conn:
        conn.execute(text("UPDATE supervisors SET heartbeat_at = (SELECT finished_at FROM task_attempts "
                          "WHERE outcome = 'lost') WHERE id = :me"), {"me": me})
    page = idle_any.get(f"/runs/{run_id}/charts").text
    assert 'class="k-outage"' not in page and "server down" not in page
