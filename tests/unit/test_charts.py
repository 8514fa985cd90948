"""The pictures' geometry (web.timeline, web.charts, web.chart_axes): lanes, bars, outages, big runs' lanes,
the histogram, recent runs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from service.storage.history import AttemptSpan, LaneCell, Outage, RunHistory, SlowTask, bin_width_ms
from service.storage.views import RunView, zero_counts
from web import chart_axes, charts, timeline

T0 = datetime(2026, 3, 1, 12, 0, 0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def span(position: int, attempt: int, start: float, end: float | None, outcome: str, supervisor: int = 1,
         error: str | None = None) -> AttemptSpan:
    return AttemptSpan(task_id=100 + position, position=position, label=None, attempt=attempt, started_at=at(start),
                       finished_at=None if end is None else at(end), outcome=outcome,
                       charged=outcome in ("failed", "timed_out", "crashed"), supervisor_id=supervisor, error=error)


def history(**overrides: Any) -> RunHistory:
    values: dict[str, Any] = {
        "run_id": 7, "name": None, "status": "completed", "total": 3, "created_at": T0, "finished_at": at(100),
        "now": at(100), "attempts": [], "cells": None, "lane_size": 1, "column_ms": 0, "truncated": False,
        "outages": [], "durations": [], "bin_ms": 1000, "slowest": [],
    }
    values.update(overrides)
    return RunHistory(**values)


def test_one_lane_per_task_and_each_attempt_a_bar_of_its_own() -> None:
    h = history(attempts=[
        span(0, 1, 0, 50, "succeeded"),
        span(1, 1, 0, 20, "failed", error="ValueError: no"), span(1, 2, 25, 75, "succeeded"),
        span(2, 1, 10, 100, "failed", error="boom"),
    ])
    tl = timeline.timeline(h)
    assert tl.lanes == 3 and not tl.grouped
    assert [(b.kind, round(b.x, 3), round(b.w, 3)) for b in tl.bars] == [
        ("succeeded", 0, 50), ("failed", 0, 20), ("succeeded", 25, 50), ("failed", 10, 90)]
    # The retry is a second bar in the same lane, after the first one ends.
    first, retry = tl.bars[1], tl.bars[2]
    assert first.y == retry.y and first.x + first.w < retry.x
    assert tl.bars[0].y < first.y < tl.bars[3].y  # lanes by position
    assert "task 2, attempt 1: ✗ failed, 0:00–0:20 (20s) · ValueError: no" == first.title
    assert [(kind, n) for kind, _, _, n in tl.legend] == [("succeeded", 2), ("failed", 2)]
    assert tl.description.startswith("3 tasks, one lane each; 4 attempts: 2 succeeded, 2 failed. 1 task ran more")
    assert tl.rows[1]["attempts"] == ["1: ✗ failed 0:00–0:20", "2: ✓ succeeded 0:25–1:15"]
    assert tl.now_x is None  # an ended run has no "now"
    assert [t.text for t in tl.ticks] == ["0:00", "0:30", "1:00", "1:30"]


def test_a_live_run_ends_at_now_and_a_running_attempt_reaches_it() -> None:
    h = history(status="running", finished_at=None, now=at(40), attempts=[span(0, 1, 10, None, "running")])
    tl = timeline.timeline(h)
    assert tl.now_x == 100.0
    (bar,) = tl.bars
    assert bar.kind == "running" and round(bar.x, 3) == 25 and round(bar.x + bar.w, 3) == 100


def test_an_attempt_lost_in_a_crash_ends_at_its_servers_last_sign_of_life_and_the_gap_is_marked() -> None:
    outage = Outage(supervisor_id=1, last_beat=at(30), lost=2, reclaimed_at=at(42))
    h = history(total=2, outages=[outage], attempts=[
        span(0, 1, 10, 42, "lost"), span(0, 2, 43, 80, "succeeded", supervisor=2),
        span(1, 1, 20, 42, "lost"), span(1, 2, 60, 100, "succeeded", supervisor=2),
    ])
    tl = timeline.timeline(h)
    lost = [b for b in tl.bars if b.kind == "lost"]
    assert [(round(b.x, 3), round(b.x + b.w, 3)) for b in lost] == [(10, 30), (20, 30)]
    # Each lost attempt's wait until its task ran again, in its lane, and one band across the run.
    assert [(round(g.x, 3), round(g.x + g.w, 3), g.y) for g in tl.gaps] == [(30, 43, lost[0].y), (30, 60, lost[1].y)]
    assert tl.gaps[1].title == "task 2: waited 30s after its server died, then ran again as attempt 2"
    (band,) = tl.bands
    assert (round(band.x, 3), round(band.x + band.w, 3)) == (30, 42)
    assert band.y == tl.plot_top and band.h == tl.plot_bottom - tl.plot_top
    assert [c.text for c in tl.captions] == ["server down 12s · 2 lost"]
    assert tl.outages == [("0:30", "12s", 2)]
    assert "The server was down for 12s from 0:30; 2 attempts were lost and run again, not charged." in tl.description


def test_a_task_lost_while_its_server_lived_on_has_no_outage() -> None:
    # A shared process crashed: the attempt is lost but its supervisor kept beating, so no band.
    h = history(total=1, attempts=[span(0, 1, 0, 10, "lost"), span(0, 2, 11, 20, "succeeded")])
    tl = timeline.timeline(h)
    assert tl.bands == [] and [(round(g.x, 3), round(g.x + g.w, 3)) for g in tl.gaps] == [(10, 11)]
    assert [b.kind for b in tl.bars] == ["lost", "succeeded"]


def test_column_busy_is_exact_for_attempts_across_columns() -> None:
    # Two attempts started in column 1 (of 10 s) and ended in column 4: 12 s→45 s and 18 s→41 s.
    cell = LaneCell(lane=0, outcome="succeeded", first=1, last=4, count=2, start_ms=12_000 + 18_000,
                    end_ms=45_000 + 41_000)
    spent = timeline.column_busy(cell, 10_000)
    assert spent == [(1, 8_000 + 2_000), (2, 20_000), (3, 20_000), (4, 5_000 + 1_000)]
    assert sum(ms for _, ms in spent) == (45_000 - 12_000) + (41_000 - 18_000)
    same = LaneCell(lane=0, outcome="failed", first=2, last=2, count=3, start_ms=60_000, end_ms=75_000)
    assert timeline.column_busy(same, 10_000) == [(2, 15_000)]


def big(total: int, cells: list[LaneCell], **overrides: Any) -> RunHistory:
    values: dict[str, Any] = {"column_ms": 60_000, **overrides}
    return history(total=total, attempts=None, cells=cells, lane_size=-(-total // 50), finished_at=at(3600),
                   now=at(3600), **values)


def test_a_big_run_draws_at_most_fifty_lanes_of_position_ranges() -> None:
    cells = [LaneCell(lane, "succeeded", lane, lane, 200, 200 * (lane * 60_000 + 5_000), 200 * (lane * 60_000 + 50_000))
             for lane in range(50)]
    cells.append(LaneCell(3, "failed", 3, 3, 2, 2 * 185_000, 2 * 200_000))
    tl = timeline.timeline(big(10_000, cells))
    assert tl.grouped and tl.lanes == 50 and tl.lane_size == 200
    assert [m.text for m in tl.lane_labels][:3] == ["1", "401", "801"]  # every other lane: 11 px apart
    assert len(tl.cells) == 50  # one column drawn per lane here
    title, parts = tl.cells[3]
    assert title.startswith("tasks 601–800, 3:00–4:00:") and "failed" in title
    assert [p.kind for p in parts] == ["succeeded", "failed"]  # successes below, failures stacked on top
    assert parts[1].h >= 2.0 and parts[1].y + parts[1].h == pytest.approx(parts[0].y)
    assert [(kind, n) for kind, _, _, n in tl.legend] == [("succeeded", 10_000), ("failed", 2)]
    assert tl.rows[3] == {"tasks": "601–800", "counts": {"succeeded": 200, "failed": 2}}
    assert "10,000 tasks in 50 lanes of 200" in tl.description and "10,002 attempts" in tl.description


def test_a_big_run_that_ran_everywhere_at_once_stays_bounded() -> None:
    # Every lane busy in every one of 600 columns: merged pairwise until at most MAX_RECTS columns.
    cells = [LaneCell(lane, outcome, col, col, 10, 10 * col * 6_000, 10 * (col * 6_000 + 5_000))
             for lane in range(50) for col in range(600) for outcome in ("succeeded", "failed")]
    h = big(100_000, cells, column_ms=6_000)
    tl = timeline.timeline(h)
    assert len(tl.cells) * 2 <= timeline.MAX_RECTS
    assert sum(len(parts) for _, parts in tl.cells) <= timeline.MAX_RECTS
    assert tl.lanes == 50 and tl.lane_size == 2_000


def test_the_histogram_bins_succeeded_and_failed_and_names_the_slowest() -> None:
    slowest = [SlowTask(task_id=9, position=41, label="import-42", status="failed", seconds=118.5),
               SlowTask(task_id=3, position=2, label=None, status="succeeded", seconds=90)]
    h = history(durations=[("succeeded", 3, 4), ("failed", 3, 1), ("succeeded", 5, 2), ("failed", 11, 1)],
                bin_ms=10_000, slowest=slowest)
    hist = charts.histogram(h)
    # Bins from the first with a task to the last, empty ones included, each stacked.
    assert hist.rows[0] == ("30s–40s", 4, 1) and hist.rows[2] == ("50s–1m 00s", 2, 0)
    assert hist.rows[-1][0] == "1m 50s–2m 00s"
    assert len(hist.rows) == 9
    ok, bad = hist.bars[0], hist.bars[1]
    assert (ok.kind, bad.kind) == ("succeeded", "failed") and bad.y + bad.h == pytest.approx(ok.y)
    assert ok.h == pytest.approx(4 * bad.h)
    assert hist.slowest_x == pytest.approx(100 * (11.85 - 3) / 9)
    assert hist.slowest_label == "slowest: import-42, 1m 58s"
    assert hist.description.startswith("8 finished tasks") and "6 succeeded, 2 failed" in hist.description
    assert charts.histogram(history()).bars == []


@pytest.mark.parametrize(("longest_ms", "width"), [(0, 1), (23, 1), (24, 2), (119_000, 5_000), (125_000, 10_000),
                                                   (3 * 3600_000, 600_000)])
def test_bins_are_widths_a_person_reads(longest_ms: int, width: int) -> None:
    assert bin_width_ms(longest_ms) == width
    assert longest_ms // width < 24


def run_view(run_id: int, total: int, status: str = "completed", **counts: int) -> RunView:
    c = zero_counts()
    c.update(counts)
    return RunView(id=run_id, name=None, status=status, kind="sleep", total=total, params={}, on_complete=None,
                   hook_task_id=None, created_at=T0, finished_at=None, counts=c)


def test_recent_runs_oldest_first_each_a_bar_of_its_tasks_shares() -> None:
    runs = [run_view(3, 10, "running", succeeded=2, running=3), run_view(2, 4, succeeded=1, failed=2, cancelled=1),
            run_view(1, 50, succeeded=50)]
    chart = charts.runs_chart(runs)  # as list_runs gives them: latest first
    assert [link[0] for link in chart.links] == [1, 2, 3]
    by_run = {x: [b for b in chart.bars if b.x == x] for _, x, _, _ in chart.links}
    one, two, three = by_run.values()
    assert [b.kind for b in one] == ["succeeded"] and one[0].h == charts.RUNS_PX
    assert [(b.kind, b.h) for b in two] == [("succeeded", 27.5), ("failed", 55.0), ("cancelled", 27.5)]
    assert [(b.kind, b.h) for b in three] == [("succeeded", 22.0)]  # the rest has not finished
    assert chart.live and chart.links[2][3] == "run #3: 2 succeeded, 0 failed, 0 cancelled of 10 · running"
    assert [m.text for m in chart.labels] == ["#1", "#2", "#3"]


def test_time_ticks_are_round_and_few() -> None:
    assert chart_axes.time_ticks(100) == [0, 30, 60, 90]
    assert chart_axes.time_ticks(2750) == [0, 600, 1200, 1800, 2400]
    assert chart_axes.time_ticks(0.4) == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])
    assert all(len(chart_axes.time_ticks(s)) <= 7 for s in (0.1, 1, 7, 59, 61, 3599, 86_400, 10 * 86_400))
