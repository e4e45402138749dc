"""Cron expression parsing and next-fire calculation for durable schedules.

The accepted language is Vixie/pg_cron cron:

* five fields ``minute hour day-of-month month day-of-week`` or six fields with a
  leading ``second`` field;
* ``*``, numbers, lists ``1,5,9``, ranges ``1-5``, steps ``*/15``, ``10-50/5`` and
  ``5/15`` (start/step, meaning start through the field's end in steps);
* month names ``jan``-``dec`` and day names ``sun``-``sat`` (case-insensitive);
  day-of-week 0-7 where both 0 and 7 are Sunday (``*`` and ``N/step`` span 0-6 so
  Sunday is not counted twice);
* the macros ``@yearly`` ``@annually`` ``@monthly`` ``@weekly`` ``@daily``
  ``@midnight`` ``@hourly``;
* pg_cron's interval form ``'N seconds'`` (N in 1-59), firing at every instant
  whose Unix epoch second is a multiple of N.

Day-of-month and day-of-week combine as in Vixie cron: when both fields are
restricted (neither starts with ``*``) a day matches if either matches, otherwise
both must match.

Fire times are computed on the wall clock of an IANA time zone. Across daylight
saving changes a matching wall time inside a gap fires once at the first instant
after the gap, and a wall time that occurs twice fires only at its first
occurrence.

This module uses only the standard library: it runs inside the database server.
"""

from __future__ import annotations

import calendar
import re
from bisect import bisect_left
from dataclasses import dataclass
from datetime import MAXYEAR, datetime, timedelta, timezone
from typing import NamedTuple
from zoneinfo import ZoneInfo

__all__ = ["CronError", "Schedule", "check_timezone", "parse"]

_ONE_SECOND = timedelta(seconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_GIVE_UP_AFTER_YEARS = 5
_DIGITS = re.compile(r"[0-9]+")
_INTERVAL = re.compile(r"([0-9]+)\s*seconds?", re.IGNORECASE)
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class CronError(ValueError):
    """A cron expression or time zone name that cannot be used."""


class _FieldSpec(NamedTuple):
    name: str
    low: int
    high: int
    wildcard_high: int  # upper end of ``*`` and ``N/step``
    names: dict[str, int]


def _names(words: str, first: int) -> dict[str, int]:
    return {word: value for value, word in enumerate(words.split(), start=first)}


_SECOND = _FieldSpec("second", 0, 59, 59, {})
_MINUTE = _FieldSpec("minute", 0, 59, 59, {})
_HOUR = _FieldSpec("hour", 0, 23, 23, {})
_DAY_OF_MONTH = _FieldSpec("day-of-month", 1, 31, 31, {})
_MONTH = _FieldSpec(
    "month", 1, 12, 12, _names("jan feb mar apr may jun jul aug sep oct nov dec", 1)
)
_DAY_OF_WEEK = _FieldSpec(
    "day-of-week", 0, 7, 6, _names("sun mon tue wed thu fri sat", 0)
)


def _describe_allowed(spec: _FieldSpec) -> str:
    numbers = f"a number {spec.low}-{spec.high}"
    if not spec.names:
        return numbers
    first, *_, last = spec.names
    return f"{numbers} or a name {first}-{last}"


def _parse_value(text: str, spec: _FieldSpec) -> int:
    if _DIGITS.fullmatch(text):
        value = int(text)
    elif text.lower() in spec.names:
        return spec.names[text.lower()]
    else:
        raise CronError(
            f'cron field "{spec.name}" value "{text}" is not {_describe_allowed(spec)}'
        )
    if not spec.low <= value <= spec.high:
        raise CronError(
            f'cron field "{spec.name}" value {value} is out of range '
            f"{spec.low}-{spec.high}"
        )
    return value


def _parse_item(item: str, spec: _FieldSpec) -> range:
    if not item:
        raise CronError(f'cron field "{spec.name}" has an empty list element')
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not _DIGITS.fullmatch(step_text) or int(step_text) == 0:
            raise CronError(
                f'cron field "{spec.name}" step "{step_text}" in "{item}" '
                "is not a positive integer"
            )
        step = int(step_text)
    if base == "*":
        first, last = spec.low, spec.wildcard_high
    elif "-" in base:
        first_text, _, last_text = base.partition("-")
        first, last = _parse_value(first_text, spec), _parse_value(last_text, spec)
    else:
        first = _parse_value(base, spec)
        last = spec.wildcard_high if slash else first
    if first > last:
        raise CronError(
            f'cron field "{spec.name}" range "{item}" is reversed: '
            f"it runs from {first} to {last}, and the start must not exceed the end"
        )
    return range(first, last + 1, step)


def _parse_field(text: str, spec: _FieldSpec) -> tuple[int, ...]:
    values: set[int] = set()
    for item in text.split(","):
        values.update(_parse_item(item, spec))
    return tuple(sorted(values))


def _load_zone(tz: str) -> ZoneInfo:
    if not isinstance(tz, str):
        raise CronError(f"unknown time zone {tz!r}: expected an IANA name as a string")
    try:
        return ZoneInfo(tz)
    except (KeyError, ValueError, OSError):
        # ZoneInfoNotFoundError is a KeyError; malformed keys raise ValueError.
        raise CronError(
            f'unknown time zone "{tz}": expected an IANA name such as "Europe/Berlin"'
        ) from None


def check_timezone(tz: str) -> str:
    """Return ``tz`` if it names a known IANA time zone; raise CronError if not."""
    _load_zone(tz)
    return tz


def _require_aware(moment: datetime, argument: str) -> None:
    if moment.utcoffset() is None:
        raise ValueError(
            f"{argument} must be a timezone-aware datetime, got {moment!r}"
        )


def _ceiling(values: tuple[int, ...], at_least: int) -> int | None:
    """The smallest of the sorted ``values`` that is >= ``at_least``, if any."""
    index = bisect_left(values, at_least)
    return values[index] if index < len(values) else None


def _transition_instant(earlier: datetime, later: datetime, zone: ZoneInfo) -> datetime:
    """The first whole second in (earlier, later] with the UTC offset ``later`` has.

    ``earlier`` and ``later`` are whole-second UTC instants with different offsets
    in ``zone``, less than a day or so apart; bisection finds the transition.
    """
    target_offset = later.astimezone(zone).utcoffset()
    while later - earlier > _ONE_SECOND:
        middle = earlier + (later - earlier) // _ONE_SECOND // 2 * _ONE_SECOND
        if middle.astimezone(zone).utcoffset() == target_offset:
            later = middle
        else:
            earlier = middle
    return later


def _wall_time_to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant at which the naive wall-clock time ``wall`` fires in ``zone``.

    A repeated wall time maps to its first occurrence; a wall time inside a gap
    maps to the first instant after the gap.
    """
    first_occurrence = wall.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
    if first_occurrence.astimezone(zone).replace(tzinfo=None) == wall:
        return first_occurrence
    # In a gap, fold=0 applies the offset before the jump (an instant after the
    # gap) and fold=1 the offset after it (an instant before the gap).
    before_gap = wall.replace(tzinfo=zone, fold=1).astimezone(timezone.utc)
    return _transition_instant(before_gap, first_occurrence, zone)


def _first_wall_time_after(instant: datetime, zone: ZoneInfo) -> datetime:
    """The earliest naive wall time whose firing instant is after ``instant``.

    ``instant`` is a whole-second UTC instant. Usually that is the next wall-clock
    second, which may lie in a gap (mapping to the instant right after ``instant``).
    If ``instant`` lies in the second occurrence of a repeated hour, every wall time
    left in that hour has already fired at its first occurrence, so the search
    starts where the repetition ends.
    """
    local = instant.astimezone(zone)
    if local.fold == 0:
        return local.replace(tzinfo=None) + _ONE_SECOND
    repeated_length = local.replace(fold=0).utcoffset() - local.utcoffset()
    changeover = _transition_instant(instant - repeated_length, instant, zone)
    return (changeover + repeated_length).astimezone(zone).replace(tzinfo=None)


@dataclass(frozen=True, repr=False)
class Schedule:
    """A parsed cron expression; build it with :func:`parse`.

    The field attributes are the sorted matching values (day-of-week 0-6, Sunday
    0). For the interval form ``'N seconds'`` they are empty and
    ``interval_seconds`` is N.
    """

    expression: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: tuple[int, ...]
    months: tuple[int, ...]
    days_of_week: tuple[int, ...]
    days_match_either: bool  # both day fields restricted: Vixie's OR rule
    interval_seconds: int | None = None

    def __repr__(self) -> str:
        return f"Schedule({self.expression!r})"

    def next_after(self, after: datetime, tz: str = "UTC") -> datetime:
        """Return the first fire instant strictly after ``after``, in UTC.

        Fields are matched on the wall clock of time zone ``tz``. Raises CronError
        for an unknown zone or when nothing fires within five years.
        """
        zone = _load_zone(tz)
        _require_aware(after, "after")
        last_year = after.astimezone(zone).year + _GIVE_UP_AFTER_YEARS
        fire = self._next_fire(after, zone, last_year)
        if fire is None:
            raise CronError(
                f'cron expression "{self.expression}" does not fire within '
                f"{_GIVE_UP_AFTER_YEARS} years after {after.isoformat()}"
            )
        return fire

    def fires_between(
        self, start: datetime, end: datetime, tz: str = "UTC", limit: int = 1000
    ) -> list[datetime]:
        """Return the first ``limit`` fire instants t with start < t <= end, in UTC.

        A schedule that never fires in the window gives an empty list.
        """
        zone = _load_zone(tz)
        _require_aware(start, "start")
        _require_aware(end, "end")
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        last_year = end.astimezone(zone).year + 1
        fires: list[datetime] = []
        fire = self._next_fire(start, zone, last_year)
        while fire is not None and fire <= end and len(fires) < limit:
            fires.append(fire)
            fire = self._next_fire(fire, zone, last_year)
        return fires

    def _next_fire(
        self, after: datetime, zone: ZoneInfo, last_year: int
    ) -> datetime | None:
        """First fire instant after ``after`` on a wall clock up to ``last_year``."""
        whole_second = after.astimezone(timezone.utc).replace(microsecond=0)
        if self.interval_seconds is not None:
            epoch_seconds = (whole_second - _EPOCH) // _ONE_SECOND
            slot = epoch_seconds // self.interval_seconds + 1
            return _EPOCH + slot * self.interval_seconds * _ONE_SECOND
        wall = self._next_matching_wall_time(
            _first_wall_time_after(whole_second, zone), min(last_year, MAXYEAR)
        )
        return None if wall is None else _wall_time_to_instant(wall, zone)

    def _day_matches(self, year: int, month: int, day: int) -> bool:
        weekday = (calendar.weekday(year, month, day) + 1) % 7  # Sunday is 0
        in_days_of_month = day in self.days_of_month
        in_days_of_week = weekday in self.days_of_week
        if self.days_match_either:
            return in_days_of_month or in_days_of_week
        return in_days_of_month and in_days_of_week

    def _next_matching_wall_time(
        self, start: datetime, last_year: int
    ) -> datetime | None:
        """The first naive wall time >= ``start`` matching every field, if any.

        Each field is moved to its next allowed value; when none is left the next
        larger field is advanced by one and the smaller ones restart from zero.
        """
        year, month, day = start.year, start.month, start.day
        hour, minute, second = start.hour, start.minute, start.second
        while year <= last_year:
            next_month = _ceiling(self.months, month)
            if next_month is None:
                year, month, day, hour, minute, second = year + 1, 1, 1, 0, 0, 0
                continue
            if next_month != month:
                month, day, hour, minute, second = next_month, 1, 0, 0, 0
            next_day = next(
                (
                    candidate
                    for candidate in range(day, calendar.monthrange(year, month)[1] + 1)
                    if self._day_matches(year, month, candidate)
                ),
                None,
            )
            if next_day is None:
                month, day, hour, minute, second = month + 1, 1, 0, 0, 0
                continue
            if next_day != day:
                day, hour, minute, second = next_day, 0, 0, 0
            next_hour = _ceiling(self.hours, hour)
            if next_hour is None:
                day, hour, minute, second = day + 1, 0, 0, 0
                continue
            if next_hour != hour:
                hour, minute, second = next_hour, 0, 0
            next_minute = _ceiling(self.minutes, minute)
            if next_minute is None:
                hour, minute, second = hour + 1, 0, 0
                continue
            if next_minute != minute:
                minute, second = next_minute, 0
            next_second = _ceiling(self.seconds, second)
            if next_second is None:
                minute, second = minute + 1, 0
                continue
            return datetime(year, month, day, hour, minute, next_second)
        return None


def parse(expr: str) -> Schedule:
    """Parse a cron expression, macro or ``'N seconds'`` interval into a Schedule."""
    if not isinstance(expr, str):
        raise CronError(f"cron expression must be a string, got {expr!r}")
    expression = " ".join(expr.split())
    if not expression:
        raise CronError("cron expression is empty")
    interval = _INTERVAL.fullmatch(expression)
    if interval:
        seconds = int(interval.group(1))
        if not 1 <= seconds <= 59:
            raise CronError(
                f'cron interval "{expression}" must be between 1 and 59 seconds'
            )
        return Schedule(
            expression=expression,
            seconds=(),
            minutes=(),
            hours=(),
            days_of_month=(),
            months=(),
            days_of_week=(),
            days_match_either=False,
            interval_seconds=seconds,
        )
    fields = expression.split(" ")
    if expression.startswith("@"):
        macro = _MACROS.get(expression.lower())
        if macro is None:
            raise CronError(
                f'unknown cron macro "{expression}": '
                f"expected one of {', '.join(_MACROS)}"
            )
        fields = macro.split(" ")
    if len(fields) == 5:
        fields.insert(0, "0")
    elif len(fields) != 6:
        raise CronError(
            f'cron expression "{expression}" has {len(fields)} fields: expected 5 '
            "(minute hour day-of-month month day-of-week) or 6 (second first)"
        )
    second, minute, hour, day_of_month, month, day_of_week = fields
    return Schedule(
        expression=expression,
        seconds=_parse_field(second, _SECOND),
        minutes=_parse_field(minute, _MINUTE),
        hours=_parse_field(hour, _HOUR),
        days_of_month=_parse_field(day_of_month, _DAY_OF_MONTH),
        months=_parse_field(month, _MONTH),
        days_of_week=tuple(
            sorted({day % 7 for day in _parse_field(day_of_week, _DAY_OF_WEEK)})
        ),
        days_match_either=not day_of_month.startswith("*")
        and not day_of_week.startswith("*"),
    )
