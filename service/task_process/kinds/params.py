"""A kind's run parameters: typed fields of a pydantic model, checked before anything is written.

A kind that takes parameters registers a model of them (``register(..., params=Model)``); the
model is the one description of them: what Python, the CLI, the form and the HTTP API accept,
and what ``/openapi.json`` says. A kind's ``validate`` then only completes them (draws a seed).
"""

from __future__ import annotations

import random
from typing import Annotated, Any

from annotated_types import Ge, Le
from pydantic import AllowInfNan, BaseModel, ConfigDict

from service.validation import Integral, check

MAX_SECONDS = 86_400.0  # one attempt of a built-in kind lasts at most a day
MAX_SEED = 2**63 - 1

Finite = AllowInfNan(False)
Seconds = Annotated[float, Finite, Ge(0), Le(MAX_SECONDS)]
Rate = Annotated[float, Finite, Ge(0), Le(1)]
Seed = Annotated[int, Ge(0), Le(MAX_SEED), Integral]


class Params(BaseModel):
    """Base of a kind's parameters: unknown names are refused, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def checked(model: type[Params], params: dict[str, Any], kind: str) -> dict[str, Any]:
    """``params`` of a run of ``kind`` checked by ``model``, every default filled in. Raises InvalidInput."""
    return check(model, params, owner=kind).model_dump()


def seed(value: int | None) -> int:
    """The run's seed, or a fresh random one, stored so a re-run after a crash behaves the same."""
    return random.SystemRandom().randrange(MAX_SEED) if value is None else value
