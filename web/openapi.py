"""The OpenAPI description of the JSON API, served at /openapi.json."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_STAMP = {"type": ["string", "null"], "format": "date-time"}
_STATUS_COUNTS = {
    "type": "object",
    "properties": {s: {"type": "integer", "minimum": 0}
                   for s in ("queued", "running", "retrying", "succeeded", "failed", "cancelled")},
    "required": ["queued", "running", "retrying", "succeeded", "failed", "cancelled"],
}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): {"description": "error", "content": {"application/json": {"schema": _ERROR}}}
            for code in codes}


def _ok(schema: dict[str, Any], code: int = 200, description: str = "ok") -> dict[str, Any]:
    return {str(code): {"description": description, "content": {"application/json": {"schema": schema}}}}


_RUN_ID = {"name": "run_id", "in": "path", "required": True,
           "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "tenure", "version": "0.1.0",
             "description": "A persistent, crash-recoverable job service: runs of leased, heartbeated tasks."},
    "paths": {
        "/api/runs": {
            "post": {
                "summary": "Start a run",
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/RunRequest"}}}},
                "responses": {**_ok({"$ref": "#/components/schemas/Run"}, 201, "the run was created"),
                              **_errors(400, 409, 413, 422, 503, 507)},
            },
            "get": {
                "summary": "Run history, latest first",
                "parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                ],
                "responses": {**_ok({"$ref": "#/components/schemas/RunPage"}), **_errors(422, 503, 507)},
            },
        },
        "/api/runs/{run_id}": {
            "get": {"summary": "A run with its tasks", "parameters": [_RUN_ID],
                    "responses": {**_ok({"$ref": "#/components/schemas/RunWithTasks"}), **_errors(404, 503, 507)}},
        },
        "/api/runs/{run_id}/cancel": {
            "post": {"summary": "Cancel a running run", "parameters": [_RUN_ID],
                     "responses": {**_ok({"type": "object", "required": ["cancelled", "run"], "properties": {
                         "cancelled": {"type": "integer"}, "run": {"$ref": "#/components/schemas/Run"}}}),
                         **_errors(404, 409, 503, 507)}},
        },
        "/api/runs/{run_id}/retry": {
            "post": {"summary": "Queue a finished run's failed tasks again", "parameters": [_RUN_ID],
                     "responses": {**_ok({"type": "object", "required": ["queued", "run"], "properties": {
                         "queued": {"type": "integer"}, "run": {"$ref": "#/components/schemas/Run"}}}),
                         **_errors(404, 409, 503, 507)}},
        },
        "/openapi.json": {
            "get": {"summary": "This description", "responses": _ok({"type": "object", "required": ["openapi"]})},
        },
        "/healthz": {
            "get": {"summary": "Liveness of the database and the supervisor",
                    "responses": {**_ok({"$ref": "#/components/schemas/Health"}),
                                  "503": {"description": "unhealthy", "content": {"application/json": {
                                      "schema": {"$ref": "#/components/schemas/Health"}}}}}},
        },
    },
    "components": {"schemas": {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "RunRequest": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "tasks": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 50},
                "kind": {"type": "string", "enum": ["sleep", "gen_task", "echo"], "default": "sleep"},
                "min_seconds": {"type": "number", "minimum": 0, "maximum": 86400, "default": 30},
                "max_seconds": {"type": "number", "minimum": 0, "maximum": 86400, "default": 120},
                "failure_rate": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.1},
                "transient_rate": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.1},
                "time_scale": {"type": "number", "minimum": 0, "maximum": 100},
                "seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                "name": {"type": ["string", "null"], "maxLength": 200},
                "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100, "default": 3},
                "timeout_s": {"type": ["number", "null"], "exclusiveMinimum": 0},
                "memory_limit_mb": {"type": ["integer", "null"], "minimum": 64, "maximum": 1048576,
                                    "description": "memory limit of each task's process (default: the worker's)"},
            },
        },
        "Run": {
            "type": "object",
            "required": ["id", "name", "status", "kind", "total", "counts", "created_at", "finished_at", "url"],
            "properties": {
                "id": {"type": "integer"}, "name": {"type": ["string", "null"]},
                "status": {"type": "string", "enum": ["running", "completed", "cancelled"]},
                "kind": {"type": "string"}, "total": {"type": "integer"}, "params": {"type": "object"},
                "counts": _STATUS_COUNTS, "created_at": {"type": "string", "format": "date-time"},
                "finished_at": _STAMP, "on_complete": {"type": ["string", "null"]},
                "hook_task_id": {"type": ["integer", "null"]}, "url": {"type": "string"},
            },
        },
        "Task": {
            "type": "object",
            "required": ["position", "status", "attempts", "progress", "result", "error", "started_at", "finished_at"],
            "properties": {
                "id": {"type": "integer"}, "position": {"type": "integer"},
                "status": {"type": "string",
                           "enum": ["queued", "running", "retrying", "succeeded", "failed", "cancelled"]},
                "attempts": {"type": "integer"}, "max_attempts": {"type": "integer"},
                "charged": {"type": "integer", "description": "attempts charged against max_attempts"},
                "lost": {"type": "integer", "description": "attempts lost through no fault of the task"},
                "progress": {"type": "number", "minimum": 0, "maximum": 1}, "result": {},
                "error": {"type": ["string", "null"]}, "started_at": _STAMP, "finished_at": _STAMP,
            },
        },
        "RunWithTasks": {"allOf": [{"$ref": "#/components/schemas/Run"}, {
            "type": "object", "required": ["tasks"],
            "properties": {"tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}}}}]},
        "RunPage": {"type": "object", "required": ["runs", "total", "limit", "offset"], "properties": {
            "runs": {"type": "array", "items": {"$ref": "#/components/schemas/Run"}},
            "total": {"type": "integer"}, "limit": {"type": "integer"}, "offset": {"type": "integer"}}},
        "Health": {"type": "object", "required": ["status", "database", "supervisor"], "properties": {
            "status": {"type": "string"}, "database": {"type": "string"}, "supervisor": {"type": "string"}}},
    }},
}
