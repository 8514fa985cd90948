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


def test_a_page_on_another_port_of_the_same_host_is_cross_site(idle_client: TestClient) -> None:
    """Another local server (a dev server, a notebook) on 127.0.0.1:<other port> is another origin."""
    here = {"Host": "127.0.0.1:8000"}
    run_id = idle_client.post("/api/runs", json=RUN, headers=here).json()["id"]
    for origin in ("http://127.0.0.1:8001", "http://127.0.0.1", "http://localhost:8000", "http://127.0.0.1:80"):
        other = {**here, "Origin": origin}
        started = idle_client.post("/api/runs", json=RUN, headers=other)
        assert started.status_code == 403 and "cross-site" in started.json()["error"], origin
        assert idle_client.post("/api/tasks", json={"kind": "echo"}, headers=other).status_code == 403, origin
        assert idle_client.post("/runs", data={"tasks": "1"}, headers=other).status_code == 403, origin
        for action in ("cancel", "retry"):
            assert idle_client.post(f"/api/runs/{run_id}/{action}", headers=other).status_code == 403, origin
            assert idle_client.post(f"/runs/{run_id}/{action}", headers=other).status_code == 403, origin
    # Without an Origin, a browser's Sec-Fetch-Site says "same-site" for another port (sites ignore
    # ports): only "same-origin" (and "none", typed by the user) may change state.
    same_site = {**here, "Sec-Fetch-Site": "same-site"}
    assert idle_client.post("/api/runs", json=RUN, headers=same_site).status_code == 403
    assert idle_client.post(f"/api/runs/{run_id}/cancel", headers=same_site).status_code == 403
    assert idle_client.get("/api/runs").json()["total"] == 1  # none of them started anything
    assert idle_client.get(f"/api/runs/{run_id}").json()["status"] == "running"  # nor cancelled it
    same = {**here, "Origin": "http://127.0.0.1:8000"}
    assert idle_client.post("/api/runs", json=RUN, headers=same).status_code == 201
    assert idle_client.post("/api/runs", json=RUN, headers={**here, "Sec-Fetch-Site": "same-origin"}).status_code == 201
    assert idle_client.post(f"/api/runs/{run_id}/cancel", headers=same).status_code == 200
