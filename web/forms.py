"""Turning a start-a-run request (JSON body or HTML form) into the engine's arguments.

One parser for both faces, so the API and the page accept and refuse the same things.
Values are checked for type here; ranges and kind-specific rules are the engine's
(:func:`service.client.prepare_run`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from service.errors import InvalidInput
from service.protocol import get_kind

INTEGER_FIELDS = {"tasks", "seed", "max_attempts", "memory_limit_mb"}
NUMBER_FIELDS = {"min_seconds", "max_seconds", "failure_rate", "transient_rate", "time_scale", "timeout_s"}
TEXT_FIELDS = {"kind", "name"}
FIELDS = INTEGER_FIELDS | NUMBER_FIELDS | TEXT_FIELDS
ENGINE_FIELDS = {"max_attempts", "timeout_s", "memory_limit_mb"}
MAX_TEXT_CHARS = 200
MAX_INTEGER = 2**63 - 1


@dataclass
class RunRequest:
    count: int = 50
    kind: str = "sleep"
    params: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    max_attempts: int = 3
    timeout_s: float | None = None
    memory_limit_mb: int | None = None

    def submit_kwargs(self) -> dict[str, Any]:
        return {"name": self.name, "max_attempts": self.max_attempts, "timeout_s": self.timeout_s,
                "memory_limit_mb": self.memory_limit_mb}


def parse_json(data: Any) -> RunRequest:
    """A JSON body: strict types, unknown fields refused.

    Raises:
        InvalidInput: not an object, an unknown field, or a value of the wrong type.
    """
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object, like {\"tasks\": 50, \"kind\": \"sleep\"}")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}; the fields are {', '.join(sorted(FIELDS))}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        if key in INTEGER_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"{key} must be a whole number, got {value!r}")
            if abs(value) > MAX_INTEGER:
                raise InvalidInput(f"{key} is out of range: {value}")
        elif key in NUMBER_FIELDS:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidInput(f"{key} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise InvalidInput(f"{key} must be a finite number")
            value = float(value)
        elif not isinstance(value, str):
            raise InvalidInput(f"{key} must be text, got {value!r}")
        values[key] = value
    return _build(values, strict=True)


def parse_form(form: Mapping[str, Any]) -> RunRequest:
    """An HTML form: text fields, blanks meaning "the default", fields the kind does not take ignored.

    Raises:
        InvalidInput: a value that is not a number where one is needed.
    """
    values: dict[str, Any] = {}
    for key in FIELDS:
        raw = form.get(key)
        if not isinstance(raw, str) or not raw.strip():
            continue
        raw = raw.strip()
        if key in TEXT_FIELDS:
            values[key] = raw
            continue
        try:
            number = int(raw) if key in INTEGER_FIELDS else float(raw)
        except ValueError:
            kind = "a whole number" if key in INTEGER_FIELDS else "a number"
            raise InvalidInput(f"{key.replace('_', ' ')} must be {kind}, got {raw[:40]!r}") from None
        if isinstance(number, float) and not math.isfinite(number):
            raise InvalidInput(f"{key.replace('_', ' ')} must be a finite number")
        if isinstance(number, int) and abs(number) > MAX_INTEGER:
            raise InvalidInput(f"{key.replace('_', ' ')} is out of range")
        values[key] = number
    return _build(values, strict=False)


def _build(values: dict[str, Any], *, strict: bool) -> RunRequest:
    kind = values.pop("kind", "sleep")
    if len(kind) > MAX_TEXT_CHARS:
        raise InvalidInput("kind is too long")
    name = values.pop("name", None)
    if name is not None and len(name) > MAX_TEXT_CHARS:
        raise InvalidInput(f"name must be at most {MAX_TEXT_CHARS} characters")
    request = RunRequest(count=values.pop("tasks", 50), kind=kind, name=name)
    request.max_attempts = values.pop("max_attempts", 3)
    request.timeout_s = values.pop("timeout_s", None)
    request.memory_limit_mb = values.pop("memory_limit_mb", None)
    takes = get_kind(kind).takes
    if not strict:
        values = {k: v for k, v in values.items() if k in takes}
    request.params = values
    return request
