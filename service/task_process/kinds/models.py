"""The built-in kinds' run parameters as pydantic models, apart from the kinds themselves.

The kinds register these by name (``params="service.task_process.kinds.models:SleepParams"``), so
a process that only runs tasks (the zygote and its task processes) never imports pydantic for
them; whoever checks a run's parameters (a submit, the API's schema) imports this module.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from annotated_types import Ge, Le
from pydantic import Field

from service.task_process.kinds import params as p


class SleepParams(p.Params):
    """Any values in range go together: no pair of them is refused."""

    min_seconds: p.Seconds = Field(30.0, description="the shortest task, in seconds")
    max_seconds: p.Seconds = Field(120.0, description="the longest task, in seconds (either order works)")
    failure_rate: p.Rate = Field(0.1, description="the share of tasks that fail for good part-way")
    transient_rate: p.Rate = Field(0.1, description="the share of the others that fail once, then succeed")
    seed: p.Seed | None = Field(None, description="makes the run repeatable (default: drawn and stored)")


class GenTaskParams(p.Params):
    time_scale: Annotated[float, p.Finite, Ge(0), Le(100)] = Field(1.0, description="multiplies the 1-99 s durations")
    shape: Literal["blocking", "polling", "random"] = Field("random", description="which fake each task is")
    seed: p.Seed | None = Field(None, description="makes the run repeatable (default: drawn and stored)")


def validate_sleep(params: dict[str, Any]) -> dict[str, Any]:
    values = p.checked(SleepParams, params, "sleep")
    return {**values, "seed": p.seed(values["seed"])}


def validate_gen_task(params: dict[str, Any]) -> dict[str, Any]:
    values = p.checked(GenTaskParams, params, "gen_task")
    return {**values, "seed": p.seed(values["seed"])}
