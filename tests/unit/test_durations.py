"""Tests for durable.durations: interval syntax, errors, formatting, properties.

The expected seconds of the string cases are PostgreSQL 15's
``extract(epoch from '<text>'::interval)``, checked against a server when these
tests were written (a differential fuzz of some 80,000 random strings found no
value on which parse_duration accepted a string and disagreed with PostgreSQL).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction

import pytest
from durable.durations import format_duration, parse_duration
from durable.errors import DurableError
from hypothesis import given
from hypothesis import strategies as st

# (text, seconds) as PostgreSQL reads them.
POSTGRES_READINGS = [
    # plain numbers are seconds
    ("1.5", 1.5),
    (" 42 ", 42.0),
    (".5", 0.5),
    ("5.", 5.0),
    ("+5", 5.0),
    ("0", 0.0),
    ("-0 seconds", 0.0),
    ("3000000000", 3_000_000_000.0),
    # number and unit pairs
    ("1 hour 30 minutes", 5400.0),
    ("1.5 hours", 5400.0),
    ("2 days", 172_800.0),
    ("10 min", 600.0),
    ("500 ms", 0.5),
    ("1.5 seconds", 1.5),
    ("1 week 2 days", 777_600.0),
    ("1 ms 1 us 1 s", 1.001001),
    ("1 DAY", 86_400.0),
    ("1 Hour 30 MINUTES", 5400.0),
    ("1 hour, 30 minutes", 5400.0),
    ("@ 1 hour", 3600.0),
    ("1 @ hour", 3600.0),
    # run together
    ("1h30m", 5400.0),
    ("1h 30m", 5400.0),
    ("1d2h", 93_600.0),
    ("1mon2d", 2_764_800.0),
    ("1y2mon", 36_741_600.0),
    ("1dec2y", 378_691_200.0),
    ("1h+30m", 5400.0),
    # bare numbers next to units
    ("1 minute 30", 90.0),
    ("1 day 1.5", 86_401.5),
    ("1 2 hours", 93_600.0),
    # clock times
    ("05:00", 18_000.0),
    ("5:00", 18_000.0),
    ("05:00:30", 18_030.0),
    ("05:00:30.25", 18_030.25),
    ("1:30.5", 90.5),
    ("1:30.", 90.0),
    ("1:00:60", 3660.0),
    ("1:60.5", 120.5),
    ("24:00:00", 86_400.0),
    ("100:00:00", 360_000.0),
    ("1 day 02:00", 93_600.0),
    ("2 days 1:02:03.5", 176_523.5),
    ("02:00 1 day", 93_600.0),
    ("2 01:00", 176_400.0),
    ("2 01:00:00", 176_400.0),
    ("1 +02:03", 93_780.0),
    ("+1:30", 5400.0),
    ("1.5 days 02:00", 136_800.0),
    # signs on parts
    ("1 day -2 hours", 79_200.0),
    ("1 day -01:00", 82_800.0),
    ("1 year -1 month", 28_512_000.0),
    ("-1 mon 40 days", 864_000.0),
    ("-13 mon 500 days", 9_050_400.0),
    # months are 30 days, each whole twelve months 365.25 days
    ("1 mon", 2_592_000.0),
    ("12 months", 31_557_600.0),
    ("14 months", 36_741_600.0),
    ("1 year", 31_557_600.0),
    ("1-6", 47_109_600.0),
    ("1-2 years", 36_741_600.0),
    ("1 decade", 315_576_000.0),
    ("1 millennium", 31_557_600_000.0),
    ("178956970 years", 5_647_452_476_472_000.0),
    ("2147483647 days", 185_542_587_100_800.0),
    # fractions: years round to whole months, months and weeks spill over
    ("1.5 years", 47_109_600.0),
    ("1.1 years", 34_149_600.0),
    ("1.5 decades", 473_364_000.0),
    ("2.7 centuries", 8_520_552_000.0),
    ("1.5 months", 3_888_000.0),
    ("0.1 months", 259_200.0),
    ("1.5 weeks", 907_200.0),
    ("1.5 days", 129_600.0),
    # rounded to microseconds
    ("0.0000005", 0.0),
    ("0.0000015", 0.000001),
    ("0.0000025", 0.000002),
    ("1.9999999999", 2.0),
    ("9223372036854775807 us", 9_223_372_036_854.775807),
]

# Every unit spelling PostgreSQL accepts, with the seconds of one.
UNIT_SECONDS = {
    **dict.fromkeys(
        "microsecond microseconds us usec usecs usecond useconds".split(), 1e-6
    ),
    **dict.fromkeys(
        "millisecond milliseconds ms msec msecs msecond mseconds".split(), 1e-3
    ),
    **dict.fromkeys("second seconds s sec secs".split(), 1.0),
    **dict.fromkeys("minute minutes m min mins".split(), 60.0),
    **dict.fromkeys("hour hours h hr hrs".split(), 3600.0),
    **dict.fromkeys("day days d".split(), 86_400.0),
    **dict.fromkeys("week weeks w".split(), 604_800.0),
    **dict.fromkeys("month months mon mons".split(), 2_592_000.0),
    **dict.fromkeys("year years y yr yrs".split(), 31_557_600.0),
    **dict.fromkeys("decade decades dec decs".split(), 315_576_000.0),
    **dict.fromkeys("century centuries c cent".split(), 3_155_760_000.0),
    **dict.fromkeys("millennium millennia mil mils".split(), 31_557_600_000.0),
}

MONTHS_IN = {
    unit: round(seconds / 2_592_000)
    if seconds < 31_557_600
    else 12 * round(seconds / 31_557_600)
    for unit, seconds in UNIT_SECONDS.items()
    if seconds >= 2_592_000
}

# (value, the reason after the value in the message)
INVALID = [
    ("", "no amount given"),
    ("   ", "no amount given"),
    (",", "no amount given"),
    ("5 parsecs", 'unknown unit "parsecs"'),
    ("1 quarter", 'unknown unit "quarter"'),
    ("1 millenniums", 'unknown unit "millenniums"'),
    ("1e3", 'unknown unit "e"'),
    ("P1D", 'unknown unit "p"'),
    ("PT1H", 'unknown unit "pt"'),
    ("1 hour ago", '"ago" is not accepted: a duration cannot be negative'),
    ("infinity", "a duration must be finite"),
    ("-infinity", "a duration must be finite"),
    ("NaN", "a duration must be finite"),
    ("-1", "a duration cannot be negative"),
    ("-1 day", "a duration cannot be negative"),
    ("-1:00", "a duration cannot be negative"),
    ("1 mon -40 days", "a duration cannot be negative"),
    ("hour", 'unit "hour" has no number'),
    ("hour 1", 'unit "hour" has no number'),
    ("1 hour minutes", 'unit "minutes" has no number'),
    ("1 2", "seconds given more than once"),
    ("1 hour 1 h", "hours given more than once"),
    ("1 hour 02:00", "hours given more than once"),
    ("02:00 500 ms", "milliseconds given more than once"),
    ("1.5 seconds 500 ms", "milliseconds given more than once"),
    ("30 1 minute", "minutes given more than once"),
    ("1 2 3 hours", "days given more than once"),
    ("1min2s", 'write a space after "min"'),
    ("1 second1 minute", 'write a space after "second"'),
    ("1h-30m", 'write a space after "h"'),
    ("1:60", 'clock time "1:60" out of range'),
    ("1:00:61", 'clock time "1:00:61" out of range'),
    ("90:30.5", 'clock time "90:30.5" out of range'),
    ("1:", 'malformed clock time "1:"'),
    ("1::2", 'malformed clock time "1::2"'),
    ("1:2:3:4", 'malformed clock time "1:2:3:4"'),
    ("02:00 1.5 days", 'clock time "02:00" written before fractional days'),
    (".", 'malformed number "."'),
    ("1-", 'malformed number "1-"'),
    ("5.hours", 'malformed number "5.hours"'),
    ("1.5.3", 'malformed number "1.5.3"'),
    ("1/2", 'malformed number "1/2"'),
    ("1-2-3", 'malformed number "1-2-3"'),
    ("1-12", 'month 12 out of range in "1-12"'),
    ("- hour", 'sign "-" before a unit'),
    ("--5", 'sign "-" without a number'),
    ("5 é", 'unexpected character "é"'),
    ("5\x00", 'unexpected character "\\u0000"'),
    ("9223372036854775808 us", "value out of range"),
    ("2147483648 days", "value out of range"),
    ("2147483647 years", "value out of range"),
    ("99999999999999999999", "value out of range"),
]


@pytest.mark.parametrize(("text", "seconds"), POSTGRES_READINGS)
def test_reads_interval_strings_as_postgres(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("unit", sorted(UNIT_SECONDS))
def test_every_unit_spelling(unit):
    expected = 2 * UNIT_SECONDS[unit]
    assert parse_duration(f"2 {unit}") == pytest.approx(expected, rel=1e-12)
    assert parse_duration(f"2{unit.upper()}") == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (2, 2.0),
        (0.5, 0.5),
        (10**20, 1e20),
        (-0.0, 0.0),
        (Decimal("1.25"), 1.25),
        (Fraction(3, 2), 1.5),
    ],
)
def test_numbers_are_seconds(value, seconds):
    result = parse_duration(value)
    assert type(result) is float
    assert result == seconds
    assert math.copysign(1, result) == 1


@pytest.mark.parametrize(("text", "reason"), INVALID)
def test_invalid_strings(text, reason):
    with pytest.raises(DurableError) as caught:
        parse_duration(text)
    error = caught.value
    assert error.sqlstate == "22023"
    assert error.hint
    assert str(error).startswith("invalid duration ")
    assert reason in str(error)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            True,
            "invalid duration true: expected a number of seconds or an interval "
            "string, not bool",
        ),
        (
            None,
            "invalid duration null: expected a number of seconds or an interval "
            "string, not NoneType",
        ),
        (
            [5],
            "invalid duration [5]: expected a number of seconds or an interval "
            "string, not list",
        ),
        (-1, "invalid duration -1: a duration cannot be negative"),
        (-0.5, "invalid duration -0.5: a duration cannot be negative"),
        (math.nan, "invalid duration NaN: a duration must be finite"),
        (math.inf, "invalid duration Infinity: a duration must be finite"),
        (Decimal("NaN"), "invalid duration Decimal('NaN'): a duration must be finite"),
        (Decimal("sNaN"), "a duration must be finite"),
        (Fraction(10**400), "a duration must be finite"),
    ],
)
def test_invalid_values(value, message):
    with pytest.raises(DurableError) as caught:
        parse_duration(value)
    assert caught.value.sqlstate == "22023"
    assert caught.value.hint
    assert message in str(caught.value)


def test_message_names_what_and_value():
    with pytest.raises(DurableError) as caught:
        parse_duration("5 parsecs", "retry interval")
    assert str(caught.value) == (
        'invalid retry interval "5 parsecs": unknown unit "parsecs"'
    )
    assert "Units are" in caught.value.hint


def test_hints_suggest_fixes():
    with pytest.raises(DurableError) as caught:
        parse_duration("3 secnds")
    assert caught.value.hint.startswith('Did you mean "seconds"?')
    with pytest.raises(DurableError) as caught:
        parse_duration("P1D")
    assert "ISO 8601" in caught.value.hint


def test_long_values_are_shortened_in_messages():
    with pytest.raises(DurableError) as caught:
        parse_duration("1 parsec " + "x" * 500)
    assert len(str(caught.value)) < 200
    assert '..."' in str(caught.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (1e-7, "0s"),
        (0.000001, "0.001ms"),
        (0.0005, "0.5ms"),
        (0.5, "500ms"),
        (0.9999996, "1s"),
        (1, "1s"),
        (1.5, "1.5s"),
        (1.0004, "1s"),
        (59.9996, "1min"),
        (300, "5min"),
        (3600, "1h"),
        (5400, "1h 30min"),
        (9000, "2h 30min"),
        (86_400, "1d"),
        (259_200, "3d"),
        (93_784.5, "1d 2h 3min 4.5s"),
        (90_061, "1d 1h 1min 1s"),
        (40 * 86_400, "40d"),
        (-90, "-1min 30s"),
        (math.inf, "inf"),
        (math.nan, "nan"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**12))
def test_format_round_trips_whole_seconds(seconds):
    text = format_duration(seconds)
    assert re.fullmatch(r"\d+(d|h|min|s)( \d+(h|min|s))*", text)
    assert parse_duration(text) == seconds
    assert format_duration(parse_duration(text)) == text


@given(st.integers(min_value=1, max_value=10**11))
def test_format_round_trips_milliseconds(milliseconds):
    seconds = milliseconds / 1000
    assert parse_duration(format_duration(seconds)) == seconds


@given(
    st.dictionaries(
        st.sampled_from(sorted(UNIT_SECONDS)), st.integers(0, 10_000), min_size=1
    ),
    st.randoms(use_true_random=False),
    st.sampled_from([" ", "  ", ", ", "\t"]),
)
def test_unit_amounts_add_up_in_any_order(amounts, random, separator):
    by_field = {UNIT_SECONDS[unit]: (unit, count) for unit, count in amounts.items()}
    parts = [f"{count} {unit}" for unit, count in by_field.values()]  # fields once
    random.shuffle(parts)
    months = usec = 0
    for unit, count in by_field.values():
        if unit in MONTHS_IN:
            months += count * MONTHS_IN[unit]
        else:
            usec += count * round(UNIT_SECONDS[unit] * 1_000_000)
    usec += (months // 12 * 31_557_600 + months % 12 * 2_592_000) * 1_000_000
    assert parse_duration(separator.join(parts)) == usec / 1_000_000


@given(st.floats(min_value=0, allow_nan=False, allow_infinity=False))
def test_non_negative_floats_are_themselves(seconds):
    assert parse_duration(seconds) == seconds


@given(st.integers(min_value=0, max_value=(2**63 - 1) // 1_000_000))
def test_integer_strings_are_seconds(seconds):
    assert parse_duration(str(seconds)) == float(seconds)


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_microseconds_are_exact(usec):
    assert parse_duration(f"{usec} us") == usec / 1_000_000


def check_seconds_or_error(text):
    try:
        seconds = parse_duration(text)
    except DurableError as error:
        assert error.sqlstate == "22023"
        assert error.hint
        assert str(error).startswith("invalid duration ")
    else:
        assert math.isfinite(seconds)
        assert seconds >= 0


@given(st.text(max_size=40))
def test_any_text_gives_seconds_or_a_durable_error(text):
    check_seconds_or_error(text)


@given(st.text(alphabet=st.sampled_from("0123456789 .:+-,hdmsyonw@"), max_size=24))
def test_interval_like_text_gives_seconds_or_a_durable_error(text):
    check_seconds_or_error(text)
