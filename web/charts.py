"""The run's pictures as shapes: pure geometry from a run's history to what the templates draw.

Every shape's x and width are percentages of the plot's width (the SVG is as wide as the page,
its text never scales), its y and height pixels. Nothing here reads the database or renders
HTML: :func:`timeline`, :func:`histogram` and :func:`runs_chart` take rows and return shapes,
so each can be tested alone. Each outcome is drawn with a colour *and* a pattern (see
``_chart_patterns.html``), and every picture carries its figures in words too.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from service.faces.summary import format_seconds, run_status_words
from service.storage.history import AttemptSpan, LaneCell, RunHistory
from service.storage.views import RunView

OUTCOMES = {  # attempt outcome → (icon, label); the legend's order
    "succeeded": ("✓", "succeeded"),
    "failed": ("✗", "failed"),
    "timed_out": ("◷", "timed out"),
    "crashed": ("↯", "crashed"),
    "lost": ("⟲", "lost, re-run (not charged)"),
    "released": ("⇄", "handed over at a restart"),
    "cancelled": ("⊘", "cancelled"),
    "running": ("▶", "running"),
}
# A big run's lanes draw four kinds of busy time, not eight.
GROUPS = {"succeeded": "succeeded", "running": "running", "failed": "failed", "timed_out": "failed",
          "crashed": "failed", "lost": "lost", "released": "lost", "cancelled": "lost"}
GROUP_LABELS = {"succeeded": ("✓", "succeeded"), "running": ("▶", "running"),
                "failed": ("✗", "failed, timed out or crashed"), "lost": ("⟲", "lost, handed over or cancelled")}
STACK = ("succeeded", "running", "lost", "failed")  # bottom to top within a lane's column

CAPTION_PX = 14  # a row above the lanes per outage label (at least one)
AXIS_PX = 24  # room below them for the time axis
MIN_BAR_PCT = 0.25  # an attempt of no visible length still shows
MAX_RECTS = 2_400  # a big run's lane columns drawn at most (columns merge pairwise past it)
HIST_PX = 140
RUNS_PX = 110
TIME_STEPS_S = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
                10800, 21600, 43200, 86400)


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
class Timeline:
    height: float  # of the whole SVG, px
    plot_top: float
    plot_bottom: float
    grouped: bool
    lane_size: int
    lanes: int
    bars: list[Rect] = field(default_factory=list)  # a small run's attempts
    cells: list[tuple[str, list[Rect]]] = field(default_factory=list)  # a big run's: (title, stacked parts)
    gaps: list[Rect] = field(default_factory=list)  # lost attempt → the next one's start, in its lane
    bands: list[Rect] = field(default_factory=list)  # outages, across every lane
    captions: list[Mark] = field(default_factory=list)  # the outages' labels
    ticks: list[Mark] = field(default_factory=list)
    lane_labels: list[Mark] = field(default_factory=list)
    now_x: float | None = None  # a live run's "now" line
    legend: list[tuple[str, str, str, int]] = field(default_factory=list)  # kind drawn, icon, label, attempts
    outcome_counts: list[tuple[str, str, str, int]] = field(default_factory=list)  # the same per outcome
    outages: list[tuple[str, str, int]] = field(default_factory=list)  # at, lasting, attempts lost
    rows: list[dict[str, object]] = field(default_factory=list)  # the table: a task or lane each
    description: str = ""
    span_s: float = 0.0


def timeline(h: RunHistory) -> Timeline:
    """The timeline: a lane per task (or per range of positions), time from the run's start to its end or now."""
    t0, span = h.created_at, _span_s(h)

    def x(at: datetime) -> float:
        return min(100.0, max(0.0, 100 * (at - t0).total_seconds() / span))

    grouped = h.cells is not None
    lanes = max(1, -(-h.total // h.lane_size))
    pitch = max(6.0 if grouped else 5.0, min(14.0, math.floor(560 / lanes)))
    top = 6 + CAPTION_PX * max(1, min(len(h.outages), 4))
    bottom = top + lanes * pitch
    tl = Timeline(height=bottom + AXIS_PX, plot_top=top, plot_bottom=bottom, grouped=grouped,
                  lane_size=h.lane_size, lanes=lanes, span_s=span)
    tl.ticks = [Mark(100 * s / span, bottom + 16, _clock(s, span), "start" if s == 0 else "middle")
                for s in time_ticks(span)]
    every = max(1, math.ceil(12 / pitch))  # a label at least 12 px from the next
    for lane in range(lanes):
        if lane % every == 0:
            first = lane * h.lane_size + 1
            tl.lane_labels.append(Mark(0, top + lane * pitch + pitch / 2 + 4, f"{first:,}", "end"))
    if h.live:
        tl.now_x = x(h.now)
    for i, outage in enumerate(h.outages):
        until = outage.reclaimed_at
        down = max(0.0, (until - outage.last_beat).total_seconds())
        left, right = x(outage.last_beat), x(until)
        label = f"server down {format_seconds(down)} · {outage.lost} lost"
        tl.bands.append(Rect(left, max(right - left, MIN_BAR_PCT), top, lanes * pitch, "outage",
                             f"{label}: from its last sign of life at {_clock(_at(h, outage.last_beat), span)} "
                             f"until its tasks were taken back at {_clock(_at(h, until), span)}"))
        anchor = "start" if left < 25 else "end" if right > 75 else "middle"
        at = {"start": left, "end": right}.get(anchor, (left + right) / 2)
        tl.captions.append(Mark(at, top - 6 - CAPTION_PX * (min(len(h.outages), 4) - 1 - i % 4), label, anchor))
        tl.outages.append((_clock((outage.last_beat - t0).total_seconds(), span), format_seconds(down), outage.lost))
    if h.attempts is not None:
        _task_lanes(tl, h, x, pitch)
    else:
        _grouped_lanes(tl, h, pitch)
    return tl


def _task_lanes(tl: Timeline, h: RunHistory, x: Callable[[datetime], float], pitch: float) -> None:
    assert h.attempts is not None
    beats = {o.supervisor_id: o.last_beat for o in h.outages}
    by_task: dict[int, list[AttemptSpan]] = defaultdict(list)
    for a in h.attempts:
        by_task[a.position].append(a)
    counts: Counter[str] = Counter()
    bar_h = max(3.0, pitch - 3)
    for position, attempts in sorted(by_task.items()):
        y = tl.plot_top + position * pitch + (pitch - bar_h) / 2
        name = attempts[0].label or f"task {position + 1}"
        cells = []
        for i, a in enumerate(attempts):
            counts[a.outcome] += 1
            end = a.finished_at or h.now
            stop = end
            beat = beats.get(a.supervisor_id) if a.outcome == "lost" and a.supervisor_id is not None else None
            if beat is not None and a.started_at <= beat <= end:
                stop = beat  # it ran until its server's last heartbeat; the rest is the outage
            seconds = (stop - a.started_at).total_seconds()
            icon, label = OUTCOMES.get(a.outcome, ("?", a.outcome))
            when = f"{_clock(_at(h, a.started_at), tl.span_s)}–{_clock(_at(h, stop), tl.span_s)}"
            title = f"{name}, attempt {a.attempt}: {icon} {label}, {when} ({format_seconds(seconds)})"
            if a.error and a.outcome != "succeeded":
                title += f" · {a.error}"
            left = x(a.started_at)
            tl.bars.append(Rect(left, max(x(stop) - left, MIN_BAR_PCT), y, bar_h, a.outcome, title))
            cells.append(f"{a.attempt}: {icon} {label} {when}")
            if a.outcome == "lost":
                following = attempts[i + 1].started_at if i + 1 < len(attempts) else None
                resume = following or (h.now if h.live else end)
                if resume > stop:
                    wait = format_seconds((resume - stop).total_seconds())
                    again = f"ran again as attempt {a.attempt + 1}" if following else "not run again yet"
                    why = "its server died" if stop != end else "it was lost"
                    tl.gaps.append(Rect(x(stop), max(x(resume) - x(stop), MIN_BAR_PCT), y, bar_h, "gap",
                                        f"{name}: waited {wait} after {why}, then {again}"))
            elif i + 1 < len(attempts) and attempts[i + 1].started_at > end:
                # A retry: the same dotted line ties it to the attempt before, across its backoff.
                following = attempts[i + 1].started_at
                wait = format_seconds((following - end).total_seconds())
                tl.gaps.append(Rect(x(end), max(x(following) - x(end), MIN_BAR_PCT), y, bar_h, "gap",
                                    f"{name}: waited {wait} after attempt {a.attempt} {label}, "
                                    f"then ran again as attempt {a.attempt + 1}"))
        tl.rows.append({"task": position + 1, "name": name, "task_id": attempts[0].task_id, "attempts": cells})
    tl.legend = tl.outcome_counts = _legend(counts, OUTCOMES)
    parts = ", ".join(f"{n} {label}" for _, _, label, n in tl.legend)
    retried = sum(1 for attempts in by_task.values() if len(attempts) > 1)
    tl.description = (f"{h.total} tasks, one lane each; {sum(counts.values())} attempts: {parts or 'none yet'}. "
                      f"{retried} {'task' if retried == 1 else 'tasks'} ran more than once.")
    tl.description += _outage_words(tl)


def _grouped_lanes(tl: Timeline, h: RunHistory, pitch: float) -> None:
    assert h.cells is not None
    col_ms = max(1, h.column_ms)
    busy: dict[tuple[int, int], Counter[str]] = defaultdict(Counter)
    attempts: dict[int, Counter[str]] = defaultdict(Counter)
    for cell in h.cells:
        group = GROUPS.get(cell.outcome, "lost")
        attempts[cell.lane][cell.outcome] += cell.count
        for col, ms in column_busy(cell, col_ms):
            busy[(cell.lane, col)][group] += ms
    while len(busy) * 2 > MAX_RECTS:  # too fine to draw: merge columns pairwise
        merged: dict[tuple[int, int], Counter[str]] = defaultdict(Counter)
        for (lane, col), c in busy.items():
            merged[(lane, col // 2)].update(c)
        busy, col_ms = merged, col_ms * 2
    span_ms = tl.span_s * 1000
    peak = max((sum(c.values()) for c in busy.values()), default=0) or 1
    lane_h = pitch - 2
    for (lane, col), c in sorted(busy.items()):
        total = sum(c.values())
        height = max(2.0, lane_h * total / peak)
        left = min(100.0, 100 * col * col_ms / span_ms)
        width = max(MIN_BAR_PCT, min(100.0 - left, 100 * col_ms / span_ms))
        base = tl.plot_top + lane * pitch + 1 + lane_h
        first, last = lane * h.lane_size + 1, min(h.total, (lane + 1) * h.lane_size)
        start_s, end_s = col * col_ms / 1000, (col + 1) * col_ms / 1000
        shares = ", ".join(f"{_pct(c[g] / total)} {GROUP_LABELS[g][1]}" for g in STACK if c[g])
        title = (f"tasks {first:,}–{last:,}, {_clock(start_s, tl.span_s)}–{_clock(end_s, tl.span_s)}: "
                 f"{total / col_ms:.1f} running at once on average; {shares}")
        # A few failures among many successes still show (2 px); the biggest part gives way for them.
        heights = {g: max(height * c[g] / total, 2.0 if g in ("failed", "lost") else 0.0) for g in STACK if c[g]}
        excess = sum(heights.values()) - lane_h
        if excess > 0:
            biggest = max(heights, key=lambda g: heights[g])
            heights[biggest] = max(0.5, heights[biggest] - excess)
        stack = []
        for g, part in heights.items():
            base -= part
            stack.append(Rect(left, width, base, part, g, ""))
        tl.cells.append((title, stack))
    counts: Counter[str] = Counter()
    for lane in sorted(attempts):
        counts.update(attempts[lane])
        first, last = lane * h.lane_size + 1, min(h.total, (lane + 1) * h.lane_size)
        tl.rows.append({"tasks": f"{first:,}–{last:,}", "counts": dict(attempts[lane])})
    groups: Counter[str] = Counter()
    for outcome, n in counts.items():
        groups[GROUPS.get(outcome, "lost")] += n
    tl.legend = _legend(groups, GROUP_LABELS)
    tl.outcome_counts = _legend(counts, OUTCOMES)
    parts = ", ".join(f"{n:,} {label}" for _, _, label, n in tl.outcome_counts)
    tl.description = (f"{h.total:,} tasks in {tl.lanes} lanes of {h.lane_size:,}; the taller a lane, the more of "
                      f"its tasks were running at once. {sum(counts.values()):,} attempts: {parts or 'none yet'}.")
    tl.description += _outage_words(tl)


def column_busy(cell: LaneCell, col_ms: int) -> list[tuple[int, int]]:
    """How many ms of attempt time ``cell``'s attempts spent in each time column they touched (exact)."""
    if cell.first >= cell.last:
        return [(cell.first, max(0, cell.end_ms - cell.start_ms))]
    spent = [(cell.first, max(0, cell.count * (cell.first + 1) * col_ms - cell.start_ms))]
    spent += [(col, cell.count * col_ms) for col in range(cell.first + 1, cell.last)]
    spent.append((cell.last, max(0, cell.end_ms - cell.count * cell.last * col_ms)))
    return spent


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


def _span_s(h: RunHistory) -> float:
    end = h.now if h.live or h.finished_at is None else h.finished_at
    latest = [a.finished_at or h.now for a in h.attempts or []]
    end = max([end, *latest])
    return max(1.0 if h.cells is not None else 0.1, (end - h.created_at).total_seconds())


def _at(h: RunHistory, when: datetime) -> float:
    return (when - h.created_at).total_seconds()


def _clock(seconds: float, span_s: float) -> str:
    """``0:45``, ``12:05``, ``1:02:00`` after the start; tenths of a second for a very short run."""
    if span_s < 10:
        return f"{seconds:.2f}s" if span_s < 1 else f"{seconds:.1f}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _pct(share: float) -> str:
    return "under 1%" if 0 < share < 0.01 else f"{round(100 * share)}%"


def _legend(counts: Counter[str], names: dict[str, tuple[str, str]]) -> list[tuple[str, str, str, int]]:
    return [(kind, icon, label, counts[kind]) for kind, (icon, label) in names.items() if counts[kind]]


def _outage_words(tl: Timeline) -> str:
    return "".join(f" The server was down for {lasting} from {at}; {n} {'attempt was' if n == 1 else 'attempts were'}"
                   f" lost and run again, not charged." for at, lasting, n in tl.outages)

