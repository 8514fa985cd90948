"""Checking values with pydantic models, and telling people what was wrong in one sentence.

Kinds describe their run parameters as pydantic models (:mod:`service.task_process.kinds.params`) and the
HTTP API its bodies (:mod:`web.schemas`); both validate through :func:`check`, so a mistake
reads the same everywhere: ``min_seconds must be at least 0, got -1``, naming where it was
(``tasks[3].args``) and never pydantic's wording or URLs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, BeforeValidator, TypeAdapter, ValidationError

from service.errors import InvalidInput
from service.text import LONE_SURROGATE

M = TypeVar("M", bound=BaseModel)
SHOWN_CHARS = 40


def integral(value: Any) -> Any:
    """30762.0 is the whole number 30762 (as JSON Schema's ``integer`` says); 30762.5 is not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integral = BeforeValidator(integral)


def check(model: type[M], data: Any, *, strict: bool = True, owner: str | None = None) -> M:
    """``data`` validated as ``model``; ``owner`` names what takes these fields ("sleep"), for errors.

    Raises:
        InvalidInput: one sentence on the first problem (and how many more there are).
    """
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as exc:
        raise InvalidInput(readable(exc, owner=(owner, sorted(model.model_fields)) if owner else None)) from None


def check_as(
    adapter: TypeAdapter[Any], data: Any, *, strict: bool = True, hidden: Iterable[str] = (),
    owners: Mapping[str, tuple[str, list[str]]] | None = None,
) -> Any:
    """Like :func:`check`, for a type that is not a model (a union of them, say).

    ``hidden`` names the union's tags (left out of locations); ``owners`` maps a tag to what
    takes that choice's fields and their names, to say so of an unknown field.
    """
    try:
        return adapter.validate_python(data, strict=strict)
    except ValidationError as exc:
        first = next((e for e in exc.errors() if e["type"] != "missing"), exc.errors()[0])["loc"]
        owner = (owners or {}).get(str(first[0])) if len(first) == 2 else None
        raise InvalidInput(readable(exc, hidden=hidden, owner=owner)) from None


def readable(
    exc: ValidationError, *, hidden: Iterable[str] = (), owner: tuple[str, list[str]] | None = None,
) -> str:
    """The first error as a sentence. ``hidden`` names location parts to leave out (union tags);
    ``owner`` is (what takes the top-level fields, their names), to say so of an unknown one.
    """
    errors = exc.errors(include_url=False)
    first = next((e for e in errors if e["type"] != "missing"), errors[0])  # what was sent, before what was not
    skip = set(hidden)
    where = _path([part for part in first["loc"] if part not in skip])
    if owner is not None and first["type"] == "extra_forbidden" and "." not in where and "[" not in where:
        sentence = f"{owner[0]} does not take {where!r}; it takes {', '.join(owner[1]) or 'nothing more'}"
    else:
        sentence = _sentence(first, where)
    if len(errors) > 1:
        sentence += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return sentence


def _path(parts: list[int | str]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 1] + "…"


def _sentence(error: Any, where: str) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    subject = where or "the body"
    if kind == "missing":
        return f"{subject} is required"
    if kind == "extra_forbidden":
        parent, _, name = where.rpartition(".")
        return f"unknown field {name or where!r}" + (f" in {parent}" if parent else "")
    if kind == "union_tag_invalid" or kind == "union_tag_not_found" or kind.startswith("tenure_"):
        return f"{subject}: {error['msg']}"
    wants = {
        "int_type": "a whole number", "int_from_float": "a whole number", "int_parsing": "a whole number",
        "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
        "string_type": "text", "bool_type": "true or false", "bool_parsing": "true or false",
        "dict_type": "a JSON object", "model_type": "a JSON object", "model_attributes_type": "a JSON object",
        "list_type": "a list",
    }.get(kind)
    if wants is not None:
        return f"{subject} must be {wants}, got {_shown(value)}"
    bounds = {"greater_than_equal": ("at least", "ge"), "less_than_equal": ("at most", "le"),
              "greater_than": ("more than", "gt"), "less_than": ("less than", "lt")}.get(kind)
    if bounds is not None:  # a number out of range; typed as text on a form, shown as typed
        limit, got = ctx.get(bounds[1]), value if isinstance(value, str) else _shown(value)
        return f"{subject} must be {bounds[0]} {limit:g}, got {got}" if isinstance(limit, float) else \
            f"{subject} must be {bounds[0]} {limit}, got {got}"
    if kind == "too_short" and ctx.get("min_length") == 1:
        return f"{subject} must not be empty"
    if kind in ("too_long", "too_short"):
        unit = "characters" if isinstance(value, str) else "items"
        limit = ctx.get("max_length") if kind == "too_long" else ctx.get("min_length")
        return f"{subject} must have {'at most' if kind == 'too_long' else 'at least'} {limit} {unit}"
    if kind in ("string_too_long", "string_too_short"):
        limit = ctx.get("max_length") if kind == "string_too_long" else ctx.get("min_length")
        return f"{subject} must be {'at most' if kind == 'string_too_long' else 'at least'} {limit} characters"
    if kind == "string_unicode":  # a lone surrogate: said as service.text says it of the fields it checks
        return f"{subject} {LONE_SURROGATE}"
    if kind == "literal_error" or kind == "enum":
        return f"{subject} must be one of {ctx.get('expected')}, got {_shown(value)}"
    message = str(error["msg"]).replace("Input should be", "must be").replace("Value error, ", "")
    return f"{subject}: {message}"
