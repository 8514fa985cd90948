"""How tenure's processes log: readable text by default, or one JSON object per line.

tenure's log messages are written as an event name and ``key=value`` pairs
(``attempt.succeeded task=12 attempt=2 supervisor=3``), which reads well as text. With
``--log-format json`` (or ``TENURE_LOG_FORMAT=json``) each record becomes one JSON object with
those pairs as fields, so that a log pipeline can filter on them; the ids are named as in the
database: ``run_id``, ``task_id``, ``attempt``, ``supervisor_id``. For example::

    {"time": "2026-12-02T02:53:37.818Z", "level": "INFO", "logger": "tenure.supervisor",
     "event": "attempt.succeeded", "task_id": 9, "attempt": 2, "supervisor_id": 2,
     "message": "attempt.succeeded task=9 attempt=2 supervisor=2"}
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import Any

from service.errors import InvalidInput

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_EVENT = re.compile(r"^([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+)\b")
_PAIR = re.compile(r"""(?<![\w.])([a-z][a-z0-9_]*)=('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s,;:]+)""")
RENAMED = {"task": "task_id", "run": "run_id", "supervisor": "supervisor_id"}
RESERVED = {"time", "level", "logger", "event", "message", "exception"}


def fields_of(message: str) -> dict[str, Any]:
    """The event name and ``key=value`` pairs of a tenure log message, as JSON-ready fields."""
    found: dict[str, Any] = {}
    event = _EVENT.match(message)
    if event:
        found["event"] = event.group(1)
    for key, raw in _PAIR.findall(message):
        name = RENAMED.get(key, key)
        if name in RESERVED or name in found:
            continue
        found[name] = _value(raw)
    return found


def _value(raw: str) -> Any:
    if raw[:1] in ("'", '"'):
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw[1:-1]
    if re.fullmatch(r"-?\d+", raw):
        return int(raw)
    if re.fullmatch(r"-?\d+\.\d*", raw):
        return float(raw)
    return {"None": None, "True": True, "False": False}.get(raw, raw)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        stamp = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "time": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            "level": record.levelname, "logger": record.name, **fields_of(message), "message": message,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def chosen_format(asked: str | None) -> str:
    """``--log-format``, else ``TENURE_LOG_FORMAT``, else text. Raises InvalidInput for another word."""
    value = (asked or os.environ.get("TENURE_LOG_FORMAT") or "text").strip().lower()
    if value not in FORMATS:
        where = "--log-format" if asked else "TENURE_LOG_FORMAT"
        raise InvalidInput(f"{where} {value!r} is not one of {', '.join(FORMATS)}")
    return value


def configure(level: str, log_format: str | None = None) -> None:
    """Send tenure's logs to stderr at ``level``, as text or JSON lines.

    Raises:
        InvalidInput: an unknown level or format.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise InvalidInput(f"--log-level {level!r} is not one of DEBUG, INFO, WARNING, ERROR")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen_format(log_format) == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=numeric, handlers=[handler])
    logging.getLogger("alembic").setLevel(logging.WARNING)
