"""The pages and the status fragment through Starlette's test client."""

from __future__ import annotations

import re

from sqlalchemy import event
from starlette.testclient import TestClient

from tests import kinds_for_tests  # noqa: F401 - registers t_doomed
from tests.conftest import wait_for

FORM = {"tasks": "4", "kind": "sleep", "min_seconds": "0.01", "max_seconds": "0.03", "failure_rate": "0",
        "transient_rate": "0", "seed": "", "name": ""}


def start(client: TestClient, **fields: str) -> int:
    response = client.post("/runs", data={**FORM, **fields}, follow_redirects=False)
    assert response.status_code == 303, response.text
    match = re.fullmatch(r".*/runs/(\d+)", response.headers["location"])
    assert match
    return int(match.group(1))


def test_index_shows_the_form_live_runs_and_history(idle_client: TestClient) -> None:
    run_id = start(idle_client, name="morning batch")
    page = idle_client.get("/")
    assert page.status_code == 200
    assert 'name="tasks"' in page.text and 'value="50"' in page.text
    assert "morning batch" in page.text and f"/runs/{run_id}" in page.text


def test_a_bad_form_is_shown_again_with_a_readable_message(idle_client: TestClient) -> None:
    response = idle_client.post("/runs", data={**FORM, "failure_rate": "1.5"})
    assert response.status_code == 422
    assert "failure_rate must be at most 1, got 1.5" in response.text
    assert 'value="1.5"' in response.text  # what the reader typed is kept
    response = idle_client.post("/runs", data={**FORM, "tasks": "lots"})
    assert response.status_code == 422 and "tasks must be a whole number" in response.text
    for blank in ({**FORM, "tasks": "  "}, {"kind": "sleep"}):  # no number of tasks is not a default of 50
        response = idle_client.post("/runs", data=blank, follow_redirects=False)
        assert response.status_code == 422 and "enter how many tasks to run (1 to 100,000)" in response.text
    response = idle_client.post("/runs", json={"tasks": 3}, follow_redirects=False)
    assert response.status_code == 415 and "form" in response.text
    response = idle_client.post("/runs", data={"tasks": "2"}, follow_redirects=False)
    assert response.status_code == 303  # every other field has a default
    assert idle_client.get("/api/runs").json()["total"] == 1


def test_live_fragment_polls_and_the_final_one_stops(client: TestClient) -> None:
    run_id = start(client, min_seconds="0.3", max_seconds="0.3")
    live = client.get(f"/runs/{run_id}/status")
    assert live.status_code == 200
    assert 'hx-trigger="every 1s' in live.text and 'role="progressbar"' in live.text
    assert live.text.count('class="tile st-') == 4
    wait_for(lambda: client.get(f"/api/runs/{run_id}").json()["status"] == "completed", 10, "completion")
    final = client.get(f"/runs/{run_id}/status")
    assert "hx-trigger" not in final.text and "hx-get" not in final.text
    assert 'id="summary"' in final.text and "4</strong> succeeded" in final.text
    assert f"Run {run_id} completed: 4 succeeded, 0 failed." in final.text  # the aria-live announcement


def test_an_unchanged_run_answers_304_without_a_body(idle_client: TestClient) -> None:
    run_id = start(idle_client)
    first = idle_client.get(f"/runs/{run_id}/status")
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "no-cache"
    again = idle_client.get(f"/runs/{run_id}/status", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    idle_client.post(f"/api/runs/{run_id}/cancel")
    changed = idle_client.get(f"/runs/{run_id}/status", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag


def test_a_poll_costs_the_same_queries_at_any_run_size(idle_client: TestClient) -> None:
    engine = idle_client.app.state.tenure.engine  # type: ignore[attr-defined]
    statements: list[str] = []

    def count(*args: object) -> None:
        if not str(args[2]).startswith("BEGIN"):
            statements.append(str(args[2]))

    small = start(idle_client, tasks="5")
    large = start(idle_client, tasks="500")
    event.listen(engine, "before_cursor_execute", count)
    try:
        costs = {}
        for run_id in (small, large):
            statements.clear()
            etag = idle_client.get(f"/runs/{run_id}/status").headers["etag"]
            full = len(statements)
            statements.clear()
            idle_client.get(f"/runs/{run_id}/status", headers={"If-None-Match": etag})
            costs[run_id] = (full, len(statements))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert costs[small] == costs[large]
    # Nothing runs here, so each run waits for a free slot: one statement more says how many
    # tasks are ahead of it (see the test below).
    assert costs[small][1] <= 3 < costs[small][0] <= 9, costs


def test_html_in_names_and_errors_is_escaped(idle_client: TestClient) -> None:
    run_id = start(idle_client, name="<script>alert(1)</script>")
    for path in ("/", f"/runs/{run_id}", f"/runs/{run_id}/status"):
        text = idle_client.get(path).text
        assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in idle_client.get(f"/runs/{run_id}").text


def test_html_in_a_tasks_error_is_escaped_on_every_page_that_shows_it(client: TestClient) -> None:
    raw, escaped = "<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"
    doomed = {"kind": "t_doomed", "args": {"message": raw}, "label": "doomed"}
    run_id = client.post("/api/runs", json={"kind": "t_doomed", "tasks": [doomed]}).json()["id"]
    task_id = client.post("/api/tasks", json=doomed).json()["id"]
    in_run = client.get(f"/api/runs/{run_id}").json()["tasks"][0]["id"]
    for tid in (in_run, task_id):
        wait_for(lambda tid=tid: client.get(f"/api/tasks/{tid}").json()["status"] == "failed", 10, "the task to fail")
    assert client.get(f"/api/tasks/{task_id}").json()["error"].endswith(raw)  # stored as the task raised it
    for path in (f"/runs/{run_id}", f"/runs/{run_id}/status", f"/tasks/{in_run}", f"/tasks/{task_id}", "/tasks"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert raw not in page.text and "<script>alert" not in page.text, path
        assert escaped in page.text, path


def test_unknown_runs_and_actions_give_readable_pages(idle_client: TestClient) -> None:
    missing = idle_client.get("/runs/999")
    assert missing.status_code == 404 and "there is no run 999" in missing.text and "<html" in missing.text
    assert idle_client.get("/runs/999/status").status_code == 404
    run_id = start(idle_client)
    assert idle_client.post(f"/runs/{run_id}/cancel", follow_redirects=False).status_code == 303
    again = idle_client.post(f"/runs/{run_id}/cancel")
    assert again.status_code == 409 and "only a running run can be cancelled" in again.text
    assert idle_client.post(f"/runs/{run_id}/retry", follow_redirects=False).status_code == 303
    assert idle_client.get("/static/../pyproject.toml").status_code == 404
    assert idle_client.get("/static/%2e%2e/%2e%2e/pyproject.toml").status_code == 404
    assert idle_client.get("/static/..%2f..%2fpyproject.toml").status_code == 404
    assert idle_client.get("/nowhere").status_code == 404


def test_oversized_and_garbled_forms_are_refused(idle_client: TestClient) -> None:
    def chunks() -> object:
        yield b"name="
        for _ in range(40):
            yield b"x" * 1024

    big = idle_client.post("/runs", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"})
    assert big.status_code == 413 and "larger than" in big.text
    garbled = idle_client.post("/runs", content=b"tasks=\xff\xfe&name=\xc3",
                               headers={"content-type": "application/x-www-form-urlencoded"})
    assert garbled.status_code == 422 and "tasks must be a whole number" in garbled.text
    assert idle_client.get("/healthz").status_code == 200


def test_a_progress_change_alone_turns_the_next_poll_into_a_200(idle_client: TestClient) -> None:
    """The ETag covers progress: a frozen bar (a 304 while a task moves) would fail here."""
    from service.storage.leases import Leases

    run_id = start(idle_client, tasks="2")
    engine = idle_client.app.state.tenure.engine  # type: ignore[attr-defined]
    leases = Leases(engine)
    me = leases.register("pages", 1, None, None)
    first, _ = leases.claim(me, 2)
    etag = idle_client.get(f"/runs/{run_id}/status").headers["etag"]
    assert idle_client.get(f"/runs/{run_id}/status", headers={"If-None-Match": etag}).status_code == 304
    leases.heartbeat(me, [(first.task_id, first.attempt, 0.42, None)])
    moved = idle_client.get(f"/runs/{run_id}/status", headers={"If-None-Match": etag})
    assert moved.status_code == 200 and moved.headers["etag"] != etag
    assert "42%" in moved.text


def test_the_kind_select_names_kinds_and_describes_the_chosen_one_and_one_page_has_no_pager(
        client: TestClient) -> None:
    page = client.get("/").text
    options = re.findall(r'<option value="([^"]+)"[^>]*>([^<]*)</option>', page)
    assert options and all(value == text for value, text in options), "an option shows its name, not a sentence"
    help_text = re.search(r'<small id="kind-help">([^<]*)</small>', page)
    assert help_text and help_text.group(1).strip(), "the chosen kind (sleep) is described below the select"
    run_id = start(client)
    wait_for(lambda: client.get(f"/api/runs/{run_id}").json()["status"] == "completed", 10, "the run to end")
    history = client.get("/").text
    assert f"/runs/{run_id}" in history and "page 1 of 1" not in history


def test_history_of_more_than_one_page_has_a_pager(client: TestClient) -> None:
    ids = [start(client, tasks="1") for _ in range(16)]  # one more than a page of history holds
    wait_for(lambda: all(client.get(f"/api/runs/{i}").json()["status"] == "completed" for i in ids), 20,
             "the runs to end")
    first = client.get("/").text
    assert "page 1 of 2" in first and 'href="?page=2"' in first
    assert "page 2 of 2" in client.get("/?page=2").text


def test_cancelled_tasks_have_their_own_share_of_the_bar_not_the_failures(idle_client: TestClient) -> None:
    run_id = start(idle_client)  # 4 tasks, none runs: the app has no supervisor
    assert idle_client.post(f"/runs/{run_id}/cancel", headers={"Origin": "http://testserver"},
                            follow_redirects=False).status_code in (200, 303)
    bar = idle_client.get(f"/runs/{run_id}/status").text
    widths = dict(re.findall(r'class="seg seg-(\w+)" style="width: ([\d.]+)%"', bar))
    assert widths == {"succeeded": "0.00", "failed": "0.00", "cancelled": "100.00", "running": "0.00"}
    assert "⊘ 4 cancelled" in bar and "✗ 0 failed" in bar
    assert "0 failed, 4 cancelled, 0 running" in bar  # what a screen reader hears


def test_a_run_waiting_for_a_free_slot_says_how_many_tasks_are_ahead(idle_client: TestClient) -> None:
    from service.storage.leases import Leases

    first = start(idle_client, tasks="3")
    second = start(idle_client, tasks="2")
    # No supervisor runs anywhere (this app has none): that is what it waits for.
    nobody = idle_client.get(f"/runs/{second}/status")
    assert "waiting for a worker: none is running (start one with tenure worker" in nobody.text
    leases = Leases(idle_client.app.state.tenure.engine)  # type: ignore[attr-defined]
    me = leases.register("pages", 1, None, None)
    assert "waiting for a free slot: next in line" in idle_client.get(f"/runs/{first}/status").text
    page = idle_client.get(f"/runs/{second}/status", headers={"If-None-Match": nobody.headers["etag"]})
    assert page.status_code == 200, "a worker's arrival changes what the page says: a new ETag"
    assert "waiting for a free slot: 3 tasks ahead" in page.text and "estimating" not in page.text
    # The supervisor takes two of the first run's tasks: the first run runs, the second moves up,
    # and its poll is a 200 (the count is in its ETag), not a 304 of the old count.
    held = leases.claim(me, 2)
    assert len(held) == 2
    moved = idle_client.get(f"/runs/{second}/status", headers={"If-None-Match": page.headers["etag"]})
    assert moved.status_code == 200 and "waiting for a free slot: 1 task ahead" in moved.text
    assert "waiting for a free slot" not in idle_client.get(f"/runs/{first}/status").text
    # A run that runs something costs no more than before: two statements for an unchanged poll.
    engine = idle_client.app.state.tenure.engine  # type: ignore[attr-defined]
    etag = idle_client.get(f"/runs/{first}/status").headers["etag"]
    statements: list[str] = []

    def count(*args: object) -> None:
        if not str(args[2]).startswith("BEGIN"):
            statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", count)
    try:
        assert idle_client.get(f"/runs/{first}/status", headers={"If-None-Match": etag}).status_code == 304
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(statements) <= 2, statements


def test_a_small_run_s_etag_changes_when_a_task_writes_output_and_when_its_hook_ends(idle_client: TestClient) -> None:
    """Everything the page shows is in the ETag: a running task's output grows (its tile shows the
    last lines), and after completion the hook's status (the summary says whether it ran)."""
    from service.storage.leases import Leases
    from service.storage.models import Outcome

    response = idle_client.post("/api/runs", json={"tasks": 2, "kind": "echo", "on_complete": "echo"})
    run_id = response.json()["id"]
    leases = Leases(idle_client.app.state.tenure.engine)  # type: ignore[attr-defined]
    me = leases.register("etag", 1, None, None)
    first, second = leases.claim(me, 2)

    def etag() -> str:
        return str(idle_client.get(f"/runs/{run_id}/status").headers["etag"])

    before = etag()
    assert leases.heartbeat(me, logs=[(first.task_id, first.attempt, "hello\n", 6, False)]).held
    after_output = etag()
    assert after_output != before, "a task's output grew and the ETag did not change"
    assert leases.finish(first, me, outcome=Outcome.SUCCEEDED, result=1)
    assert leases.finish(second, me, outcome=Outcome.SUCCEEDED, result=2)
    completed = etag()
    (hook,) = leases.claim(me, 1)
    assert leases.finish(hook, me, outcome=Outcome.SUCCEEDED, result="hooked")
    assert etag() != completed, "the hook ended and the ETag did not change"


def test_a_run_being_pruned_says_so_in_words_and_offers_no_retry(idle_client: TestClient) -> None:
    import threading

    from sqlalchemy import text

    run_id = start(idle_client, tasks="12")
    assert idle_client.post(f"/runs/{run_id}/cancel", follow_redirects=False).status_code == 303
    t = idle_client.app.state.tenure  # type: ignore[attr-defined]
    with t.engine.begin() as conn:  # it ended long ago
        conn.execute(text("UPDATE runs SET finished_at = '2000-01-01 00:00:00'"))
    stop = threading.Event()
    t.prune(86_400.0, batch=5, stop=stop, progress=lambda r: stop.set())  # one batch of 5, then stopped

    page = idle_client.get(f"/runs/{run_id}")
    assert page.status_code == 200
    assert "Run being deleted</h2>" in page.text and "retention is deleting it" in page.text
    assert "Run deleting" not in page.text and "· deleting" not in page.text  # the stored word, not for people
    assert f"/runs/{run_id}/retry" not in page.text  # a retry would be refused: no button for it
    status = idle_client.get(f"/runs/{run_id}/status").text
    assert f"Run {run_id} being deleted" in status and "hx-trigger" not in status
    assert "being deleted" in idle_client.get("/").text
    refused = idle_client.post(f"/runs/{run_id}/retry")
    assert refused.status_code == 409 and f"run {run_id} is being deleted by retention (pruned)" in refused.text
    api = idle_client.get(f"/api/runs/{run_id}").json()
    assert api["status"] == "deleting" and len(api["tasks"]) == 7
