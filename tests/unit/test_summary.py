"""What the CLI and the page say about a run, as text: counts in the right number, times left out when unknown."""

from __future__ import annotations

import pytest

from service.faces import summary


@pytest.mark.parametrize(
    ("n", "noun", "text"),
    [
        (1, "retry", "1 retry"),
        (2, "retry", "2 retries"),
        (0, "retry", "0 retries"),
        (1, "attempt", "1 attempt"),
        (3, "attempt", "3 attempts"),
        (1, "batch", "1 batch"),
        (2, "batch", "2 batches"),
        (2, "day", "2 days"),
        (1, "echo task", "1 echo task"),
        (50, "sleep task", "50 sleep tasks"),
    ],
)
def test_a_count_takes_its_noun_in_the_right_number(n: int, noun: str, text: str) -> None:
    assert summary.counted(n, noun) == text


def test_an_irregular_plural_is_given() -> None:
    assert summary.counted(2, "child", "children") == "2 children"
    assert summary.counted(1, "child", "children") == "1 child"


def test_waiting_says_what_a_run_that_runs_nothing_waits_for() -> None:
    from service.storage.views import MAX_AHEAD

    assert summary.waiting(None) is None
    assert summary.waiting(0) == "waiting for a free slot: next in line"
    assert summary.waiting(1) == "waiting for a free slot: 1 task ahead"
    assert summary.waiting(MAX_AHEAD) == "waiting for a free slot: 1,000 or more tasks ahead"
    assert summary.waiting(3, workers=0).startswith("waiting for a worker: none is running")
    assert summary.waiting(None, workers=0) is None  # not waiting for a slot at all


def test_a_run_made_to_start_later_counts_its_time_from_its_start() -> None:
    from datetime import datetime, timedelta

    from service.storage.views import RunView

    created = datetime(2026, 12, 3, 14, 0, 0)
    start, finished = created + timedelta(hours=2), created + timedelta(hours=2, seconds=42)
    run = RunView(1, None, "completed", "echo", 1, {}, None, None, created, finished, {"succeeded": 1}, start)
    assert summary.began(run) == start
    assert summary.progress_of(run, [], finished).elapsed_s == 42.0
    assert summary.summarize_grouped(run, [], [], {}).duration_s == 42.0
    # Ended before its start (cancelled, or started early): its time is from its creation, never negative.
    early = RunView(3, None, "cancelled", "echo", 1, {}, None, None, created, created + timedelta(seconds=5),
                    {"cancelled": 1}, start)
    assert summary.began(early) == created and summary.summarize_grouped(early, [], [], {}).duration_s == 5.0
    at_once = RunView(2, None, "completed", "echo", 1, {}, None, None, created, finished, {"succeeded": 1})
    assert summary.summarize_grouped(at_once, [], [], {}).duration_s == 2 * 3600 + 42


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(0.2, "now"), (-0.2, "now"), (-12, "due 12 s ago"), (-600, "due 10 min ago"), (40, "in 40 s"), (99, "in 99 s"),
     (120, "in 2 min"), (180, "in 3 min"), (5400, "in 90 min"),
     (7200, "in 2 h"), (47 * 3600, "in 47 h"), (12 * 86400, "in 12 days")],
)
def test_a_start_ahead_is_said_as_coarsely_as_a_person_says_it(seconds: float, words: str) -> None:
    from datetime import datetime, timedelta

    now = datetime(2026, 12, 3, 14, 2, 0)
    assert summary.starts_in(now + timedelta(seconds=seconds), now) == words


def test_scheduled_for_gives_the_date_only_on_another_day() -> None:
    from datetime import datetime

    now = datetime(2026, 12, 3, 14, 2, 0)
    assert summary.scheduled_for(datetime(2026, 12, 3, 14, 5), now) == "scheduled for 14:05 UTC (in 3 min)"
    assert summary.scheduled_for(datetime(2026, 12, 3, 14, 5, 30), now) == "scheduled for 14:05:30 UTC (in 4 min)"
    assert summary.scheduled_for(datetime(2026, 12, 4, 1, 0), now) == "scheduled for 2026-12-04 01:00 UTC (in 11 h)"
