"""Fixtures of the engine suite: the test's database opened, and embedded supervisors at tiny durations."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import service
from service.supervisor.loop import Supervisor

FAST = {"heartbeat_s": 0.05, "lease_ttl_s": 1.0, "retry_base_s": 0.01, "idle_poll_s": 0.02,
        "poll_first_s": 0.01, "poll_max_s": 0.05}


@pytest.fixture
def t(open_tenure) -> service.Tenure:  # type: ignore[no-untyped-def]
    return open_tenure()


@pytest.fixture
def supervisor_defaults() -> dict[str, Any]:
    """Settings every supervisor of a test module gets beyond FAST (a module may override this)."""
    return {}


@pytest.fixture
def supervise(t: service.Tenure, supervisor_defaults: dict[str, Any]) -> Iterator:  # type: ignore[type-arg]
    """Factory: start a supervisor on the test's database; each is stopped, and must not have died, after."""
    started: list[Supervisor] = []

    def start(**overrides: object) -> Supervisor:
        sup = t.start_supervisor(**{**FAST, **supervisor_defaults, **overrides})
        started.append(sup)
        return sup

    yield start
    for sup in started:
        assert sup.stop(grace_s=0.0, timeout_s=5)
        assert sup.fatal is None
