"""The Python API refuses text the database cannot store as the HTTP API does: the shared rules of
:mod:`service.faces.plans` name the field, and nothing is written, on both backends."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import service
from service.errors import InvalidInput
from service.faces.plans import TaskSpec
from service.text import LONE_SURROGATE, NUL_CHARACTER

SUBMITS: dict[str, tuple[Callable[[service.Tenure], object], str]] = {
    "run name": (lambda t: t.submit_run(2, "sleep", {"seed": 1}, name="a\x00"), f"name {NUL_CHARACTER}"),
    "parameter": (lambda t: t.submit_run(2, "echo", {"note": ["ok", "a\udc80"]}), f"note[1] {LONE_SURROGATE}"),
    "parameter's name": (lambda t: t.submit_run(2, "echo", {"a\x00": 1}), f"a parameter's name {NUL_CHARACTER}"),
    "args": (lambda t: t.submit_run("echo", [{"p": 1}, {"p": "a\x00"}]), f"entry 1: args.p {NUL_CHARACTER}"),
    "spec label": (lambda t: t.submit_run("echo", [TaskSpec(args={}, label="\udc80")]),
                   f"entry 0: label {LONE_SURROGATE}"),
    "task args key": (lambda t: t.submit_task("echo", {"x": {"\udc80": 1}}), f"a key of args.x {LONE_SURROGATE}"),
    "task label": (lambda t: t.submit_task("echo", {}, label="\x00"), f"label {NUL_CHARACTER}"),
}


@pytest.mark.parametrize(("submit", "message"), list(SUBMITS.values()), ids=list(SUBMITS))
def test_unstorable_text_is_refused_by_the_python_api(t: service.Tenure, submit: Callable[[service.Tenure], object],
                                                      message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        submit(t)
    assert str(refused.value) == message
    assert t.store.count_runs() == 0 and t.store.single_tasks(limit=1, offset=0)[1] == 0
