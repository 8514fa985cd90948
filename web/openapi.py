"""The OpenAPI description of the JSON API, served at /openapi.json.

Every schema in it is generated from the pydantic models in :mod:`web.schemas`, the ones the
API validates with; only the paths, which model each reads and answers, are listed here.
The description names the task kinds registered when it is built, so it is built per set of
kinds (:func:`spec`).
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel, TypeAdapter

from service.config import QUEUE_NAME
from web import queue_schemas, schedule_schemas, schemas

REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": REF.format(model=name)}


def _json(schema: dict[str, Any], description: str = "ok") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _json(_ref("Error"), "error: {\"error\": \"what was wrong\"}") for code in codes}


def _schema_of(kind: Any) -> dict[str, Any]:
    schema: dict[str, Any] = TypeAdapter(kind).json_schema()
    schema.pop("title", None)
    return schema


def _path_id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _schema_of(schemas.RowId)}


def _page(model: type[BaseModel] = schemas.Page) -> list[dict[str, Any]]:
    props = model.model_json_schema()["properties"]
    return [{"name": name, "in": "query", "required": False, "description": prop.pop("description", ""),
             "schema": {k: v for k, v in prop.items() if k != "title"}} for name, prop in props.items()]


def _key() -> dict[str, Any]:
    schema = _schema_of(schemas.IdempotencyKey)
    return {"name": "Idempotency-Key", "in": "header", "required": False,
            "description": schema.pop("description"), "schema": schema}


BUSY = (503, 507)  # the database is unavailable, or full
NO_NUL = ("No text in it (a name, a label, a string or key of args) may contain a NUL (\\u0000) or a lone "
          "surrogate, which the database cannot store: 422.")


NOT_BOTH = {"not": {"required": ["start_at", "delay_s"],  # given both (neither null): 422
                    "properties": {"start_at": {"type": "string"}, "delay_s": {"type": "number"}}}}


def _components(catalog: schemas.Catalog) -> dict[str, Any]:
    inputs: list[tuple[str, Any, TypeAdapter[Any]]] = [
        ("RunRequest", "validation", catalog.run), ("TaskRequest", "validation", TypeAdapter(catalog.task)),
        ("ScheduleRequest", "validation", TypeAdapter(schedule_schemas.request_model(catalog))),
        *((model.__name__, "validation", TypeAdapter(model))
          for model in (queue_schemas.QueueRequest, queue_schemas.KeyRequest)),
        *((model.__name__, "serialization", TypeAdapter(model))
          for model in (*schemas.ANSWERS, *schedule_schemas.ANSWERS, *queue_schemas.ANSWERS)),
    ]
    tops, defs = TypeAdapter.json_schemas(inputs, ref_template=REF)
    components: dict[str, Any] = dict(defs.get("$defs", {}))
    run = tops[("RunRequest", "validation")]
    components["TaskRequest"]["description"] += " " + NO_NUL
    for schema in components.values():
        if "start_at" in schema.get("properties", {}):
            schema.update(NOT_BOTH)
        if "key_limit" in schema.get("properties", {}):
            schema["dependentRequired"] = {"key_limit": ["key"]}  # a limit of what? (422)
    components["ScheduleRequest"]["description"] += " " + NO_NUL
    components["RunRequest"] = {
        "description": "Start a run: a simulation (tasks a number, with the kind's parameters; kind \"sleep\" "
                       "when absent), or your own tasks (tasks a list). " + NO_NUL,
        **run}
    return components


@functools.cache
def _spec(catalog: schemas.Catalog) -> dict[str, Any]:
    key, page = _key(), _page()
    run_id, task_id = _path_id("run_id"), _path_id("task_id")
    made = {"200": _json(_ref("Run"), "made earlier by a request with this Idempotency-Key and this body")}
    return {
        "openapi": "3.1.0",
        "info": {"title": "tenure", "version": "0.3.0",
                 "description": "A persistent, crash-recoverable job service: runs of leased, heartbeated tasks. "
                                f"Task kinds here: {', '.join(catalog.kind_names)}."},
        "paths": {
            "/api/runs": {
                "post": {
                    "summary": "Start a run (a simulation, or a list of your own tasks)",
                    "parameters": [key],
                    "requestBody": {"required": True,
                                    "content": {"application/json": {"schema": _ref("RunRequest")}}},
                    "responses": {"201": _json(_ref("Run"), "the run was created"), **made,
                                  **_errors(400, 409, 413, 415, 422, *BUSY)},
                },
                "get": {"summary": "Run history, latest first", "parameters": page,
                        "responses": {"200": _json(_ref("RunPage")), **_errors(422, *BUSY)}},
            },
            "/api/runs/{run_id}": {
                "get": {"summary": "A run with its tasks", "parameters": [run_id, *_page(schemas.TaskSlice)],
                        "responses": {"200": _json(_ref("RunWithTasks")), **_errors(404, 422, *BUSY)}},
            },
            "/api/runs/{run_id}/cancel": {
                "post": {"summary": "Cancel a running run", "parameters": [run_id],
                         "responses": {"200": _json(_ref("Cancelled")), **_errors(404, 409, *BUSY)}},
            },
            "/api/runs/{run_id}/retry": {
                "post": {"summary": "Queue a finished run's failed and cancelled tasks again", "parameters": [run_id],
                         "responses": {"200": _json(_ref("Retried")), **_errors(404, 409, *BUSY)}},
            },
            "/api/tasks": {
                "post": {
                    "summary": "Queue one task outside any run",
                    "parameters": [key],
                    "requestBody": {"required": True,
                                    "content": {"application/json": {"schema": _ref("TaskRequest")}}},
                    "responses": {"201": _json(_ref("TaskDetail"), "the task was queued"),
                                  "200": _json(_ref("TaskFound"), "made earlier by a request with this "
                                                                  "Idempotency-Key and this body, or an active task "
                                                                  "holds its unique_key (unique: true)"),
                                  **_errors(400, 409, 413, 415, 422, *BUSY)},
                },
                "get": {"summary": "Tasks submitted on their own (and completion hooks), newest first",
                        "parameters": page, "responses": {"200": _json(_ref("TaskPage")), **_errors(422, *BUSY)}},
            },
            "/api/tasks/{task_id}": {
                "get": {"summary": "A task: status, progress, attempts with their outcomes and output, result, error",
                        "parameters": [task_id],
                        "responses": {"200": _json(_ref("TaskDetail")), **_errors(404, *BUSY)}},
            },
            "/api/tasks/{task_id}/result": {
                "get": {"summary": "A task's result: 200 once it succeeded, 202 until it ends, 409 if it failed",
                        "parameters": [task_id],
                        "responses": {"200": _json(_ref("TaskResult"), "it succeeded"),
                                      "202": _json(_ref("TaskResult"), "it has not ended yet"),
                                      "409": _json(_ref("TaskResult"), "it failed or was cancelled"),
                                      **_errors(404, *BUSY)}},
            },
            "/api/tasks/{task_id}/cancel": {
                "post": {"summary": "Cancel a task that has not ended", "parameters": [task_id],
                         "responses": {"200": _json(_ref("TaskDetail")), **_errors(404, 409, *BUSY)}},
            },
            **_schedule_paths(),
            **_flow_paths(run_id),
            "/openapi.json": {"get": {"summary": "This description",
                                      "responses": {"200": _json({"type": "object", "required": ["openapi"]})}}},
            "/healthz": {
                "get": {"summary": "Liveness of the database and the supervisor",
                        "responses": {"200": _json(_ref("Health")), "503": _json(_ref("Health"), "unhealthy")}},
            },
        },
        "components": {"schemas": _components(catalog)},
    }


def _schedule_paths() -> dict[str, Any]:
    ref = {"name": "ref", "in": "path", "required": True, "description": "the schedule's id or name",
           "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^/]*\\S[^/]*$"}}
    one = {"200": _json(_ref("Schedule")), **_errors(404, *BUSY)}
    return {
        "/api/schedules": {
            "get": {"summary": "Every schedule, by name, with its next fire times and latest fires",
                    "responses": {"200": _json(_ref("ScheduleList")), **_errors(*BUSY)}},
            "post": {"summary": "Make a schedule: each slot of a cron expression in a zone starts a task or a run",
                     "requestBody": {"required": True,
                                     "content": {"application/json": {"schema": _ref("ScheduleRequest")}}},
                     "responses": {"201": _json(_ref("Schedule"), "the schedule was made"),
                                   **_errors(400, 409, 413, 415, 422, *BUSY)}},
        },
        "/api/schedules/{ref}": {
            "get": {"summary": "A schedule", "parameters": [ref], "responses": one},
            "delete": {"summary": "Delete a schedule and its fire history (what it started stays)",
                       "parameters": [ref], "responses": {"200": _json(_ref("Deleted")), **_errors(404, *BUSY)}},
        },
        "/api/schedules/{ref}/fires": {
            "get": {"summary": "A schedule's fires, newest first",
                    "parameters": [ref, *_page(schedule_schemas.FirePage)],
                    "responses": {"200": _json(_ref("FireList")), **_errors(404, 422, *BUSY)}},
        },
        "/api/schedules/{ref}/pause": {
            "post": {"summary": "Pause: no slot fires until resumed", "parameters": [ref], "responses": one}},
        "/api/schedules/{ref}/resume": {
            "post": {"summary": "Resume from the next slot (slots while paused are not caught up)",
                     "parameters": [ref], "responses": one}},
        "/api/schedules/{ref}/fire": {
            "post": {"summary": "Start its task or run now, outside its slots", "parameters": [ref],
                     "responses": {"200": _json(_ref("FiredNow")), **_errors(404, *BUSY)}}},
    }


def _flow_paths(run_id: dict[str, Any]) -> dict[str, Any]:
    name = {"name": "name", "in": "path", "required": True, "description": "the queue's name",
            "schema": {"type": "string", "pattern": QUEUE_NAME.pattern}}
    key = {"name": "name", "in": "path", "required": True, "description": "the key (it may hold a /)",
           "schema": {"type": "string", "minLength": 1, "maxLength": 200,
                      "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*\\S[^\\u0000-\\u001f\\u007f-\\u009f]*$"}}
    one = {"200": _json(_ref("Queue")), **_errors(404, *BUSY)}
    limits = {"200": _json(_ref("Queue")), **_errors(400, 413, 415, 422, *BUSY)}

    def body(model: str) -> dict[str, Any]:
        return {"required": False, "content": {"application/json": {"schema": _ref(model)}}}

    paused = {"200": _json(_ref("RunPaused")), **_errors(404, 409, *BUSY)}
    return {
        "/api/queues": {"get": {"summary": "Every queue: its depth, running against its limit, rate, oldest wait, "
                                           "paused or not", "responses": {"200": _json(_ref("QueueList")),
                                                                          **_errors(*BUSY)}}},
        "/api/queues/{name}": {
            "get": {"summary": "A queue", "parameters": [name], "responses": one},
            "put": {"summary": "Declare a queue and set its limits (a field left out keeps its value; null removes "
                               "that limit)", "parameters": [name], "requestBody": body("QueueRequest"),
                    "responses": limits},
        },
        "/api/queues/{name}/pause": {
            "post": {"summary": "Pause a queue: none of its attempts starts on any worker until resumed (what runs "
                                "finishes)", "parameters": [name], "responses": one}},
        "/api/queues/{name}/resume": {
            "post": {"summary": "Resume a paused queue", "parameters": [name], "responses": one}},
        "/api/keys/{name}": {
            "get": {"summary": "A concurrency key's limits and its attempts running now", "parameters": [key],
                    "responses": {"200": _json(_ref("Key")), **_errors(404, *BUSY)}},
            "put": {"summary": "Set a concurrency key's limits (a field left out keeps its value; null removes "
                               "that limit)", "parameters": [key], "requestBody": body("KeyRequest"),
                    "responses": {"200": _json(_ref("Key")), **_errors(400, 413, 415, 422, *BUSY)}},
        },
        "/api/runs/{run_id}/pause": {
            "post": {"summary": "Pause a live run: none of its tasks starts until resumed (what runs finishes)",
                     "parameters": [run_id], "responses": paused}},
        "/api/runs/{run_id}/resume": {
            "post": {"summary": "Resume a paused run", "parameters": [run_id], "responses": paused}},
    }


def spec() -> dict[str, Any]:
    """The description, for the task kinds registered now."""
    return _spec(schemas.catalog())
