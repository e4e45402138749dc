"""Durations: seconds from numbers and PostgreSQL interval strings, and back.

``parse_duration`` accepts a number of seconds (``int``, ``float``, ``Decimal``,
``Fraction``; never ``bool``) or a string read the way PostgreSQL 15 reads an
``interval`` with the default ``IntervalStyle``, and counts it as
``extract(epoch from ...)`` does:

* a plain number is seconds: ``"1.5"``;
* ``<number> <unit>`` pairs, spaces optional, units singular or plural and
  case-insensitive: ``"1 hour 30 minutes"``, ``"500 ms"``, ``"2 Days"``, ``"1h30m"``;
  a number after the last unit is seconds (``"1 minute 30"``) and a number before
  ``hours`` or a clock time is days (``"1 2 hours"``, ``"2 01:00"``);
* a clock time ``H:MM``, ``H:MM:SS[.frac]`` or ``M:SS.frac``, optionally signed and
  combined with other units: ``"05:00"`` is five hours, ``"1 day 02:00:00"``,
  ``"1:30.5"`` is ninety and a half seconds;
* the SQL year-month form ``"1-6"`` (one year and six months);
* signs on parts (``"1 day -2 hours"``) and punctuation as separators
  (``"1 hour, 30 minutes"``, ``"@ 1 hour"``).

A month counts 30 days and each whole twelve months 365.25 days; fractions of
years, decades, centuries and millennia are rounded to whole months, fractions of
months and weeks spill into days and seconds, and everything is rounded to whole
microseconds, all as in PostgreSQL. Deliberate departures, each an error here:
negative totals, ``ago``, ``infinity``, ISO 8601 (``P1D``), a unit without a
number (PostgreSQL 15 ignores it, 17 rejects it), misspelt units that PostgreSQL
takes by their first ten letters (``"millenniums"``), ``"."``, ``"1-"``, empty
clock parts (``"1:"``) and a clock time written before fractional days, weeks or
months (PostgreSQL then drops part of the fraction).

This module uses only the standard library: it runs inside the database server.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import string
from decimal import Decimal
from fractions import Fraction
from typing import Any

from .errors import DurableError

__all__ = ["format_duration", "parse_duration"]

INVALID_PARAMETER_VALUE = "22023"

_USEC_PER_SECOND = 1_000_000
_USEC_PER_MINUTE = 60 * _USEC_PER_SECOND
_USEC_PER_HOUR = 60 * _USEC_PER_MINUTE
_USEC_PER_DAY = 24 * _USEC_PER_HOUR
_SECONDS_PER_DAY = 86_400
_SECONDS_PER_MONTH = 30 * _SECONDS_PER_DAY
_SECONDS_PER_YEAR = 31_557_600  # 365.25 days
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)

# Field bits, as DecodeInterval's tmask: a field may be given once.
_MICROSECOND = 1
_MILLISECOND = 2
_SECOND = 4
_MINUTE = 8
_HOUR = 16
_DAY = 32
_WEEK = 64
_MONTH = 128
_YEAR = 256
_DECADE = 512
_CENTURY = 1024
_MILLENNIUM = 2048
_ALL_SECONDS = _SECOND | _MILLISECOND | _MICROSECOND
_CLOCK = _HOUR | _MINUTE | _ALL_SECONDS
_FIELD_NAMES = {
    _MICROSECOND: "microseconds",
    _MILLISECOND: "milliseconds",
    _SECOND: "seconds",
    _MINUTE: "minutes",
    _HOUR: "hours",
    _DAY: "days",
    _WEEK: "weeks",
    _MONTH: "months",
    _YEAR: "years",
    _DECADE: "decades",
    _CENTURY: "centuries",
    _MILLENNIUM: "millennia",
}

# PostgreSQL's deltatktbl, spelt out in full.
_UNITS = {
    **dict.fromkeys(
        ("microsecond", "microseconds", "us", "usec", "usecs", "usecond", "useconds"),
        _MICROSECOND,
    ),
    **dict.fromkeys(
        ("millisecond", "milliseconds", "ms", "msec", "msecs", "msecond", "mseconds"),
        _MILLISECOND,
    ),
    **dict.fromkeys(("second", "seconds", "s", "sec", "secs"), _SECOND),
    **dict.fromkeys(("minute", "minutes", "m", "min", "mins"), _MINUTE),
    **dict.fromkeys(("hour", "hours", "h", "hr", "hrs"), _HOUR),
    **dict.fromkeys(("day", "days", "d"), _DAY),
    **dict.fromkeys(("week", "weeks", "w"), _WEEK),
    **dict.fromkeys(("month", "months", "mon", "mons"), _MONTH),
    **dict.fromkeys(("year", "years", "y", "yr", "yrs"), _YEAR),
    **dict.fromkeys(("decade", "decades", "dec", "decs"), _DECADE),
    **dict.fromkeys(("century", "centuries", "c", "cent"), _CENTURY),
    **dict.fromkeys(("millennium", "millennia", "mil", "mils"), _MILLENNIUM),
}
# Units that PostgreSQL also knows as date keywords: only these may be followed
# directly by a digit or "+" ("1h30m"); others must be followed by a space.
_RUN_ON_UNITS = frozenset(("d", "dec", "h", "m", "mon", "s", "y"))
_MICROSECONDS_PER = {
    _MICROSECOND: 1,
    _MILLISECOND: 1_000,
    _SECOND: _USEC_PER_SECOND,
    _MINUTE: _USEC_PER_MINUTE,
    _HOUR: _USEC_PER_HOUR,
}
_YEARS_PER = {_YEAR: 1, _DECADE: 10, _CENTURY: 100, _MILLENNIUM: 1000}
_NUMBER_TYPES = (int, float, Decimal, Fraction)
_NOT_FINITE = frozenset(("infinity", "inf", "nan"))

_SPACE = " \t\n\v\f\r"
_DIGITS = "0123456789"
_LETTERS = string.ascii_letters
_SEPARATORS = frozenset(string.punctuation) - set("+-.")
_NUMBER = re.compile(r"([+-]?)([0-9]*)(?:-([0-9]+)|\.([0-9]*))?")
_CLOCK_TIME = re.compile(r"([0-9]+):([0-9]+)(?::([0-9]+))?(\.[0-9]*)?")

_SYNTAX_HINT = (
    'Write a number of seconds or a PostgreSQL interval such as "30 seconds", '
    '"500 ms", "5 min", "1 hour 30 minutes", "2 days" or "01:30:00".'
)
_UNITS_HINT = (
    "Units are microseconds (us), milliseconds (ms), seconds (s), minutes (min), "
    "hours (h), days (d), weeks (w), months (mon), years (y), decades, centuries "
    "and millennia."
)
_SHOWN_CHARS = 80


class _Invalid(Exception):
    """Why a duration string is rejected, with a hint; turned into DurableError."""

    def __init__(self, reason: str, hint: str = _SYNTAX_HINT):
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


def _show(value: Any) -> str:
    """Render a value for a message: JSON notation, shortened."""
    if isinstance(value, str):
        if len(value) > _SHOWN_CHARS - 20:
            value = value[: _SHOWN_CHARS - 23] + "..."
        return json.dumps(value, ensure_ascii=False)
    try:
        shown = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        shown = repr(value)
    if len(shown) > _SHOWN_CHARS:
        shown = shown[: _SHOWN_CHARS - 3] + "..."
    return shown


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _checked(value: int, bounds: tuple[int, int]) -> int:
    if not bounds[0] <= value <= bounds[1]:
        raise _Invalid(
            "value out of range",
            "The amount is too large for a PostgreSQL interval.",
        )
    return value


class _Interval:
    """PostgreSQL's pg_itm_in: years, months, days and microseconds, summed."""

    def __init__(self) -> None:
        self.years = 0
        self.months = 0
        self.days = 0
        self.usec = 0

    def add_usec(self, count: int) -> None:
        self.usec = _checked(self.usec + count, _INT64)

    def add_days(self, count: int) -> None:
        self.days = _checked(self.days + count, _INT32)

    def add_months(self, count: int) -> None:
        self.months = _checked(self.months + count, _INT32)

    def add_years(self, count: int) -> None:
        self.years = _checked(self.years + count, _INT32)

    def add_fraction_usec(self, fraction: float, scale: int) -> None:
        """AdjustFractMicroseconds: round ``fraction * scale`` to microseconds."""
        if fraction == 0:
            return
        fraction *= scale
        count = int(fraction)
        fraction -= count
        if fraction > 0.5:
            count += 1
        elif fraction < -0.5:
            count -= 1
        self.add_usec(count)

    def add_fraction_days(self, fraction: float, scale: int) -> None:
        """AdjustFractDays: whole days to days, the rest to microseconds."""
        if fraction == 0:
            return
        fraction *= scale
        days = int(fraction)
        self.add_days(days)
        self.add_fraction_usec(fraction - days, _USEC_PER_DAY)

    def add(self, field: int, whole: int, fraction: float) -> None:
        """Add ``whole + fraction`` units of ``field``."""
        if field in _MICROSECONDS_PER:
            scale = _MICROSECONDS_PER[field]
            self.add_usec(_checked(whole * scale, _INT64))
            self.add_fraction_usec(fraction, scale)
        elif field == _DAY:
            self.add_days(_checked(whole, _INT32))
            self.add_fraction_usec(fraction, _USEC_PER_DAY)
        elif field == _WEEK:
            self.add_days(_checked(_checked(whole, _INT32) * 7, _INT32))
            self.add_fraction_days(fraction, 7)
        elif field == _MONTH:
            self.add_months(_checked(whole, _INT32))
            self.add_fraction_days(fraction, 30)
        else:
            scale = _YEARS_PER[field]
            self.add_years(_checked(_checked(whole, _INT32) * scale, _INT32))
            self.add_months(round(fraction * scale * 12))

    def seconds(self) -> float:
        """Seconds as ``extract(epoch from interval)`` counts them."""
        months = _checked(self.years * 12 + self.months, _INT32)
        whole_years = abs(months) // 12 * (1 if months >= 0 else -1)
        rest = months - 12 * whole_years
        total = (
            whole_years * _SECONDS_PER_YEAR
            + rest * _SECONDS_PER_MONTH
            + self.days * _SECONDS_PER_DAY
        ) * _USEC_PER_SECOND + self.usec
        if total < 0:
            raise _Invalid(
                "a duration cannot be negative",
                "Give a duration of zero or more.",
            )
        return total / _USEC_PER_SECOND


def _skip(text: str, start: int, allowed: str) -> int:
    end = start
    while end < len(text) and text[end] in allowed:
        end += 1
    return end


def _digit_field(text: str, start: int) -> tuple[str, int]:
    """Find the end of a field starting with a digit, as ParseDateTime does."""
    end = _skip(text, start, _DIGITS)
    follow = text[end : end + 1]
    if follow == ":":
        return "clock", _skip(text, end + 1, _DIGITS + ":.")
    if not follow or follow not in "-/.":
        return "number", end
    after = _skip(text, end + 1, _DIGITS)
    if after > end + 1:  # "1.5", "1-6"; but "1.5.3", "1-2-3", "1/2" are dates
        if follow == "/" or text[after : after + 1] == follow:
            after = _skip(text, after, _DIGITS + follow)
            raise _Invalid(f"malformed number {_quote(text[start:after])}")
        return "number", after
    after = _skip(text, end + 1, _DIGITS + _LETTERS + follow)
    if follow == "." and after == end + 1:  # "5." is five
        return "number", after
    raise _Invalid(f"malformed number {_quote(text[start:after])}")


def _tokenize(text: str) -> list[tuple[str, str]]:
    """Split like ParseDateTime into ("number"|"clock"|"signed"|"word", text)."""
    tokens: list[tuple[str, str]] = []
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char in _SPACE or char in _SEPARATORS:
            i += 1
        elif char in _DIGITS:
            kind, end = _digit_field(text, i)
            tokens.append((kind, text[i:end]))
            i = end
        elif char == ".":
            end = _skip(text, i + 1, _DIGITS)
            tokens.append(("number", text[i:end]))
            i = end
        elif char in _LETTERS:
            end = _skip(text, i, _LETTERS)
            word = text[i:end].lower()
            _check_word(word)
            follow = text[end : end + 1]
            if follow and (
                follow in "-/."
                or (follow in _DIGITS + "+" and word not in _RUN_ON_UNITS)
            ):
                raise _Invalid(
                    f"write a space after {_quote(text[i:end])}",
                    f"PostgreSQL reads {_quote(text[i : end + 1])} as part of a date.",
                )
            tokens.append(("word", word))
            i = end
        elif char in "+-":
            start = _skip(text, i + 1, _SPACE)
            if start < n and text[start] in _DIGITS:
                end = _skip(text, start, _DIGITS + ":.-")
                tokens.append(("signed", char + text[start:end]))
                i = end
            elif start < n and text[start] in _LETTERS:
                word = text[start : _skip(text, start, _LETTERS)].lower()
                _check_word(word)
                raise _Invalid(f"sign {_quote(char)} before a unit")
            else:
                raise _Invalid(f"sign {_quote(char)} without a number")
        else:
            raise _Invalid(f"unexpected character {_quote(char)}")
    return tokens


def _check_word(word: str) -> None:
    if word in _UNITS:
        return
    if word in _NOT_FINITE:
        raise _Invalid("a duration must be finite", "Give a finite duration.")
    if word == "ago":
        raise _Invalid(
            '"ago" is not accepted: a duration cannot be negative',
            "Give a duration of zero or more, without ago.",
        )
    if word in ("p", "pt"):
        hint = "ISO 8601 durations are not accepted. " + _SYNTAX_HINT
    else:
        close = difflib.get_close_matches(word, _UNITS, n=1)
        hint = f"Did you mean {_quote(close[0])}? " if close else ""
        hint += _UNITS_HINT
    raise _Invalid(f"unknown unit {_quote(word)}", hint)


def _clock_usec(text: str) -> int:
    """DecodeTimeForInterval: microseconds of an unsigned clock time."""
    match = _CLOCK_TIME.fullmatch(text)
    if match is None:
        raise _Invalid(
            f"malformed clock time {_quote(text)}",
            "Write a clock time as H:MM, H:MM:SS or H:MM:SS.frac (or M:SS.frac).",
        )
    hours, minutes, seconds, fraction = match.groups()
    hour = _checked(int(hours), _INT64)
    minute = _checked(int(minutes), _INT32)
    second = 0
    if seconds is not None:
        second = _checked(int(seconds), _INT32)
    elif fraction is not None:  # M:SS.frac
        hour, minute, second = 0, _checked(hour, _INT32), minute
    usec = round(float(fraction) * 1e6) if fraction and fraction != "." else 0
    if minute > 59 or second > 60 or usec > _USEC_PER_SECOND:
        raise _Invalid(
            f"clock time {_quote(text)} out of range",
            "Minutes run 0-59 and seconds 0-60 in a clock time.",
        )
    total = usec
    for count, scale in (
        (hour, _USEC_PER_HOUR),
        (minute, _USEC_PER_MINUTE),
        (second, _USEC_PER_SECOND),
    ):
        total = _checked(total + _checked(count * scale, _INT64), _INT64)
    return total


def _check_once(seen: int, mask: int) -> None:
    if mask & seen:
        names = [name for bit, name in _FIELD_NAMES.items() if bit & mask & seen]
        raise _Invalid(
            f"{' and '.join(names)} given more than once",
            "Give each unit once; a clock time H:MM:SS sets hours, minutes and "
            "seconds, and a fractional number of seconds sets milliseconds and "
            "microseconds too.",
        )


def _decode(text: str) -> float:
    """DecodeInterval: read the fields right to left, then count seconds."""
    tokens = _tokenize(text)
    interval = _Interval()
    seen = 0
    field = 0  # the unit of a bare number; 0 means seconds
    pending = ""  # a unit word still waiting for its number
    for kind, token in reversed(tokens):
        if kind == "word":
            if pending:
                raise _Invalid(f"unit {_quote(pending)} has no number")
            field = _UNITS[token]
            pending = token
            continue
        pending = ""
        if kind == "clock" or (kind == "signed" and ":" in token):
            clock = token.lstrip("+-")
            usec = _clock_usec(clock)
            _check_once(seen, _CLOCK)
            if interval.usec:
                raise _Invalid(
                    f"clock time {_quote(clock)} written before fractional days, "
                    "weeks or months",
                    "Write the clock time last: PostgreSQL would drop part of the "
                    "fraction.",
                )
            interval.usec = -usec if token.startswith("-") else usec
            mask = _CLOCK
            field = _DAY
        else:
            mask, field = _add_number(interval, token, field)
            _check_once(seen, mask)
        seen |= mask
    if pending:
        raise _Invalid(f"unit {_quote(pending)} has no number")
    if not seen:
        raise _Invalid("no amount given")
    return interval.seconds()


def _add_number(interval: _Interval, token: str, field: int) -> tuple[int, int]:
    """Add one number field; return its field bits and the unit for the next."""
    match = _NUMBER.fullmatch(token)
    if match is None or not (match.group(2) or match.group(4)):
        raise _Invalid(f"malformed number {_quote(token)}")
    sign, digits, months, fraction = match.groups()
    whole = _checked(int(sign + (digits or "0")), _INT64)
    value = 0.0
    if months is not None:  # SQL year-month: "1-6"
        month = int(months)
        if month > 11:
            raise _Invalid(
                f"month {month} out of range in {_quote(token)}",
                'Write years-months with 0-11 months, as "1-6".',
            )
        whole = _checked(whole * 12 + (-month if sign == "-" else month), _INT64)
        field = _MONTH
    elif fraction:
        value = float("0." + fraction)
        if sign == "-":
            value = -value
    if field == 0:
        field = _SECOND
    interval.add(field, whole, value)
    mask = field
    if field == _SECOND and value != 0:
        mask = _ALL_SECONDS
    return mask, _DAY if field == _HOUR else field


def parse_duration(value: Any, what: str = "duration") -> float:
    """Return the seconds in a number or PostgreSQL interval string (>= 0).

    ``what`` names the value in error messages ("invalid <what> ...").
    """
    if isinstance(value, str):
        try:
            return _decode(value)
        except _Invalid as problem:
            raise DurableError(
                f"invalid {what} {_show(value)}: {problem.reason}",
                sqlstate=INVALID_PARAMETER_VALUE,
                hint=problem.hint,
            ) from None
    if isinstance(value, bool) or not isinstance(value, _NUMBER_TYPES):
        raise DurableError(
            f"invalid {what} {_show(value)}: expected a number of seconds or an "
            f"interval string, not {type(value).__name__}",
            sqlstate=INVALID_PARAMETER_VALUE,
            hint=_SYNTAX_HINT,
        )
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    except ValueError:  # Decimal("sNaN")
        seconds = math.nan
    if not math.isfinite(seconds):
        raise DurableError(
            f"invalid {what} {_show(value)}: a duration must be finite",
            sqlstate=INVALID_PARAMETER_VALUE,
            hint="Give a finite number of seconds.",
        )
    if seconds < 0:
        raise DurableError(
            f"invalid {what} {_show(value)}: a duration cannot be negative",
            sqlstate=INVALID_PARAMETER_VALUE,
            hint="Give a duration of zero or more.",
        )
    return seconds + 0.0  # turn -0.0 into 0.0


def _trim(number: float) -> str:
    return f"{number:.3f}".rstrip("0").rstrip(".")


def format_duration(seconds: float) -> str:
    """Write seconds briefly for messages: "500ms", "1.5s", "5min", "2h 30min", "3d".

    Parts are days, hours, minutes and seconds (to the millisecond), separated by
    spaces so that ``parse_duration`` (and PostgreSQL) read the text back.
    """
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds < 0:
        return "-" + format_duration(-seconds)
    usec = round(seconds * _USEC_PER_SECOND)
    if usec == 0:
        return "0s"
    if usec < _USEC_PER_SECOND:
        return f"{_trim(usec / 1000)}ms"
    msec = round(seconds * 1000)
    days, msec = divmod(msec, _SECONDS_PER_DAY * 1000)
    hours, msec = divmod(msec, 3_600_000)
    minutes, msec = divmod(msec, 60_000)
    parts = [
        f"{count}{unit}"
        for count, unit in ((days, "d"), (hours, "h"), (minutes, "min"))
        if count
    ]
    if msec:
        parts.append(f"{_trim(msec / 1000)}s")
    return " ".join(parts)
