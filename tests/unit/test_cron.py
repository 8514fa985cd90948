"""Cron expressions in a zone: daylight saving as Debian's cron does it, aliases, refusals, words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from service.cron import Cron, cron, from_utc, to_utc
from service.errors import InvalidInput

BERLIN = ZoneInfo("Europe/Berlin")
SPRING = datetime(2026, 3, 29)  # clocks go forward at 02:00 local: 02:00-03:00 does not exist
AUTUMN = datetime(2026, 10, 25)  # clocks go back at 03:00 local: 02:00-03:00 happens twice


def local_day(day: datetime, tz: ZoneInfo = BERLIN) -> tuple[datetime, datetime]:
    """The first and last second of a local calendar day, as naive UTC."""
    start = to_utc(day.replace(tzinfo=tz))
    end = to_utc((day + timedelta(days=1)).replace(tzinfo=tz))
    return start, end - timedelta(seconds=1)


def slots_on(expression: str, day: datetime, tz: str = "Europe/Berlin") -> list[datetime]:
    c = Cron(expression, tz)
    first, last = local_day(day, ZoneInfo(tz))
    slots, more = c.between(first, last, 1000)
    assert not more
    return slots


def local(moments: list[datetime], tz: ZoneInfo = BERLIN) -> list[str]:
    return [from_utc(m, tz).strftime("%H:%M %Z") for m in moments]


# -- daylight saving ------------------------------------------------------------------------


def test_a_fixed_time_in_the_spring_gap_fires_once_at_the_first_instant_after_it() -> None:
    assert local(slots_on("30 2 * * *", SPRING)) == ["03:00 CEST"]
    # The day before and after: at 02:30 local, as asked.
    assert local(slots_on("30 2 * * *", SPRING - timedelta(days=1))) == ["02:30 CET"]
    assert local(slots_on("30 2 * * *", SPRING + timedelta(days=1))) == ["02:30 CEST"]


def test_a_fixed_time_that_happens_twice_in_autumn_fires_once_at_its_first_occurrence() -> None:
    slots = slots_on("30 2 * * *", AUTUMN)
    assert local(slots) == ["02:30 CEST"]
    assert slots == [datetime(2026, 10, 25, 0, 30)]  # UTC: the first 02:30 (+02:00), not the second (+01:00)


def test_hourly_fires_in_every_real_hour_23_times_in_spring_and_25_in_autumn() -> None:
    spring = slots_on("0 * * * *", SPRING)
    autumn = slots_on("0 * * * *", AUTUMN)
    assert len(spring) == 23
    assert len(autumn) == 25
    for slots in (spring, autumn):  # one real hour apart, each of them
        assert {b - a for a, b in pairwise(slots)} == {timedelta(hours=1)}
    assert local(autumn).count("02:00 CEST") == 1 and local(autumn).count("02:00 CET") == 1
    assert "02:00 CET" not in local(spring) and "02:00 CEST" not in local(spring)


def test_a_plain_day_has_24_hours_and_utc_has_no_daylight_saving() -> None:
    assert len(slots_on("0 * * * *", datetime(2026, 6, 1))) == 24
    assert len(slots_on("0 * * * *", SPRING, "UTC")) == 24
    assert len(slots_on("30 2 * * *", SPRING, "UTC")) == 1


def test_forward_and_backward_steps_agree_across_both_changes() -> None:
    """Catch-up steps backwards (``at_or_before``), firing forwards: they must see the same slots."""
    for expression in ("30 2 * * *", "0 * * * *", "*/20 * * * *", "15 1-3 * * *", "0,30 2 * * *"):
        c = Cron(expression, "Europe/Berlin")
        for start in (SPRING - timedelta(days=2), AUTUMN - timedelta(days=2)):
            forward = c.upcoming(start, 150)
            assert c.at_or_before(forward[-1], 150)[::-1] == forward, expression
            assert c.between(forward[0], forward[-1], 1000) == (forward, False)
            for slot in forward[:40]:
                assert c.at_or_after(slot) == slot
                assert c.at_or_before(slot) == [slot]
                assert c.after(slot) > slot


# -- stepping -------------------------------------------------------------------------------


def test_after_is_strict_and_at_or_after_is_not() -> None:
    c = Cron("0 0 * * *")
    midnight = datetime(2026, 1, 1)
    assert c.after(midnight) == datetime(2026, 1, 2)
    assert c.at_or_after(midnight) == midnight
    assert c.at_or_after(midnight + timedelta(microseconds=5)) == datetime(2026, 1, 2)
    assert c.after(midnight - timedelta(microseconds=5)) == midnight
    assert c.at_or_before(datetime(2026, 1, 3, 12), 2) == [datetime(2026, 1, 3), datetime(2026, 1, 2)]
    assert c.upcoming(midnight, 3) == [datetime(2026, 1, d) for d in (2, 3, 4)]


def test_between_stops_at_its_cap_and_says_more_were_left_off() -> None:
    c = Cron("* * * * *")
    first = datetime(2026, 1, 1)
    slots, more = c.between(first, first + timedelta(hours=1), 10)
    assert len(slots) == 10 and more
    slots, more = c.between(first, first + timedelta(minutes=9), 10)
    assert len(slots) == 10 and not more


def test_instants_out_are_naive_utc_and_an_aware_one_in_is_read_as_the_instant_it_is() -> None:
    c = Cron("0 3 * * *", "Europe/Berlin")
    slot = c.after(datetime(2026, 6, 1))
    assert slot.tzinfo is None
    assert slot == datetime(2026, 6, 1, 1, 0)  # 03:00 CEST is 01:00 UTC
    # 02:30 CEST on June 1st is 00:30 UTC: the next 03:00 local is the same day's, not the next.
    aware = datetime(2026, 6, 1, 2, 30, tzinfo=BERLIN)
    assert c.after(aware) == datetime(2026, 6, 1, 1, 0)
    assert c.at_or_after(aware) == datetime(2026, 6, 1, 1, 0)
    assert c.at_or_before(datetime(2026, 6, 1, 3, 30, tzinfo=BERLIN)) == [datetime(2026, 6, 1, 1, 0)]
    assert to_utc(datetime(2026, 6, 1, 3, tzinfo=BERLIN)) == datetime(2026, 6, 1, 1)
    assert from_utc(datetime(2026, 6, 1, 1), BERLIN) == datetime(2026, 6, 1, 3, tzinfo=BERLIN)
    assert from_utc(datetime(2026, 6, 1, 1, tzinfo=UTC), BERLIN).hour == 3


# -- aliases --------------------------------------------------------------------------------


@pytest.mark.parametrize(("alias", "fields"), [
    ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"), ("@hourly", "0 * * * *"), ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"), ("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"), ("@DAILY", "0 0 * * *"),
])
def test_aliases_fire_as_their_fields_do(alias: str, fields: str) -> None:
    start = datetime(2026, 3, 27, 13, 17)
    assert Cron(alias, "Europe/Berlin").upcoming(start, 5) == Cron(fields, "Europe/Berlin").upcoming(start, 5)


def test_daily_and_hourly_aliases_in_a_zone() -> None:
    assert local(Cron("@daily", "Europe/Berlin").upcoming(datetime(2026, 3, 28), 2)) == ["00:00 CET", "00:00 CEST"]
    assert Cron("@daily", "Europe/Berlin").after(datetime(2026, 1, 1)) == datetime(2026, 1, 1, 23)
    hourly = Cron("@hourly").upcoming(datetime(2026, 1, 1, 0, 30), 3)
    assert hourly == [datetime(2026, 1, 1, h) for h in (1, 2, 3)]


def test_six_fields_take_seconds_first_and_spaces_are_normalised() -> None:
    c = Cron("*/30 * * * * *")
    assert c.upcoming(datetime(2026, 1, 1), 2) == [datetime(2026, 1, 1, 0, 0, 30), datetime(2026, 1, 1, 0, 1)]
    assert Cron("  0   2 * *  * ").expression == "0 2 * * *"


def test_parsed_expressions_are_kept() -> None:
    assert cron("0 2 * * *", "UTC") is cron("0 2 * * *", "UTC")


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(("expression", "words"), [
    ("61 * * * *", "not a valid expression"), ("* 24 * * *", "not a valid expression"),
    ("* * * *", "not a valid expression"), ("a b c d e", "not a valid expression"),
    ("0 0 30 2 *", "'0 0 30 2 *'"), ("0 0 31 4 *", "'0 0 31 4 *'"), ("", "cron must be a cron expression"),
    ("   ", "cron must be a cron expression"), ("@sometimes", "not a valid expression"),
    ("0 " * 150, "at most 200 characters"),
])
def test_bad_expressions_are_refused_when_read(expression: str, words: str) -> None:
    with pytest.raises(InvalidInput, match="cron") as caught:
        Cron(expression)
    assert words in str(caught.value)


def test_an_expression_that_is_not_text_is_refused() -> None:
    with pytest.raises(InvalidInput, match="cron must be"):
        Cron(None)
    with pytest.raises(InvalidInput, match="cron must be"):
        Cron(5)


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../etc/passwd", "/etc/localtime", "Europe/../UTC", None, 3,
                                  "x" * 65])
def test_unknown_zones_are_refused_naming_the_field(name: object) -> None:
    with pytest.raises(InvalidInput, match="timezone"):
        Cron("0 2 * * *", name)


def test_a_leap_day_expression_is_not_refused_it_fires_on_leap_years() -> None:
    assert Cron("0 0 29 2 *").after(datetime(2026, 1, 1)) == datetime(2028, 2, 29)


# -- words ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("expression", "zone", "words"), [
    ("0 2 * * *", "Europe/Berlin", "At 02:00 every day, Europe/Berlin"),
    ("@daily", "UTC", "At 00:00 every day, UTC"),
    ("@hourly", "UTC", "At the start of every hour, UTC"),
    ("*/15 * * * *", "America/New_York", "Every 15th minute of every hour, America/New_York"),
])
def test_explain_says_the_expression_in_words_with_its_zone(expression: str, zone: str, words: str) -> None:
    assert Cron(expression, zone).explain() == words


def test_every_two_seconds_is_not_called_every_second_second() -> None:
    assert Cron("*/2 * * * * *").explain() == "Every other second of every minute, UTC"
