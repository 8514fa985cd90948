"""GET /metrics through the test client: parsed with prometheus-client's own parser, its values
match what the API says of a finished run, and the fragment's latency counts every poll made."""

from __future__ import annotations

from collections import Counter

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from tests.conftest import wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
TASKS = [{"x": i} for i in range(5)]


def scrape(client: TestClient) -> Samples:
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == CONTENT_TYPE_PLAIN_0_0_4
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_match_a_finished_run_and_count_every_poll(client: TestClient) -> None:
    run_id = client.post("/api/runs", json={"kind": "echo", "tasks": TASKS}).json()["id"]
    codes: Counter[str] = Counter()
    etag = ""

    def poll() -> bool:
        nonlocal etag
        answer = client.get(f"/runs/{run_id}/status", headers={"If-None-Match": etag} if etag else {})
        codes[str(answer.status_code)] += 1
        etag = answer.headers.get("etag", etag)
        return bool(client.get(f"/api/runs/{run_id}").json()["status"] == "completed")

    wait_for(poll, 10, "the run to complete")
    for _ in range(2):  # the run has ended: the same ETag answers 304
        poll()
    codes[str(client.get("/runs/999999/status").status_code)] += 1
    assert codes["304"] >= 2 and codes["404"] == 1

    run = client.get(f"/api/runs/{run_id}").json()
    def counted() -> Samples | None:
        """The supervisor counts an end right after its commit, a moment after the run shows completed."""
        s = scrape(client)
        return s if value(s, "tenure_attempts_finished_total", kind="echo", outcome="succeeded") == 5 else None

    samples = wait_for(counted, 5, "every end counted")
    assert isinstance(samples, dict)
    # The database's figures: what the API says of the run.
    for status, n in run["counts"].items():
        assert value(samples, "tenure_tasks", status=status, kind="echo") == n
    assert value(samples, "tenure_attempts", outcome="succeeded") == 5
    assert value(samples, "tenure_runs", status="completed") == 1
    assert value(samples, "tenure_supervisors_alive") == 1
    # The embedded supervisor's own.
    assert value(samples, "tenure_attempt_duration_seconds_count", kind="echo", outcome="succeeded") == 5
    assert value(samples, "tenure_queue_wait_seconds_count", kind="echo") == 5
    # Every poll of the fragment, by its answer's code.
    for code, n in codes.items():
        assert value(samples, "tenure_status_fragment_seconds_count", code=code) == n
        assert value(samples, "tenure_status_fragment_seconds_bucket", code=code, le="+Inf") == n
    assert value(samples, "tenure_status_fragment_seconds_sum", code="200") > 0
    assert value(samples, "process_resident_memory_bytes") > 0


def test_without_a_worker_metrics_has_the_database_s_figures_only(idle_client: TestClient) -> None:
    idle_client.post("/api/runs", json={"kind": "echo", "tasks": TASKS})
    samples = scrape(idle_client)
    assert value(samples, "tenure_tasks", status="queued", kind="echo") == 5
    assert value(samples, "tenure_supervisors_alive") == 0
    assert value(samples, "tenure_database_up") == 1
    assert not [name for name, _ in samples if name.startswith(("tenure_attempts_started", "tenure_heartbeat"))]
    # /metrics itself is not a fragment poll.
    assert not [name for name, _ in samples if name == "tenure_status_fragment_seconds_count"]


def test_a_scraper_that_asks_for_openmetrics_gets_it(idle_client: TestClient) -> None:
    idle_client.post("/api/runs", json={"kind": "echo", "tasks": TASKS})
    # What Prometheus sends: OpenMetrics first, the classic text format as a fallback.
    accept = "application/openmetrics-text;version=1.0.0;q=0.9,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    answer = idle_client.get("/metrics", headers={"Accept": accept})
    assert answer.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert answer.text.endswith("# EOF\n")
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for family in openmetrics_families(answer.text) for s in family.samples}
    assert value(samples, "tenure_tasks", status="queued", kind="echo") == 5
