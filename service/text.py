"""Text the database can store, made so where it enters (README, "Guarantees").

PostgreSQL refuses a NUL character (``\\x00``) in any text, and neither backend can store a lone
surrogate (``\\udc80``, what ``surrogateescape`` makes of undecodable bytes), which no UTF-8
encoder accepts. Such text comes from two places, and is handled differently at each:

* **from task code** (errors, tracebacks, output): it is *made* storable, as the supervisor
  receives it (:func:`storable`): a NUL becomes ``␀`` and a lone surrogate ``�``, so a task that
  prints a NUL is still shown what it printed, and nothing it writes can fail a heartbeat or a
  batch of other tasks' ends;
* **from people** (a run's name, a label, args): it is *refused* before anything is written
  (:func:`check_text`, :func:`check_json_text`), naming the field, since silently changing what
  someone asked for would be worse.

A task's result and checkpoint are JSON: a NUL inside a string is stored escaped, and a lone
surrogate cannot cross the wire from a task process at all (:mod:`service.task_process.wire`).
"""

from __future__ import annotations

import re
from typing import Any

from service.errors import InvalidInput

NUL_SHOWN = "\u2400"  # ␀, SYMBOL FOR NULL: what a NUL from task code is stored as
_SURROGATE = re.compile("[\ud800-\udfff]")
NUL_CHARACTER = "contains a NUL character (\\u0000), which the database cannot store"
LONE_SURROGATE = "contains a lone surrogate (not valid Unicode), which the database cannot store"
MAX_DEPTH = 100  # of nested JSON walked (deeper values were refused when they were parsed)


def storable(text: str | None) -> str | None:
    """``text`` with each NUL as ``␀`` and each lone surrogate as ``�``; None stays None."""
    if text is None or (text.isascii() and "\x00" not in text):
        return text
    text = text.replace("\x00", NUL_SHOWN)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATE.sub("\ufffd", text)
    return text


def storable_json(value: Any, depth: int = 0) -> Any:
    """``value`` with every string in it (keys too) free of lone surrogates."""
    if isinstance(value, str):
        return value if value.isascii() else _SURROGATE.sub("\ufffd", value)
    if depth >= MAX_DEPTH:
        return value
    if isinstance(value, list):
        return [storable_json(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {storable_json(k, depth + 1): storable_json(v, depth + 1) for k, v in value.items()}
    return value


def unstorable(text: str) -> str | None:
    """Why ``text`` cannot be stored as it is, or None when it can."""
    if text.isascii() and "\x00" not in text:
        return None
    if "\x00" in text:
        return NUL_CHARACTER
    if _SURROGATE.search(text):
        return LONE_SURROGATE
    return None


def check_text(value: str | None, field: str) -> None:
    """Refuse text a person gave that cannot be stored.

    Raises:
        InvalidInput: ``field`` holds a NUL or a lone surrogate (the message names the field).
    """
    if value is not None and (why := unstorable(value)):
        raise InvalidInput(f"{field} {why}")


def check_json_text(value: Any, field: str, depth: int = 0) -> None:
    """Refuse JSON a person gave with a string (or key) that cannot be stored, naming where it is.

    Raises:
        InvalidInput: e.g. ``tasks[3].args.path contains a NUL character ...``.
    """
    if isinstance(value, str):
        check_text(value, field)
    elif depth < MAX_DEPTH and isinstance(value, dict):
        for key, item in value.items():
            check_text(str(key), f"a key of {field}")
            check_json_text(item, f"{field}.{key}", depth + 1)
    elif depth < MAX_DEPTH and isinstance(value, list):
        for index, item in enumerate(value):
            check_json_text(item, f"{field}[{index}]", depth + 1)
