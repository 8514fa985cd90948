"""The timeline's geometry: a lane per task (or per range of positions for a big run), time across.

A small run's lanes draw each attempt as a bar from its start to its end, a lost attempt's wait
and a retry's backoff as a dotted gap; a big run's lanes draw how much of their tasks' time was
busy in each time column, stacked by outcome group. Outages are bands across every lane. Shapes
are :class:`web.charts.Rect` and :class:`web.charts.Mark` (x in % of the plot's width, y in px);
nothing here reads the database or renders HTML, and every timeline carries its figures in words.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from service.faces.summary import format_seconds
from service.storage.history import AttemptSpan, LaneCell, RunHistory
from web.chart_axes import clock, time_ticks
from web.charts import Mark, Rect

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
    tl.ticks = [Mark(100 * s / span, bottom + 16, clock(s, span), "start" if s == 0 else "middle")
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
                             f"{label}: from its last sign of life at {clock(_at(h, outage.last_beat), span)} "
                             f"until its tasks were taken back at {clock(_at(h, until), span)}"))
        anchor = "start" if left < 25 else "end" if right > 75 else "middle"
        at = {"start": left, "end": right}.get(anchor, (left + right) / 2)
        tl.captions.append(Mark(at, top - 6 - CAPTION_PX * (min(len(h.outages), 4) - 1 - i % 4), label, anchor))
        tl.outages.append((clock((outage.last_beat - t0).total_seconds(), span), format_seconds(down), outage.lost))
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
            when = f"{clock(_at(h, a.started_at), tl.span_s)}–{clock(_at(h, stop), tl.span_s)}"
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
        title = (f"tasks {first:,}–{last:,}, {clock(start_s, tl.span_s)}–{clock(end_s, tl.span_s)}: "
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


def _span_s(h: RunHistory) -> float:
    end = h.now if h.live or h.finished_at is None else h.finished_at
    latest = [a.finished_at or h.now for a in h.attempts or []]
    end = max([end, *latest])
    return max(1.0 if h.cells is not None else 0.1, (end - h.created_at).total_seconds())


def _at(h: RunHistory, when: datetime) -> float:
    return (when - h.created_at).total_seconds()


def _pct(share: float) -> str:
    return "under 1%" if 0 < share < 0.01 else f"{round(100 * share)}%"


def _legend(counts: Counter[str], names: dict[str, tuple[str, str]]) -> list[tuple[str, str, str, int]]:
    return [(kind, icon, label, counts[kind]) for kind, (icon, label) in names.items() if counts[kind]]


def _outage_words(tl: Timeline) -> str:
    return "".join(f" The server was down for {lasting} from {at}; {n} {'attempt was' if n == 1 else 'attempts were'}"
                   f" lost and run again, not charged." for at, lasting, n in tl.outages)
