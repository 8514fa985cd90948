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
