"""Property-based fuzz of the JSON API from its OpenAPI description: no 5xx, and every answer
matches the schema the description gives for it. Fixed budget, fixed seed (printed)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, seed, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from starlette.testclient import TestClient

from tests.conftest import PG_TEMPLATE, _pg_url, report
from web.app import create_app
from web.openapi import spec
from web.schemas import catalog

FUZZ_SEED = int(os.environ.get("TENURE_FUZZ_SEED", "20261123"))
BUDGET = int(os.environ.get("TENURE_FUZZ_EXAMPLES", "400"))
TRIED = {"cases": 0, "server_errors": 0}
TIMES = ["2026-12-03T14:05:00", "2026-12-03T14:05:00Z", "2026-12-03T14:05:00+01:00", "0001-01-01T00:00:00+23:59",
         "9999-12-31T23:59:59-23:59", "2026-02-30T00:00:00Z", "2026-12-03 14:05:00z"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=0, max_value=60), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30), st.sampled_from(["sleep", "gen_task", "echo", "<script>", "\u0000", "💥"]),
    st.sampled_from(TIMES), st.sampled_from(["0 2 * * *", "*/5 * * * *", "@daily", "0 0 30 2 *", "61 * * * *",
                                             "Europe/Berlin", "UTC", "Mars/Base", "../etc", "none", "all", "queue"]),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
SPEC = spec()
FIELDS = sorted({name for model in catalog().simulations.values() for name in model.model_fields})
TASK_FIELDS = sorted(catalog().task.model_fields)
task_entries = st.one_of(json_values, st.dictionaries(st.sampled_from([*TASK_FIELDS, "extra"]), json_values,
                                                      max_size=4))
run_bodies = st.one_of(
    st.dictionaries(st.sampled_from([*FIELDS, "extra"]), json_values, max_size=6),
    st.fixed_dictionaries({"tasks": st.lists(task_entries, max_size=4)},
                          optional={"kind": st.sampled_from(["sleep", "echo", "nope", 3]), "name": json_values}))
task_bodies = st.dictionaries(st.sampled_from([*TASK_FIELDS, "extra"]), json_values, max_size=5)
SCHEDULE_FIELDS = ["name", "cron", "timezone", "task", "run", "catch_up", "catch_up_max", "overlap", "grace_s"]
schedule_bodies = st.one_of(
    st.dictionaries(st.sampled_from([*SCHEDULE_FIELDS, "extra"]), json_values, max_size=6),
    st.fixed_dictionaries({"name": st.text(max_size=6), "cron": json_values},
                          optional={"timezone": json_values, "task": task_bodies, "catch_up_max": json_values,
                                    "run": st.fixed_dictionaries({"kind": st.sampled_from(["echo", "nope"])},
                                                                 optional={"tasks": json_values,
                                                                           "count": json_values}),
                                    "overlap": json_values, "grace_s": json_values}))
LIMITS = ["concurrency", "rate", "age_s", "extra"]
limit_bodies = st.one_of(json_values, st.dictionaries(st.sampled_from(LIMITS), st.one_of(json_values, st.sampled_from(
    ["10/s", "10", "0/s", "5/0s", "1 per 2 minutes", "100000/ms", "3/7d"])), max_size=3))
raw_bodies = st.one_of(st.binary(max_size=80), st.sampled_from(
    [b"{", b"[]", b"null", b'{"tasks": NaN}', b'{"tasks": Infinity}', b'{"tasks": 1e999}', b"\xff\xfe{}",
     b'{"tasks": 3, "min_seconds": 0, "max_seconds": 0.001}' , b"{" * 5000 + b"}" * 5000]))
ids = st.one_of(st.integers(min_value=-5, max_value=2**66).map(str),
                st.text(min_size=1, max_size=12).map(lambda s: quote(s, safe="")))
paths = st.one_of(
    st.just("/api/runs"), ids.map(lambda i: f"/api/runs/{i}"), ids.map(lambda i: f"/api/runs/{i}/cancel"),
    ids.map(lambda i: f"/api/runs/{i}/retry"), st.just("/api/tasks"), ids.map(lambda i: f"/api/tasks/{i}"),
    ids.map(lambda i: f"/api/tasks/{i}/result"), ids.map(lambda i: f"/api/tasks/{i}/cancel"),
    st.just("/api/schedules"), ids.map(lambda i: f"/api/schedules/{i}"),
    st.just("/api/queues"), ids.map(lambda i: f"/api/queues/{i}"), ids.map(lambda i: f"/api/keys/{i}"),
    st.tuples(ids, st.sampled_from(["pause", "resume"])).map(lambda p: f"/api/queues/{p[0]}/{p[1]}"),
    st.tuples(ids, st.sampled_from(["pause", "resume"])).map(lambda p: f"/api/runs/{p[0]}/{p[1]}"),
    st.tuples(ids, st.sampled_from(["fires", "pause", "resume", "fire"]))
    .map(lambda p: f"/api/schedules/{p[0]}/{p[1]}"),
    st.just("/healthz"), st.just("/openapi.json"))
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"])
queries = st.dictionaries(st.sampled_from(["limit", "offset", "before", "x"]), st.text(max_size=6), max_size=2)


def schema_for(path: str, method: str, status: int) -> dict[str, Any] | None:
    template = path
    parts = path.split("/")
    if len(parts) >= 4 and parts[1] == "api":
        parts[3] = {"runs": "{run_id}", "tasks": "{task_id}", "queues": "{name}", "keys": "{name}"}.get(parts[2],
                                                                                                      "{ref}")
        template = "/".join(parts)
    operation = SPEC["paths"].get(template, {}).get(method.lower())
    if operation is None:
        return None
    response = operation["responses"].get(str(status))
    if response is None:
        raise AssertionError(f"{method} {path} answered {status}, which the OpenAPI description does not list")
    return {**response["content"]["application/json"]["schema"], "components": SPEC["components"]}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzz_client(request: pytest.FixtureRequest, migrated_template: Any,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One database per backend for the whole module: PostgreSQL refuses text SQLite stores (a NUL)."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
        path.write_bytes(migrated_template.read_bytes())
        url, dropped = f"sqlite:///{path}", None
    else:
        admin = request.getfixturevalue("pg_admin")
        dropped = f"tenure_fuzz_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{dropped}" TEMPLATE "{PG_TEMPLATE}"')
        url = _pg_url(dropped)
    TRIED.update(cases=0, server_errors=0)
    try:
        with TestClient(create_app(url, supervise=False, allowed_hosts=["testserver"])) as c:
            yield c
    finally:
        if dropped is not None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{dropped}" WITH (FORCE)')
    report(f"fuzz on {request.param}: seed {FUZZ_SEED}, {TRIED['cases']} cases tried, "
           f"{TRIED['server_errors']} server errors")


def check(response: Any, path: str, method: str) -> None:
    TRIED["cases"] += 1
    if response.status_code >= 500:
        TRIED["server_errors"] += 1
    assert response.status_code < 500, f"{method} {path} -> {response.status_code}: {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/json"), response.headers["content-type"]
    body = response.json()
    if response.status_code >= 400:
        assert isinstance(body.get("error"), str) and body["error"], body
        return
    schema = schema_for(path, method, response.status_code)
    assert schema is not None, f"{method} {path} answered {response.status_code} but is not described"
    errors = sorted(Draft202012Validator(schema).iter_errors(body), key=str)
    assert not errors, f"{method} {path}: {errors[0].message}"


FUZZ = settings(max_examples=BUDGET, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                           HealthCheck.too_slow])


@seed(FUZZ_SEED)
@FUZZ
@given(body=run_bodies)
@example(body={"kind": "echo", "name": "\u0000", "tasks": [{"path": "a\u0000.csv"}]})  # PostgreSQL refuses a NUL
def test_start_run_bodies(fuzz_client: TestClient, body: dict[str, Any]) -> None:
    if isinstance(body.get("tasks"), int) and body["tasks"] > 200:
        body["tasks"] = 200  # keep the database small; the limit itself is tested elsewhere
    check(fuzz_client.post("/api/runs", content=json.dumps(body)), "/api/runs", "POST")


@seed(FUZZ_SEED)
@FUZZ
@given(body=task_bodies)
@example(body={"kind": "echo", "args": {"x": "\u0000"}, "label": "\u0000"})
def test_submit_task_bodies(fuzz_client: TestClient, body: dict[str, Any]) -> None:
    check(fuzz_client.post("/api/tasks", content=json.dumps(body)), "/api/tasks", "POST")


@seed(FUZZ_SEED)
@FUZZ
@given(raw=raw_bodies)
def test_start_run_raw_bytes(fuzz_client: TestClient, raw: bytes) -> None:
    check(fuzz_client.post("/api/runs", content=raw), "/api/runs", "POST")


@seed(FUZZ_SEED)
@FUZZ
@given(path=paths, method=methods, query=queries)
def test_every_endpoint_and_method(fuzz_client: TestClient, path: str, method: str, query: dict[str, str]) -> None:
    response = fuzz_client.request(method, path, params=query)
    check(response, path, method)
    assert fuzz_client.get("/healthz").status_code == 200


@seed(FUZZ_SEED)
@FUZZ
@given(body=schedule_bodies)
@example(body={"name": "\u0000", "cron": "0 2 * * *", "task": {"kind": "echo"}})
@example(body={"name": "n", "cron": "0 2 * * *", "task": {"kind": "echo", "args": {"x": "\u0000"}}})
def test_make_schedule_bodies(fuzz_client: TestClient, body: dict[str, Any]) -> None:
    check(fuzz_client.post("/api/schedules", content=json.dumps(body)), "/api/schedules", "POST")


@seed(FUZZ_SEED)
@FUZZ
@given(body=limit_bodies, name=st.sampled_from(["imports", "default", "-bad", "k%2Fslash", "x" * 101]),
       where=st.sampled_from(["queues", "keys"]))
@example(body={"concurrency": 0}, name="imports", where="queues")
@example(body={"rate": "10"}, name="k%2Fslash", where="keys")
def test_set_limits_bodies(fuzz_client: TestClient, body: Any, name: str, where: str) -> None:
    path = f"/api/{where}/{name}"
    check(fuzz_client.put(path, content=json.dumps(body)), path, "PUT")
