"""The run's pictures as shapes, and two of them: the durations' histogram and the recent runs' chart.

Every shape's x and width are percentages of the plot's width (the SVG is as wide as the page,
its text never scales), its y and height pixels. Nothing here reads the database or renders
HTML: :func:`histogram` and :func:`runs_chart` take rows and return shapes, so each can be
tested alone; the timeline is :mod:`web.timeline`, the axes' labels :mod:`web.chart_axes`.
Each outcome is drawn with a colour *and* a pattern (see ``_chart_patterns.html``), and every
picture carries its figures in words too.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from service.faces.summary import format_seconds, run_status_words
from service.storage.history import RunHistory
from service.storage.views import RunView
from web.chart_axes import nice_ceiling, short_duration

HIST_PX = 140
RUNS_PX = 110


@dataclass(frozen=True)
class Rect:
    """A bar: x and w in % of the plot's width, y and h in px; ``kind`` names its fill."""

    x: float
    w: float
    y: float
    h: float
    kind: str
    title: str


@dataclass(frozen=True)
class Mark:
    """A positioned label: x in %, y in px (a tick, a lane's name, an outage's caption)."""

    x: float
    y: float
    text: str
    anchor: str = "middle"


@dataclass
class Histogram:
    bars: list[Rect] = field(default_factory=list)
    ticks: list[Mark] = field(default_factory=list)
    grid: list[Mark] = field(default_factory=list)  # y gridlines with their counts
    slowest_x: float | None = None
    slowest_label: str = ""
    slowest_anchor: str = "middle"
    rows: list[tuple[str, int, int]] = field(default_factory=list)  # range, succeeded, failed
    description: str = ""
    height: float = HIST_PX + 44
    base: float = HIST_PX + 20
    finished: int = 0


def histogram(h: RunHistory) -> Histogram:
    """Succeeded and failed tasks by how long they took (first start to end), the slowest marked."""
    hist = Histogram()
    if not h.durations:
        hist.description = "No task has finished yet."
        return hist
    per_bin: dict[int, Counter[str]] = defaultdict(Counter)
    for status, b, n in h.durations:
        per_bin[b][status] += n
    lo, hi = min(per_bin), max(per_bin)
    bins = hi - lo + 1
    peak = max(sum(c.values()) for c in per_bin.values())
    top = nice_ceiling(peak)
    width = 100 / bins
    secs = h.bin_ms / 1000
    for b in range(lo, hi + 1):
        c = per_bin.get(b, Counter())
        label = f"{format_seconds(b * secs)}–{format_seconds((b + 1) * secs)}"
        hist.rows.append((label, c["succeeded"], c["failed"]))
        base = hist.base
        for status in ("succeeded", "failed"):
            if c[status]:
                part = max(2.0, HIST_PX * c[status] / top)  # a bin of one task among thousands still shows
                base -= part
                hist.bars.append(Rect((b - lo) * width + width * 0.08, width * 0.84, base, part, status,
                                      f"{label}: {c[status]} {status}"))
    every = max(1, math.ceil(bins / 4))
    hist.ticks = [Mark(100 * (b - lo) / bins, hist.base + 16, short_duration(b * secs),
                       "start" if b == lo else "end" if b == hi + 1 else "middle") for b in range(lo, hi + 2, every)]
    hist.grid = [Mark(0, hist.base - HIST_PX * v / top, f"{v:,}", "start") for v in (top // 2, top) if v]
    slow = h.slowest[0]
    hist.slowest_x = min(100.0, 100 * (slow.seconds / secs - lo) / bins)
    name = slow.label or f"task {slow.position + 1}"
    hist.slowest_label = f"slowest: {name}, {format_seconds(slow.seconds)}"
    hist.slowest_anchor = "end" if hist.slowest_x > 60 else "start"
    hist.finished = sum(n for _, _, n in h.durations)
    ok = sum(n for s, _, n in h.durations if s == "succeeded")
    hist.description = (f"{hist.finished:,} finished tasks by time from first start to end, in bins of "
                        f"{format_seconds(secs)}: {ok:,} succeeded, {hist.finished - ok:,} failed; "
                        f"the slowest, {name}, took {format_seconds(slow.seconds)}.")
    return hist


@dataclass
class RunsChart:
    bars: list[Rect] = field(default_factory=list)
    links: list[tuple[int, float, float, str]] = field(default_factory=list)  # run id, x, w, aria-label
    labels: list[Mark] = field(default_factory=list)
    rows: list[dict[str, object]] = field(default_factory=list)
    height: float = RUNS_PX + 22
    base: float = RUNS_PX + 4
    live: bool = False


def runs_chart(runs: list[RunView]) -> RunsChart:
    """The recent runs (given latest first), oldest on the left: each a bar of its tasks' shares."""
    chart = RunsChart()
    shown = list(reversed(runs))
    slot = 100 / max(len(shown), 12)
    every = 1 if len(shown) <= 8 else 5
    for i, run in enumerate(shown):
        c, total = run.counts, max(run.total, 1)
        x, w = i * slot + slot * 0.15, slot * 0.7
        words = (f"run #{run.id}{' ' + run.name if run.name else ''}: {c.get('succeeded', 0):,} succeeded, "
                 f"{c.get('failed', 0):,} failed, {c.get('cancelled', 0):,} cancelled of {run.total:,} · "
                 f"{run_status_words(run.status)}")
        base = chart.base
        for status in ("succeeded", "failed", "cancelled"):
            if c.get(status, 0):
                part = max(1.5, RUNS_PX * c[status] / total)
                base -= part
                chart.bars.append(Rect(x, w, base, part, status, words))
        chart.links.append((run.id, x, w, words))
        if i % every == 0 or i == len(shown) - 1:
            chart.labels.append(Mark(x + w / 2, chart.base + 14, f"#{run.id}"))
        chart.rows.append({"id": run.id, "name": run.name, "status": run_status_words(run.status), "total": run.total,
                           "succeeded": c.get("succeeded", 0), "failed": c.get("failed", 0),
                           "cancelled": c.get("cancelled", 0)})
        chart.live = chart.live or run.live
    return chart
