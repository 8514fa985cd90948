"""The JSON API through Starlette's test client."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.conftest import wait_for

QUICK = {"tasks": 6, "min_seconds": 0.01, "max_seconds": 0.05, "failure_rate": 0.0, "transient_rate": 0.0}


def test_create_watch_and_finish_a_run(any_client: TestClient) -> None:
    client = any_client
    created = client.post("/api/runs", json={**QUICK, "name": "api run", "seed": 4})
    assert created.status_code == 201
    body = created.json()
    assert body["url"].endswith(f"/runs/{body['id']}") and body["name"] == "api run"
    assert created.headers["location"].endswith(f"/api/runs/{body['id']}")

    def finished() -> dict | None:
        run = client.get(f"/api/runs/{body['id']}").json()
        return run if run["status"] == "completed" else None

    run = wait_for(finished, 10, "the run to complete")
    assert isinstance(run, dict)
    assert run["counts"] == {"queued": 0, "running": 0, "retrying": 0, "succeeded": 6, "failed": 0,
                             "cancelled": 0}
    assert [t["position"] for t in run["tasks"]] == list(range(6))
    assert set(run["tasks"][0]) >= {"position", "status", "attempts", "progress", "result", "error",
                                     "started_at", "finished_at"}
    assert all(t["status"] == "succeeded" and t["progress"] == 1.0 for t in run["tasks"])
    assert run["finished_at"] is not None


def test_history_is_paged_latest_first(idle_client: TestClient) -> None:
    ids = [idle_client.post("/api/runs", json=QUICK).json()["id"] for _ in range(3)]
    page = idle_client.get("/api/runs?limit=2").json()
    assert [r["id"] for r in page["runs"]] == ids[::-1][:2] and page["total"] == 3
    assert [r["id"] for r in idle_client.get("/api/runs?limit=2&offset=2").json()["runs"]] == ids[:1]


def test_cancel_then_retry(idle_client: TestClient) -> None:
    run_id = idle_client.post("/api/runs", json=QUICK).json()["id"]
    assert idle_client.post(f"/api/runs/{run_id}/retry").status_code == 409
    cancelled = idle_client.post(f"/api/runs/{run_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["cancelled"] == 6
    again = idle_client.post(f"/api/runs/{run_id}/cancel")
    assert again.status_code == 409 and "only a running run can be cancelled" in again.json()["error"]
    retried = idle_client.post(f"/api/runs/{run_id}/retry")
    assert retried.status_code == 200 and retried.json()["queued"] == 6
    assert retried.json()["run"]["status"] == "running"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"tasks": NaN}', 400, "NaN is not a JSON number"),
        (b"\xff\xfe", 400, "not valid UTF-8"),
        (b"[1, 2]", 422, "must be a JSON object"),
        (b"{}", 422, "tasks is required"),  # starting hours of work is never a default
        (b"", 422, "tasks is required"),
        (b"null", 422, "tasks is required"),
        (b'{"tasks": "ten"}', 422, "tasks must be a whole number"),
        (b'{"tasks": 0}', 422, "tasks must be at least 1, got 0"),
        (b'{"tasks": 1e400}', 422, "tasks must be a whole number"),
        (b'{"min_seconds": 1e400}', 422, "finite"),
        (b'{"tasks": 99999999999999999999999}', 422, "tasks must be at most 100000"),
        (b'{"kind": "nope"}', 422, "unknown task kind"),
        (b'{"colour": "red"}', 422, "a run of sleep does not take 'colour'"),
        (b'{"kind": "echo", "min_seconds": 5}', 422, "a run of echo does not take 'min_seconds'"),
        (b'{"tasks": []}', 422, "tasks must not be empty"),
        (b'{"tasks": [{"args": 5}]}', 422, "tasks[0].args must be a JSON object, got 5"),
        (b'{"tasks": [{}, {}, "x"]}', 422, "tasks[2] must be a JSON object"),
        (b'{"tasks": [{"args": {}, "colour": 1}]}', 422, "unknown field 'colour' in tasks[0]"),
        (b'{"tasks": [{"args": {}, "kind": "nope"}]}', 422, "tasks[0].kind must be one of"),
        (b'{"kind": "echo", "tasks": [{"k": "%s"}]}' % (b"x" * 70_000), 422, "tasks[0]: args are 70,009 bytes"),
        (b'{"failure_rate": true}', 422, "failure_rate must be a number"),
    ],
)
def test_bad_bodies_get_a_clear_4xx(idle_client: TestClient, body: bytes, status: int, message: str) -> None:
    response = idle_client.post("/api/runs", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert idle_client.get("/api/runs").json()["total"] == 0


def test_oversized_body_unknown_ids_and_wrong_methods(idle_client: TestClient) -> None:
    json_type = {"content-type": "application/json"}
    big = idle_client.post("/api/runs", content=b'{"name": "' + b"x" * (16 * 1024 * 1024) + b'"}', headers=json_type)
    assert big.status_code == 413 and "larger than 16777216 bytes" in big.json()["error"]
    big_task = idle_client.post("/api/tasks", content=b'{"kind": "echo", "args": {"a": "' + b"x" * 140_000 + b'"}}',
                                headers=json_type)
    assert big_task.status_code == 413 and "larger than 131072 bytes" in big_task.json()["error"]
    missing = idle_client.get("/api/runs/424242")
    assert missing.status_code == 404 and missing.json() == {"error": "there is no run 424242"}
    huge = idle_client.get(f"/api/runs/{2**70}")
    assert huge.status_code == 404
    assert idle_client.post("/api/runs/424242/cancel").status_code == 404
    wrong = idle_client.delete("/api/runs")
    assert wrong.status_code == 405 and "DELETE is not allowed" in wrong.json()["error"]
    assert idle_client.get("/api/nothing").json() == {"error": "there is nothing at this address"}
    assert idle_client.get("/api/runs?limit=0").status_code == 422


def test_health_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok", "supervisor": "running"}
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    assert {"/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/cancel", "/api/runs/{run_id}/retry",
            "/healthz"} <= set(spec["paths"])


def test_an_id_past_what_the_columns_hold_is_not_found_on_either_backend(any_client: TestClient) -> None:
    """PostgreSQL's ids are 32-bit: one past them used to reach the database, which refused it (422)."""
    for path in ("/api/runs/2147483648", "/api/tasks/2147483648", "/runs/2147483648"):
        assert any_client.get(path).status_code == 404, path
    for path in ("/api/runs/2147483648/cancel", "/api/runs/2147483648/retry", "/api/tasks/2147483648/cancel"):
        assert any_client.post(path).status_code == 404, path
