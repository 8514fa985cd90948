"""Checking a kind's run parameters: one clear sentence per mistake, before anything is written."""

from __future__ import annotations

import math
import random
from typing import Any

from service.errors import InvalidInput

MAX_SECONDS = 86_400.0  # one attempt of a built-in kind lasts at most a day
MAX_SEED = 2**63 - 1


def reject_unknown(params: dict[str, Any], allowed: set[str], kind: str) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InvalidInput(
            f"{kind} does not take {', '.join(unknown)}; it takes {', '.join(sorted(allowed))}"
        )


def number(params: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    """``params[key]`` as a finite float in [lo, hi] (``default`` when absent)."""
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{key} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidInput(f"{key} must be a finite number, got {value!r}")
    if not lo <= value <= hi:
        raise InvalidInput(f"{key} must be between {lo:g} and {hi:g}, got {value:g}")
    return value


def seed(params: dict[str, Any]) -> int:
    """The run's seed, or a fresh random one, stored so a re-run after a crash behaves the same."""
    value = params.get("seed")
    if value is None:
        return random.SystemRandom().randrange(MAX_SEED)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise InvalidInput(f"seed must be a whole number between 0 and {MAX_SEED}, got {value!r}")
    return value
