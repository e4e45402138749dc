"""Tests for durable.cron: syntax, errors, Vixie day rules, DST rules, properties.

The property tests use croniter (pinned to 7.0.0 when these tests were written) as
an independent oracle for UTC and fixed-offset zones, and a brute-force scan of
wall-clock minutes as the oracle for the DST rules, where croniter's behaviour is
not the contract.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from croniter import CroniterBadDateError, croniter
from durable import cron
from hypothesis import given, settings
from hypothesis import strategies as st

UTC = timezone.utc
ONE_MINUTE = timedelta(minutes=1)
MONTH_NAMES = tuple("jan feb mar apr may jun jul aug sep oct nov dec".split())
DAY_NAMES = tuple("sun mon tue wed thu fri sat".split())
DST_ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def fields_of(schedule: cron.Schedule) -> tuple:
    return (
        schedule.seconds,
        schedule.minutes,
        schedule.hours,
        schedule.days_of_month,
        schedule.months,
        schedule.days_of_week,
        schedule.days_match_either,
        schedule.interval_seconds,
    )


def matches_wall_time(schedule: cron.Schedule, wall: datetime) -> bool:
    """Whether a naive wall-clock time satisfies every field (Vixie day rule)."""
    weekday = (wall.weekday() + 1) % 7
    in_days_of_month = wall.day in schedule.days_of_month
    in_days_of_week = weekday in schedule.days_of_week
    if schedule.days_match_either:
        day_matches = in_days_of_month or in_days_of_week
    else:
        day_matches = in_days_of_month and in_days_of_week
    return (
        day_matches
        and wall.second in schedule.seconds
        and wall.minute in schedule.minutes
        and wall.hour in schedule.hours
        and wall.month in schedule.months
    )


# --- Syntax -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "attribute", "expected"),
    [
        ("* * * * *", "minutes", tuple(range(60))),
        ("* * * * *", "seconds", (0,)),
        ("7 * * * *", "minutes", (7,)),
        ("1,5,9 * * * *", "minutes", (1, 5, 9)),
        ("9,1,5,1 * * * *", "minutes", (1, 5, 9)),
        ("* 1-5 * * *", "hours", (1, 2, 3, 4, 5)),
        ("* 3-3 * * *", "hours", (3,)),
        ("*/15 * * * *", "minutes", (0, 15, 30, 45)),
        ("10-50/5 * * * *", "minutes", tuple(range(10, 51, 5))),
        ("5/15 * * * *", "minutes", (5, 20, 35, 50)),
        ("59/15 * * * *", "minutes", (59,)),
        ("* */7 * * *", "hours", (0, 7, 14, 21)),
        ("* * */10 * *", "days_of_month", (1, 11, 21, 31)),
        ("* * 1-3,20-22/2,31 * *", "days_of_month", (1, 2, 3, 20, 22, 31)),
        ("* * * */5 *", "months", (1, 6, 11)),
        ("* * * jan *", "months", (1,)),
        ("* * * JAN-mar,Dec *", "months", (1, 2, 3, 12)),
        ("* * * feb/4 *", "months", (2, 6, 10)),
        ("* * * * mon-FRI", "days_of_week", (1, 2, 3, 4, 5)),
        ("* * * * Sun,sat", "days_of_week", (0, 6)),
        ("* * * * 0", "days_of_week", (0,)),
        ("* * * * 7", "days_of_week", (0,)),
        ("* * * * 0,7", "days_of_week", (0,)),
        ("* * * * 5-7", "days_of_week", (0, 5, 6)),
        ("* * * * 0-7", "days_of_week", tuple(range(7))),
        ("* * * * */2", "days_of_week", (0, 2, 4, 6)),
        ("* * * * 1/2", "days_of_week", (1, 3, 5)),
        ("* * * * tue/3", "days_of_week", (2, 5)),
        ("*/20 * * * * *", "seconds", (0, 20, 40)),
        ("*/20 5 * * * *", "minutes", (5,)),
        ("0 0 * * 1-5", "hours", (0,)),
    ],
)
def test_field_values(expression: str, attribute: str, expected: tuple) -> None:
    assert getattr(cron.parse(expression), attribute) == expected


@pytest.mark.parametrize(
    ("expression", "days_match_either"),
    [
        ("0 0 13 * 5", True),
        ("0 0 1-31 * 0-6", True),
        ("0 0 * * 5", False),
        ("0 0 13 * *", False),
        ("0 0 */2 * 5", False),
        ("0 0 13 * */1", False),
        ("0 0 * * *", False),
    ],
)
def test_day_fields_combine_with_or_only_when_both_are_restricted(
    expression: str, days_match_either: bool
) -> None:
    assert cron.parse(expression).days_match_either is days_match_either


@pytest.mark.parametrize(
    ("macro", "equivalent"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@DAILY", "0 0 * * *"),
        ("  @Hourly ", "0 * * * *"),
    ],
)
def test_macros_expand_to_their_five_field_form(macro: str, equivalent: str) -> None:
    assert fields_of(cron.parse(macro)) == fields_of(cron.parse(equivalent))


def test_six_fields_put_seconds_first() -> None:
    schedule = cron.parse("30 15 10 1 2 3")
    assert (schedule.seconds, schedule.minutes, schedule.hours) == ((30,), (15,), (10,))
    assert (schedule.days_of_month, schedule.months, schedule.days_of_week) == (
        (1,),
        (2,),
        (3,),
    )


def test_expression_is_normalised_and_shown_in_repr() -> None:
    schedule = cron.parse("  */5 \t 0   * *\n *  ")
    assert schedule.expression == "*/5 0 * * *"
    assert repr(schedule) == "Schedule('*/5 0 * * *')"
    assert cron.parse("  15    seconds ").expression == "15 seconds"


def test_schedule_is_immutable_and_compares_by_value() -> None:
    schedule = cron.parse("0 0 * * *")
    with pytest.raises(AttributeError):
        schedule.minutes = (1,)  # type: ignore[misc]
    assert schedule == cron.parse("0  0 * * *")
    assert hash(schedule) == hash(cron.parse("0 0 * * *"))


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "cron expression is empty"),
        ("   ", "cron expression is empty"),
        ("* * * *", "has 4 fields: expected 5 (minute hour day-of-month"),
        ("* * * * * * *", "has 7 fields"),
        ("61 * * * *", 'cron field "minute" value 61 is out of range 0-59'),
        ("60 * * * * *", 'cron field "second" value 60 is out of range 0-59'),
        ("* 24 * * *", 'cron field "hour" value 24 is out of range 0-23'),
        ("* * 0 * *", 'cron field "day-of-month" value 0 is out of range 1-31'),
        ("* * 32 * *", 'cron field "day-of-month" value 32 is out of range 1-31'),
        ("* * * 13 *", 'cron field "month" value 13 is out of range 1-12'),
        ("* * * 0 *", 'cron field "month" value 0 is out of range 1-12'),
        ("* * * * 8", 'cron field "day-of-week" value 8 is out of range 0-7'),
        ("1-70 * * * *", 'cron field "minute" value 70 is out of range 0-59'),
        ("5-1 * * * *", 'cron field "minute" range "5-1" is reversed'),
        ("* * * dec-jan *", 'cron field "month" range "dec-jan" is reversed'),
        ("* * * * fri-mon", 'cron field "day-of-week" range "fri-mon" is reversed'),
        ("* * * * 7/2", 'cron field "day-of-week" range "7/2" is reversed'),
        ("*/0 * * * *", 'cron field "minute" step "0" in "*/0" is not a positive'),
        ("* */-2 * * *", 'cron field "hour" step "-2" in "*/-2" is not a positive'),
        ("* * 1-5/ * *", 'cron field "day-of-month" step "" in "1-5/"'),
        ("* * */2/3 * *", 'cron field "day-of-month" step "2/3"'),
        ("-5 * * * *", 'cron field "minute" value "" is not a number 0-59'),
        ("1.5 * * * *", 'cron field "minute" value "1.5" is not a number 0-59'),
        ("1-2-3 * * * *", 'cron field "minute" value "2-3" is not a number'),
        ("? * * * *", 'cron field "minute" value "?" is not a number'),
        (
            "* * * foo *",
            'cron field "month" value "foo" is not a number 1-12 or a name',
        ),
        ("* * * * mon,funday", 'cron field "day-of-week" value "funday"'),
        ("* * mon * *", 'cron field "day-of-month" value "mon" is not a number 1-31'),
        ("1,,2 * * * *", 'cron field "minute" has an empty list element'),
        ("* * * * 1,", 'cron field "day-of-week" has an empty list element'),
        ("@reboot", 'unknown cron macro "@reboot": expected one of @yearly'),
        ("@daily 5", 'unknown cron macro "@daily 5"'),
        ("0 seconds", 'cron interval "0 seconds" must be between 1 and 59 seconds'),
        ("60 seconds", 'cron interval "60 seconds" must be between 1 and 59'),
        ("5 minutes", "has 2 fields"),
    ],
)
def test_invalid_expressions_are_rejected_with_a_precise_message(
    expression: str, message: str
) -> None:
    with pytest.raises(cron.CronError) as raised:
        cron.parse(expression)
    assert message in str(raised.value)


def test_cron_error_is_a_value_error_and_non_strings_are_rejected() -> None:
    assert issubclass(cron.CronError, ValueError)
    with pytest.raises(cron.CronError, match="must be a string"):
        cron.parse(None)  # type: ignore[arg-type]


# --- Time zones -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["UTC", "Europe/Berlin", "America/New_York", "Etc/GMT-5"]
)
def test_check_timezone_returns_known_names(name: str) -> None:
    assert cron.check_timezone(name) == name


@pytest.mark.parametrize(
    "name", ["Mars/Olympus", "", "../etc/passwd", "Europe", " UTC"]
)
def test_check_timezone_rejects_unknown_names(name: str) -> None:
    with pytest.raises(cron.CronError, match="unknown time zone"):
        cron.check_timezone(name)


def test_unknown_time_zone_is_rejected_by_the_calculations() -> None:
    schedule = cron.parse("* * * * *")
    with pytest.raises(cron.CronError, match='unknown time zone "Nowhere/Town"'):
        schedule.next_after(utc(2026, 1, 1), "Nowhere/Town")
    with pytest.raises(cron.CronError, match="unknown time zone"):
        schedule.fires_between(utc(2026, 1, 1), utc(2026, 1, 2), "Nowhere/Town")


# --- next_after and fires_between -------------------------------------------------


def test_next_after_is_strictly_after_and_in_utc() -> None:
    schedule = cron.parse("*/15 * * * *")
    fire = schedule.next_after(utc(2026, 5, 1, 10, 15))
    assert fire == utc(2026, 5, 1, 10, 30)
    assert fire.tzinfo is UTC
    assert schedule.next_after(utc(2026, 5, 1, 10, 14, 59, 999999)) == utc(
        2026, 5, 1, 10, 15
    )


def test_next_after_accepts_any_offset_and_matches_in_the_given_zone() -> None:
    schedule = cron.parse("0 9 * * *")
    tokyo_time = datetime(2026, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=9)))
    assert schedule.next_after(tokyo_time) == utc(2026, 5, 1, 9)
    assert schedule.next_after(tokyo_time, "Asia/Tokyo") == utc(2026, 5, 2, 0)
    assert schedule.next_after(tokyo_time, "Asia/Kolkata") == utc(2026, 5, 1, 3, 30)


def test_next_after_carries_over_month_and_year_ends() -> None:
    assert cron.parse("0 0 1 * *").next_after(utc(2026, 12, 31, 23, 59)) == utc(
        2027, 1, 1
    )
    assert cron.parse("0 12 31 * *").next_after(utc(2026, 4, 1)) == utc(2026, 5, 31, 12)
    assert cron.parse("59 23 * * *").next_after(utc(2024, 2, 28, 23, 59)) == utc(
        2024, 2, 29, 23, 59
    )
    assert cron.parse("@yearly").next_after(utc(2026, 1, 1)) == utc(2027, 1, 1)
    assert cron.parse("@weekly").next_after(utc(2026, 5, 1)) == utc(2026, 5, 3)


def test_rare_schedules_are_found_quickly() -> None:
    started = time.perf_counter()
    assert cron.parse("0 0 29 2 *").next_after(utc(2024, 3, 1)) == utc(2028, 2, 29)
    assert cron.parse("59 59 23 31 12 *").next_after(utc(2026, 1, 1)) == utc(
        2026, 12, 31, 23, 59, 59
    )
    assert time.perf_counter() - started < 0.25


@pytest.mark.parametrize("expression", ["0 0 30 2 *", "0 0 31 4,6,9,11 *"])
def test_schedules_that_never_fire_give_up(expression: str) -> None:
    started = time.perf_counter()
    with pytest.raises(cron.CronError, match="does not fire within 5 years"):
        cron.parse(expression).next_after(utc(2026, 1, 1))
    assert time.perf_counter() - started < 0.25
    assert cron.parse(expression).fires_between(utc(2026, 1, 1), utc(2040, 1, 1)) == []


def test_naive_datetimes_are_rejected() -> None:
    schedule = cron.parse("* * * * *")
    with pytest.raises(ValueError, match="after must be a timezone-aware datetime"):
        schedule.next_after(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="end must be a timezone-aware datetime"):
        schedule.fires_between(utc(2026, 1, 1), datetime(2026, 1, 2))


def test_fires_between_excludes_start_includes_end_and_respects_limit() -> None:
    schedule = cron.parse("0 * * * *")
    assert schedule.fires_between(utc(2026, 1, 1, 0), utc(2026, 1, 1, 3)) == [
        utc(2026, 1, 1, 1),
        utc(2026, 1, 1, 2),
        utc(2026, 1, 1, 3),
    ]
    assert schedule.fires_between(utc(2026, 1, 1), utc(2026, 1, 2), limit=2) == [
        utc(2026, 1, 1, 1),
        utc(2026, 1, 1, 2),
    ]
    assert schedule.fires_between(utc(2026, 1, 1), utc(2026, 1, 2), limit=0) == []
    assert schedule.fires_between(utc(2026, 1, 2), utc(2026, 1, 1)) == []
    assert (
        len(cron.parse("* * * * * *").fires_between(utc(2026, 1, 1), utc(2026, 1, 2)))
        == 1000
    )
    with pytest.raises(ValueError, match="limit must not be negative"):
        schedule.fires_between(utc(2026, 1, 1), utc(2026, 1, 2), limit=-1)


# --- Interval form ----------------------------------------------------------------


def test_interval_fires_on_epoch_multiples_strictly_after() -> None:
    schedule = cron.parse("15 seconds")
    assert schedule.interval_seconds == 15
    assert schedule.next_after(utc(2026, 1, 1, 10, 0, 7)) == utc(2026, 1, 1, 10, 0, 15)
    assert schedule.next_after(utc(2026, 1, 1, 10, 0, 15)) == utc(2026, 1, 1, 10, 0, 30)
    assert schedule.next_after(utc(2026, 1, 1, 10, 0, 14, 500000)) == utc(
        2026, 1, 1, 10, 0, 15
    )


@pytest.mark.parametrize(
    "text", ["1 second", "1 seconds", "7 SECONDS", " 59   seconds"]
)
def test_interval_slots_are_aligned_to_the_epoch_in_every_zone(text: str) -> None:
    schedule = cron.parse(text)
    after = datetime(
        2026, 3, 29, 2, 59, 58, tzinfo=timezone(timedelta(hours=5, minutes=30))
    )
    fires = {
        schedule.next_after(after, zone)
        for zone in ("UTC", "Asia/Kolkata", "Europe/Berlin")
    }
    assert len(fires) == 1
    (fire,) = fires
    assert fire > after
    assert int(fire.timestamp()) % schedule.interval_seconds == 0
    assert fire - after <= timedelta(seconds=schedule.interval_seconds)


def test_interval_fires_between_lists_consecutive_slots() -> None:
    fires = cron.parse("20 seconds").fires_between(
        utc(2026, 1, 1), utc(2026, 1, 1, 0, 1)
    )
    assert fires == [
        utc(2026, 1, 1, 0, 0, 20),
        utc(2026, 1, 1, 0, 0, 40),
        utc(2026, 1, 1, 0, 1),
    ]


# --- Vixie day-of-month / day-of-week rule -------------------------------------------


def days_fired_in_2026(expression: str) -> set[date]:
    fires = cron.parse(expression).fires_between(
        utc(2025, 12, 31, 12), utc(2026, 12, 31, 12)
    )
    return {fire.date() for fire in fires}


def every_day_of_2026() -> list[date]:
    return [date(2026, 1, 1) + timedelta(days=offset) for offset in range(365)]


def test_restricted_day_of_month_and_day_of_week_fire_on_either() -> None:
    expected = {
        day for day in every_day_of_2026() if day.day == 13 or day.weekday() == 4
    }
    assert days_fired_in_2026("0 0 13 * 5") == expected


def test_day_of_week_alone_fires_only_on_those_weekdays() -> None:
    expected = {day for day in every_day_of_2026() if day.weekday() == 4}
    assert days_fired_in_2026("0 0 * * 5") == expected


def test_day_of_month_alone_fires_only_on_those_days() -> None:
    expected = {day for day in every_day_of_2026() if day.day == 13}
    assert days_fired_in_2026("0 0 13 * *") == expected


def test_a_day_field_starting_with_a_star_makes_both_fields_required() -> None:
    expected = {
        day for day in every_day_of_2026() if day.day % 2 == 1 and day.weekday() == 4
    }
    assert days_fired_in_2026("0 0 */2 * fri") == expected


# --- Daylight saving time -------------------------------------------------------------
# Europe/Berlin 2026: clocks jump 02:00 CET -> 03:00 CEST on 29 March (01:00 UTC) and
# fall back 03:00 CEST -> 02:00 CET on 25 October (01:00 UTC).
# America/New_York 2026: 02:00 EST -> 03:00 EDT on 8 March (07:00 UTC) and
# 02:00 EDT -> 01:00 EST on 1 November (06:00 UTC).


@pytest.mark.parametrize(
    ("expression", "tz", "start", "end", "expected"),
    [
        pytest.param(
            "30 2 * * *",
            "Europe/Berlin",
            utc(2026, 3, 27, 12),
            utc(2026, 3, 30, 12),
            [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)],
            id="berlin-daily-in-spring-gap-fires-at-changeover",
        ),
        pytest.param(
            "0,30 2 * * *",
            "Europe/Berlin",
            utc(2026, 3, 28, 12),
            utc(2026, 3, 29, 12),
            [utc(2026, 3, 29, 1)],
            id="berlin-several-times-in-gap-fire-once",
        ),
        pytest.param(
            "30 2 * * *",
            "Europe/Berlin",
            utc(2026, 10, 23, 12),
            utc(2026, 10, 26, 12),
            [
                utc(2026, 10, 24, 0, 30),
                utc(2026, 10, 25, 0, 30),
                utc(2026, 10, 26, 1, 30),
            ],
            id="berlin-daily-in-repeated-hour-fires-at-first-occurrence",
        ),
        pytest.param(
            "0 * * * *",
            "Europe/Berlin",
            utc(2026, 3, 28, 22, 30),
            utc(2026, 3, 29, 2, 30),
            [
                utc(2026, 3, 28, 23),
                utc(2026, 3, 29, 0),
                utc(2026, 3, 29, 1),
                utc(2026, 3, 29, 2),
            ],
            id="berlin-hourly-across-spring-forward",
        ),
        pytest.param(
            "0 * * * *",
            "Europe/Berlin",
            utc(2026, 10, 24, 21, 30),
            utc(2026, 10, 25, 3, 30),
            [
                utc(2026, 10, 24, 22),
                utc(2026, 10, 24, 23),
                utc(2026, 10, 25, 0),
                utc(2026, 10, 25, 2),
                utc(2026, 10, 25, 3),
            ],
            id="berlin-hourly-across-fall-back-skips-repeated-hour",
        ),
        pytest.param(
            "*/15 * * * *",
            "Europe/Berlin",
            utc(2026, 3, 29, 0, 20),
            utc(2026, 3, 29, 1, 50),
            [
                utc(2026, 3, 29, 0, 30),
                utc(2026, 3, 29, 0, 45),
                utc(2026, 3, 29, 1),
                utc(2026, 3, 29, 1, 15),
                utc(2026, 3, 29, 1, 30),
                utc(2026, 3, 29, 1, 45),
            ],
            id="berlin-quarter-hours-across-spring-gap",
        ),
        pytest.param(
            "30 2 * * *",
            "America/New_York",
            utc(2026, 3, 6, 12),
            utc(2026, 3, 9, 12),
            [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30)],
            id="new-york-daily-in-spring-gap-fires-at-changeover",
        ),
        pytest.param(
            "30 1 * * *",
            "America/New_York",
            utc(2026, 10, 30, 12),
            utc(2026, 11, 2, 12),
            [
                utc(2026, 10, 31, 5, 30),
                utc(2026, 11, 1, 5, 30),
                utc(2026, 11, 2, 6, 30),
            ],
            id="new-york-daily-in-repeated-hour-fires-at-first-occurrence",
        ),
        pytest.param(
            "0 * * * *",
            "America/New_York",
            utc(2026, 3, 8, 4, 30),
            utc(2026, 3, 8, 9, 30),
            [utc(2026, 3, 8, hour) for hour in (5, 6, 7, 8, 9)],
            id="new-york-hourly-across-spring-forward",
        ),
        pytest.param(
            "0 * * * *",
            "America/New_York",
            utc(2026, 11, 1, 3, 30),
            utc(2026, 11, 1, 9, 30),
            [utc(2026, 11, 1, hour) for hour in (4, 5, 7, 8, 9)],
            id="new-york-hourly-across-fall-back-skips-repeated-hour",
        ),
        pytest.param(
            "*/15 * * * *",
            "America/New_York",
            utc(2026, 3, 8, 6, 20),
            utc(2026, 3, 8, 7, 50),
            [
                utc(2026, 3, 8, 6, 30),
                utc(2026, 3, 8, 6, 45),
                utc(2026, 3, 8, 7),
                utc(2026, 3, 8, 7, 15),
                utc(2026, 3, 8, 7, 30),
                utc(2026, 3, 8, 7, 45),
            ],
            id="new-york-quarter-hours-across-spring-gap",
        ),
        pytest.param(
            "*/15 * * * *",
            "America/New_York",
            utc(2026, 11, 1, 5, 20),
            utc(2026, 11, 1, 7, 20),
            [
                utc(2026, 11, 1, 5, 30),
                utc(2026, 11, 1, 5, 45),
                utc(2026, 11, 1, 7),
                utc(2026, 11, 1, 7, 15),
            ],
            id="new-york-quarter-hours-across-fall-back",
        ),
    ],
)
def test_dst_transitions(
    expression: str, tz: str, start: datetime, end: datetime, expected: list[datetime]
) -> None:
    assert cron.parse(expression).fires_between(start, end, tz) == expected


def test_gap_fire_happens_once_even_when_starting_next_to_it() -> None:
    schedule = cron.parse("30 2 * * *")
    assert schedule.next_after(utc(2026, 3, 29, 0, 59, 59), "Europe/Berlin") == utc(
        2026, 3, 29, 1
    )
    assert schedule.next_after(utc(2026, 3, 29, 1), "Europe/Berlin") == utc(
        2026, 3, 30, 0, 30
    )


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("* * * * * *", utc(2026, 11, 1, 6, 10), utc(2026, 11, 1, 7)),
        ("30 * * * * *", utc(2026, 11, 1, 6, 59, 59), utc(2026, 11, 1, 7, 0, 30)),
        ("30 1 * * *", utc(2026, 11, 1, 6, 10), utc(2026, 11, 2, 6, 30)),
        ("* * * * *", utc(2026, 11, 1, 5, 59, 30), utc(2026, 11, 1, 7)),
    ],
)
def test_starting_inside_the_repeated_hour_skips_its_second_occurrence(
    expression: str, after: datetime, expected: datetime
) -> None:
    assert cron.parse(expression).next_after(after, "America/New_York") == expected


# --- Property tests ----------------------------------------------------------------
# Generated expressions avoid the corners where croniter is not the contract:
# * equal ranges such as "5-5": croniter reads them as the whole field;
# * reversed ranges ("fri-mon"): croniter wraps them around, we reject them;
# * a day-of-week range ending in 7 with a step ("3-7/2"): croniter wraps it to
#   3,5 while Vixie cron counts 7 as Sunday, giving 3,5,0;
# * "*" inside a list ("1,*"): croniter mixes the literal "*" into its value list;
# * "*/N" after another list item ("1,*/2"): croniter tests for a "*" anywhere in
#   the other day field, Vixie cron only for a leading one, so "*/N" items always
#   come first in the generated lists.
# croniter runs with implement_cron_bug=True, which is Vixie cron's rule that a day
# field starting with "*" (even "*/2") is unrestricted, so both day fields must match.


@st.composite
def list_items(
    draw: st.DrawFn, low: int, high: int, names: tuple[str, ...], sunday_is_seven: bool
) -> str:
    def spell(value: int) -> str:
        if names and draw(st.booleans()):
            name = names[value - low]
            return draw(st.sampled_from([name, name.upper(), name.title()]))
        return str(value)

    kind = draw(
        st.sampled_from(["value", "range", "star_step", "start_step", "range_step"])
    )
    if kind == "value":
        value = draw(st.integers(low, high))
        if sunday_is_seven and value == 0 and draw(st.booleans()):
            return "7"
        return spell(value)
    step = draw(st.integers(1, high - low + 2))
    if kind == "star_step":
        return f"*/{step}"
    if kind == "start_step":
        return f"{spell(draw(st.integers(low, high)))}/{step}"
    first, last = sorted(
        draw(st.lists(st.integers(low, high), min_size=2, max_size=2, unique=True))
    )
    if kind == "range":
        if sunday_is_seven and first > 0 and draw(st.booleans()):
            return f"{spell(first)}-7"
        return f"{spell(first)}-{spell(last)}"
    return f"{spell(first)}-{spell(last)}/{step}"


def field(
    low: int, high: int, names: tuple[str, ...] = (), sunday_is_seven: bool = False
) -> st.SearchStrategy[str]:
    """A field: "*" or a list of one to three items, "*/N" items first."""
    items = st.lists(
        list_items(low, high, names, sunday_is_seven), min_size=1, max_size=3
    ).map(lambda texts: sorted(texts, key=lambda text: not text.startswith("*")))
    return st.one_of(st.just("*"), items.map(",".join))


@st.composite
def cron_expressions(draw: st.DrawFn) -> str:
    """Random valid 5-field or 6-field expressions."""
    fields = [
        draw(field(0, 59)),
        draw(field(0, 23)),
        draw(field(1, 31)),
        draw(field(1, 12, MONTH_NAMES)),
        draw(field(0, 6, DAY_NAMES, sunday_is_seven=True)),
    ]
    if draw(st.booleans()):
        fields.insert(0, draw(field(0, 59)))
    return " ".join(fields)


intervals = st.integers(1, 59).map("{} seconds".format)
starts = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2040, 12, 31),
    timezones=st.just(UTC),
)


def croniter_next(expression: str, start: datetime, tz: str) -> datetime | None:
    oracle = croniter(
        expression,
        start.astimezone(ZoneInfo(tz)),
        implement_cron_bug=True,
        second_at_beginning=True,
    )
    try:
        return oracle.get_next(datetime)
    except CroniterBadDateError:
        return None


@settings(max_examples=300, deadline=None)
@given(
    expression=cron_expressions(),
    start=starts,
    tz=st.sampled_from(["UTC", "Etc/GMT-5"]),
)
def test_next_after_agrees_with_croniter(
    expression: str, start: datetime, tz: str
) -> None:
    expected = croniter_next(expression, start, tz)
    try:
        fire = cron.parse(expression).next_after(start, tz)
    except cron.CronError:
        # We give up after five years; croniter searches for fifty.
        assert (
            expected is None or expected.year > start.astimezone(ZoneInfo(tz)).year + 5
        )
        return
    assert fire == expected
    assert fire.tzinfo is UTC


@cache
def dst_changeovers(tz: str, year: int) -> tuple[datetime, ...]:
    """The whole minutes (UTC) at which the zone's offset changes during ``year``."""
    zone = ZoneInfo(tz)

    def offset(instant: datetime) -> timedelta | None:
        return instant.astimezone(zone).utcoffset()

    days = [utc(year, 1, 1) + timedelta(days=offset) for offset in range(366)]
    changeovers = []
    for earlier_day, later_day in zip(days, days[1:]):
        if offset(earlier_day) != offset(later_day):
            minute = earlier_day
            while offset(minute) == offset(earlier_day):
                minute += ONE_MINUTE
            changeovers.append(minute)
    return tuple(changeovers)


@st.composite
def near_dst_changeovers(draw: st.DrawFn) -> tuple[str, datetime]:
    """A DST zone and a whole minute from six hours before to two after a changeover.

    Half the draws stay within 75 minutes of it, so starts inside a skipped or
    repeated hour are common.
    """
    tz = draw(st.sampled_from(DST_ZONES))
    changeover = draw(
        st.sampled_from(dst_changeovers(tz, draw(st.integers(2020, 2035))))
    )
    minutes = draw(st.one_of(st.integers(-6 * 60, 2 * 60), st.integers(-75, 75)))
    return tz, changeover + minutes * ONE_MINUTE


places = st.one_of(
    st.tuples(st.sampled_from(["UTC", "Etc/GMT-5", *DST_ZONES]), starts),
    near_dst_changeovers(),
)


def is_changeover_after_a_gap(instant: datetime, zone: ZoneInfo) -> bool:
    just_before = (instant - timedelta(seconds=1)).astimezone(zone)
    wall = instant.astimezone(zone).replace(tzinfo=None)
    return just_before.replace(tzinfo=None) + timedelta(seconds=1) < wall


@settings(max_examples=200, deadline=None)
@given(
    expression=st.one_of(cron_expressions(), intervals),
    place=places,
    jitter=st.timedeltas(min_value=timedelta(0), max_value=ONE_MINUTE),
)
def test_next_after_increases_and_matches_the_fields_in_local_time(
    expression: str, place: tuple[str, datetime], jitter: timedelta
) -> None:
    tz, start = place
    schedule = cron.parse(expression)
    zone = ZoneInfo(tz)
    previous = start + jitter
    for _ in range(20):
        try:
            fire = schedule.next_after(previous, tz)
        except cron.CronError:
            return
        assert fire > previous
        if schedule.interval_seconds is not None:
            assert fire.timestamp() % schedule.interval_seconds == 0
            assert fire - previous <= timedelta(seconds=schedule.interval_seconds)
        else:
            wall = fire.astimezone(zone).replace(tzinfo=None)
            assert matches_wall_time(schedule, wall) or is_changeover_after_a_gap(
                fire, zone
            )
        previous = fire


@settings(max_examples=150, deadline=None)
@given(
    expression=st.one_of(cron_expressions(), intervals),
    place=places,
    window=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)),
    limit=st.integers(0, 30),
)
def test_fires_between_agrees_with_repeated_next_after(
    expression: str, place: tuple[str, datetime], window: timedelta, limit: int
) -> None:
    tz, start = place
    schedule = cron.parse(expression)
    end = start + window
    expected: list[datetime] = []
    current = start
    while len(expected) < limit:
        try:
            current = schedule.next_after(current, tz)
        except cron.CronError:
            break
        if current > end:
            break
        expected.append(current)
    assert schedule.fires_between(start, end, tz, limit) == expected


def fires_by_scanning_the_clock(
    schedule: cron.Schedule, start: datetime, end: datetime, zone: ZoneInfo
) -> list[datetime]:
    """The contract's DST rule by brute force, for whole-minute schedules.

    Scan every UTC minute and fire when the local clock reaches a matching wall
    time it has never shown before: a wall time skipped by a jump forward is
    reached at the jump, and a repeated one was already reached the first time.
    """

    def wall(instant: datetime) -> datetime:
        return instant.astimezone(zone).replace(tzinfo=None)

    latest_wall = max(wall(start - minutes * ONE_MINUTE) for minutes in range(180))
    fires = []
    instant = start + ONE_MINUTE
    while instant <= end:
        reached = wall(instant)
        newly_shown = latest_wall + ONE_MINUTE
        while newly_shown <= reached:
            if matches_wall_time(schedule, newly_shown):
                fires.append(instant)
                break
            newly_shown += ONE_MINUTE
        latest_wall = max(latest_wall, reached)
        instant += ONE_MINUTE
    return fires


# Besides random fields, the minute and hour fields favour values that land inside
# the skipped and repeated hours (01:00-03:00 local in the DST zones).
minute_fields = st.one_of(field(0, 59), st.sampled_from(["30", "0,30", "*/15", "59"]))
hour_fields = st.one_of(field(0, 23), st.sampled_from(["*", "1,2", "2", "1-3"]))


@settings(max_examples=150, deadline=None)
@given(
    minute=minute_fields,
    hour=hour_fields,
    day_of_week=st.sampled_from(["*", "0", "1-5", "sat,sun"]),
    place=near_dst_changeovers(),
    window_minutes=st.integers(1, 8 * 60),
)
def test_dst_rules_agree_with_a_scan_of_the_wall_clock(
    minute: str,
    hour: str,
    day_of_week: str,
    place: tuple[str, datetime],
    window_minutes: int,
) -> None:
    tz, start = place
    schedule = cron.parse(f"{minute} {hour} * * {day_of_week}")
    end = start + window_minutes * ONE_MINUTE
    expected = fires_by_scanning_the_clock(schedule, start, end, ZoneInfo(tz))
    assert schedule.fires_between(start, end, tz, limit=10_000) == expected


@pytest.mark.parametrize("tz", DST_ZONES)
def test_dst_changeovers_are_found_for_the_scan(tz: str) -> None:
    assert len(dst_changeovers(tz, 2026)) == 2
