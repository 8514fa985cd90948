"""Cross-site requests and DNS rebinding are refused; same-origin pages and tools pass."""

from __future__ import annotations

from starlette.testclient import TestClient

RUN = {"tasks": 1, "min_seconds": 0, "max_seconds": 0}


def test_a_foreign_origin_cannot_start_cancel_or_retry(idle_client: TestClient) -> None:
    evil = {"Origin": "https://evil.example"}
    response = idle_client.post("/api/runs", json=RUN, headers=evil)
    assert response.status_code == 403 and "cross-site" in response.json()["error"]
    assert idle_client.post("/runs", data={"tasks": "1"}, headers=evil).status_code == 403
    assert idle_client.post("/runs", data={"tasks": "1"}, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert idle_client.post("/api/runs", json=RUN, headers={"Origin": "null"}).status_code == 403
    run_id = idle_client.post("/api/runs", json=RUN).json()["id"]  # no Origin: a tool, allowed
    assert idle_client.post(f"/api/runs/{run_id}/cancel", headers=evil).status_code == 403
    assert idle_client.get("/api/runs").json()["total"] == 1
    same = idle_client.post("/api/runs", json=RUN, headers={"Origin": "http://testserver"})
    assert same.status_code == 201
    assert idle_client.get("/", headers=evil).status_code == 200  # reading is harmless


def test_an_unknown_host_is_refused(idle_client: TestClient) -> None:
    response = idle_client.get("/api/runs", headers={"Host": "rebound.evil.example"})
    assert response.status_code == 400 and "Host header" in response.json()["error"]
    assert idle_client.get("/", headers={"Host": "rebound.evil.example:8000"}).status_code == 400
    assert idle_client.get("/", headers={"Host": "localhost:8000"}).status_code == 200
    assert idle_client.get("/", headers={"Host": "[::1]:8000"}).status_code == 200
