"""How the pictures' axes are labelled: steps of time, a clock after the start, short durations, round counts.

Pure functions of numbers, shared by the timeline (:mod:`web.timeline`) and the durations'
histogram (:mod:`web.charts`).
"""

from __future__ import annotations

import math

TIME_STEPS_S = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
                10800, 21600, 43200, 86400)


def time_ticks(span_s: float, most: int = 6) -> list[float]:
    """Seconds after the start where the axis is labelled: a step from TIME_STEPS_S, at most ``most`` + 1 ticks."""
    step = next((s for s in TIME_STEPS_S if span_s / s <= most), TIME_STEPS_S[-1] * math.ceil(span_s / 86400 / most))
    return [i * step for i in range(int(span_s / step + 1e-9) + 1)]


def short_duration(seconds: float) -> str:
    """An axis's duration: ``0.25s``, ``45s``, ``1:30``, ``1:02:00``."""
    if seconds < 60:
        return f"{seconds:.2f}".rstrip("0").rstrip(".") + "s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def nice_ceiling(n: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, … that is at least ``n``."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= n:
                return m * step
        step *= 10


def clock(seconds: float, span_s: float) -> str:
    """``0:45``, ``12:05``, ``1:02:00`` after the start; tenths of a second for a very short run."""
    if span_s < 10:
        return f"{seconds:.2f}s" if span_s < 1 else f"{seconds:.1f}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
