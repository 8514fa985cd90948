"""The start of submitted work, checked before anything is written: every bad value is one sentence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.errors import InvalidInput
from service.faces.plans import plan_start


@pytest.mark.parametrize(("start_at", "delay_s", "says"), [
    ("2026-12-03T14:05:00", None, "has no time zone"),
    ("0001-01-01T00:00:00+23:59", None, "out of range"),
    ("9999-12-31T23:59:59-23:59", None, "out of range"),
    ("tomorrow", None, "not an RFC 3339 time"),
    (5, None, "must be a time"),
    (None, -1, "from 0 up"),
    (None, float("nan"), "from 0 up"),
    (None, 400 * 86400, "at most a year"),
    ("2026-12-03T14:05:00Z", 5, "not both"),
])
def test_a_bad_start_is_one_sentence_naming_the_field(start_at: object, delay_s: object, says: str) -> None:
    with pytest.raises(InvalidInput, match=says) as caught:
        plan_start(start_at, delay_s)
    assert ("start_at" in str(caught.value)) or ("delay_s" in str(caught.value))


def test_a_start_more_than_a_year_away_is_refused_and_one_within_is_kept_in_utc() -> None:
    with pytest.raises(InvalidInput, match="more than a year away"):
        plan_start(datetime.now(UTC) + timedelta(days=400))
    berlin = datetime.fromisoformat("2026-12-04T02:00:00+01:00")
    start = plan_start(berlin.isoformat())
    assert start is not None and start.at == datetime(2026, 12, 4, 1, 0)  # naive UTC, as stored
    assert plan_start(None, None) is None
