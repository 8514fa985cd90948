"""The queues page, its pause and resume buttons, and a run page's own pause and resume."""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests import kinds_for_tests  # noqa: F401 - registers t_blocking
from tests.conftest import wait_for
from web.queue_pages import wait_words

JSON = {"content-type": "application/json"}
EVIL = {"Origin": "https://evil.example"}


def row(page: str, name: str) -> str:
    """The queue's own row of the table."""
    found = re.search(rf'<tr id="queue-{re.escape(name)}" class="queue[^"]*">.*?</tr>', page, re.S)
    assert found, page[:3000]
    return found.group(0)


def cells(html: str) -> list[str]:
    """A row's cells as text, tags and runs of spaces taken out."""
    found = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", html, re.S)
    return [" ".join(re.sub(r"<[^>]+>", " ", cell).split()) for cell in found]


def api(client: TestClient, method: str, path: str, body: Any = None) -> Any:
    answer = client.request(method, path, json=body, headers=JSON)
    assert answer.status_code < 300, answer.text
    return answer.json()


def test_the_page_shows_a_queue_at_its_limit_and_a_paused_one_with_work_waiting(client: TestClient) -> None:
    api(client, "PUT", "/api/queues/imports", {"concurrency": 2, "rate": "10/s"})
    api(client, "PUT", "/api/queues/mail", {})
    api(client, "POST", "/api/queues/mail/pause")
    busy = api(client, "POST", "/api/runs", {"kind": "t_blocking", "queue": "imports",
                                              "tasks": [{"seconds": 30} for _ in range(5)]})
    api(client, "POST", "/api/runs", {"kind": "echo", "queue": "mail", "tasks": [{"to": i} for i in range(3)]})
    wait_for(lambda: api(client, "GET", "/api/queues/imports")["running"] == 2, 10, "the queue to fill")

    page = client.get("/queues")
    assert page.status_code == 200
    assert '<a href="http://testserver/queues">Queues</a>' in page.text  # the nav, beside Schedules
    assert [re.search(r'id="queue-([^"]+)"', r).group(1)  # type: ignore[union-attr]
            for r in re.findall(r'<tr id="queue-[^"]+"', page.text)] == ["default", "imports", "mail"]
    imports = row(page.text, "imports")
    name, state, waiting, running, rate, oldest, _ = cells(imports)
    assert (name, state, waiting, running, rate) == ("imports", "▶ taking work ● at its limit", "3", "2 / 2", "10/s")
    assert re.fullmatch(r"under 1 s|\d+ s", oldest), oldest
    assert 'class="queue full"' in imports and 'aria-label="Pause imports"' in imports
    mail = row(page.text, "mail")
    name, state, waiting, running, rate, _, _ = cells(mail)
    assert (name, state, waiting, running, rate) == ("mail", "‖ paused", "3", "0 no limit", "—")
    assert 'aria-label="Resume mail"' in mail and 'action="http://testserver/queues/mail/resume"' in mail
    default = cells(row(page.text, "default"))
    assert default[0] == "default not declared" and default[2:6] == ["0", "0 no limit", "—", "—"]
    api(client, "POST", f"/api/runs/{busy['id']}/cancel")


def test_pause_and_resume_buttons_post_back_to_the_queue_and_a_cross_site_post_is_refused(
        idle_client: TestClient) -> None:
    api(idle_client, "PUT", "/api/queues/imports", {"concurrency": 4})
    refused = idle_client.post("/queues/imports/pause", headers=EVIL)
    assert refused.status_code == 403 and api(idle_client, "GET", "/api/queues/imports")["paused"] is False
    paused = idle_client.post("/queues/imports/pause", follow_redirects=False)
    assert paused.status_code == 303 and paused.headers["location"] == "http://testserver/queues#queue-imports"
    assert api(idle_client, "GET", "/api/queues/imports")["paused"] is True
    assert "‖ paused" in row(idle_client.get("/queues").text, "imports")
    resumed = idle_client.post("/queues/imports/resume", follow_redirects=False)
    assert resumed.status_code == 303 and api(idle_client, "GET", "/api/queues/imports")["paused"] is False
    missing = idle_client.post("/queues/nope/pause")
    assert missing.status_code == 404 and "there is no queue &#39;nope&#39;" in missing.text
    assert idle_client.post("/queues/imports/delete").status_code == 404


def test_a_live_run_has_pause_and_resume_beside_cancel_and_says_it_is_paused(idle_client: TestClient) -> None:
    run = api(idle_client, "POST", "/api/runs", {"kind": "echo", "tasks": [{"i": 1}, {"i": 2}]})
    page = idle_client.get(f"/runs/{run['id']}").text
    actions = re.search(r'<div id="actions".*?</div>', page, re.S).group(0)  # type: ignore[union-attr]
    assert ">Pause run</button>" in actions and ">Cancel run</button>" in actions and "‖ paused" not in actions
    assert idle_client.post(f"/runs/{run['id']}/pause", headers=EVIL).status_code == 403
    paused = idle_client.post(f"/runs/{run['id']}/pause", follow_redirects=False)
    assert paused.status_code == 303 and paused.headers["location"] == f"http://testserver/runs/{run['id']}"
    fragment = idle_client.get(f"/runs/{run['id']}/status").text  # what the page polls says it too
    actions = re.search(r'<div id="actions".*?</div>', fragment, re.S).group(0)  # type: ignore[union-attr]
    assert "‖ paused" in actions and ">Resume run</button>" in actions and ">Pause run" not in actions
    assert "paused: this run is paused (resume it to go on)" in fragment
    idle_client.post(f"/runs/{run['id']}/resume")
    assert api(idle_client, "GET", f"/api/runs/{run['id']}")["paused"] is False
    idle_client.post(f"/runs/{run['id']}/cancel")
    ended = idle_client.get(f"/runs/{run['id']}").text
    assert "Pause run" not in ended and "Resume run" not in ended
    refused = idle_client.post(f"/runs/{run['id']}/pause")
    assert refused.status_code == 409 and "only a live run can be paused or resumed" in refused.text


@pytest.mark.parametrize(("seconds", "words"), [
    (None, "—"), (0.2, "under 1 s"), (0.6, "1 s"), (40, "40 s"), (185, "3 min"), (3 * 3600, "3 h"),
    (5 * 86400, "5 days"),
])
def test_the_oldest_wait_is_said_in_words(seconds: float | None, words: str) -> None:
    assert wait_words(seconds) == words
