"""Retry policies: how often a failed step or workflow is tried again, and when.

A policy comes from layers of JSON options (for example engine defaults, then the
workflow's, then the step's), later layers overriding earlier ones key by key:

* ``max_attempts``: attempts in all, the first included (whole number >= 1);
* ``initial_interval``: wait after the first failure (seconds or an interval
  string such as ``"5 seconds"``, >= 0);
* ``backoff``: factor by which each further wait grows (number >= 1);
* ``max_interval``: cap on the wait before jitter (seconds or an interval string,
  >= ``initial_interval``); when no layer sets it, it is 300 seconds or
  ``initial_interval`` if that is longer;
* ``jitter``: the wait is spread uniformly over ``wait * (1 +/- jitter)``
  (number 0-1);
* ``non_retryable``: SQLSTATEs (``"23505"``) and exception class names
  (``"ValueError"``) that fail at once, one string or a list (replaced, not merged,
  by a later layer).

A ``null`` option value counts as not given. This module uses only the standard
library: it runs inside the database server.
"""

from __future__ import annotations

import difflib
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from .durations import INVALID_PARAMETER_VALUE, _show, format_duration, parse_duration
from .errors import DurableError

__all__ = ["RETRY_KEYS", "RetryPolicy"]

RETRY_KEYS = (
    "max_attempts",
    "initial_interval",
    "backoff",
    "max_interval",
    "jitter",
    "non_retryable",
)

_DEFAULT_MAX_INTERVAL = 300.0
# Any backoff above 1 overflows a float at this exponent, so capping the exponent
# here does not change the (capped) result.
_EXPONENT_CAP = 2**1000
_SQLSTATE = re.compile(r"[0-9A-Z]{5}")
_NUMBER_TYPES = (int, float, Decimal, Fraction)
_KEYS_HINT = (
    "Retry options are max_attempts (whole number >= 1), initial_interval "
    "(interval >= 0), backoff (number >= 1), max_interval (interval >= "
    "initial_interval), jitter (number 0-1) and non_retryable (SQLSTATEs or "
    "exception class names)."
)


def _invalid(key: str, value: Any, reason: str, hint: str = "") -> DurableError:
    return DurableError(
        f"invalid retry option {key} {_show(value)}: {reason}",
        sqlstate=INVALID_PARAMETER_VALUE,
        hint=f"{hint} {_KEYS_HINT}" if hint else _KEYS_HINT,
    )


def _number(key: str, value: Any, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, _NUMBER_TYPES):
        raise _invalid(key, value, f"expected a number, not {type(value).__name__}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        number = math.nan
    if not math.isfinite(number):
        raise _invalid(key, value, "must be a finite number")
    if number < low:
        raise _invalid(key, value, f"must be at least {low:g}")
    if number > high:
        raise _invalid(key, value, f"must be at most {high:g}")
    return number + 0.0


def _interval(key: str, value: Any) -> float:
    try:
        return parse_duration(value, what=f"retry option {key}")
    except DurableError as error:
        raise DurableError(
            str(error),
            sqlstate=INVALID_PARAMETER_VALUE,
            hint=f"{error.hint} {_KEYS_HINT}",
        ) from None


def _whole_number(key: str, value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(
            key, value, f"expected a whole number, not {type(value).__name__}"
        )
    if value < 1:
        raise _invalid(key, value, "must be at least 1")
    return value


def _codes(key: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise _invalid(
            key,
            value,
            f"expected a string or a list of strings, not {type(value).__name__}",
        )
    codes: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise _invalid(
                key,
                value,
                f"expected strings, found {type(item).__name__} {_show(item)}",
            )
        if not (_SQLSTATE.fullmatch(item) or item.isidentifier()):
            raise _invalid(
                key,
                value,
                f"{_show(item)} is neither a SQLSTATE nor an exception class name",
                'Write SQLSTATEs as five digits or capitals ("23505", "P0001") and '
                'class names bare ("ValueError", not "builtins.ValueError").',
            )
        if item not in codes:
            codes.append(item)
    return tuple(codes)


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a failed step or workflow again; validated on construction."""

    max_attempts: int = 3
    initial_interval: float = 1.0
    backoff: float = 2.0
    max_interval: float = _DEFAULT_MAX_INTERVAL
    jitter: float = 0.1
    non_retryable: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        values = {
            "max_attempts": _whole_number("max_attempts", self.max_attempts),
            "initial_interval": _interval("initial_interval", self.initial_interval),
            "backoff": _number("backoff", self.backoff, 1.0),
            "max_interval": _interval("max_interval", self.max_interval),
            "jitter": _number("jitter", self.jitter, 0.0, 1.0),
            "non_retryable": _codes("non_retryable", self.non_retryable),
        }
        if values["max_interval"] < values["initial_interval"]:
            raise _invalid(
                "max_interval",
                self.max_interval,
                "must not be less than initial_interval "
                f"{_show(self.initial_interval)} "
                f"({format_duration(values['initial_interval'])})",
            )
        for key, value in values.items():
            object.__setattr__(self, key, value)

    @classmethod
    def from_options(cls, *layers: Mapping[str, Any] | None) -> RetryPolicy:
        """Build a policy from option layers; later layers override earlier ones."""
        options: dict[str, Any] = {}
        layer_of: dict[str, int] = {}
        for index, layer in enumerate(layers):
            if layer is None:
                continue
            if not isinstance(layer, Mapping):
                raise DurableError(
                    f"invalid retry options {_show(layer)}: expected an object, "
                    f"not {type(layer).__name__}",
                    sqlstate=INVALID_PARAMETER_VALUE,
                    hint=_KEYS_HINT,
                )
            for key, value in layer.items():
                if key not in RETRY_KEYS:
                    close = difflib.get_close_matches(str(key), RETRY_KEYS, n=1)
                    raise DurableError(
                        f"unknown retry option {_show(key)}: {_show(value)}",
                        sqlstate=INVALID_PARAMETER_VALUE,
                        hint=(f"Did you mean {close[0]}? " if close else "")
                        + _KEYS_HINT,
                    )
                if value is not None:
                    options[key] = value
                    layer_of[key] = index
        # A max_interval from a less specific layer (or the default) yields to a
        # larger initial_interval set closer to the step; within one layer the two
        # must agree.
        if "initial_interval" in options and layer_of.get(
            "max_interval", -1
        ) < layer_of.get("initial_interval", -1):
            initial = _interval("initial_interval", options["initial_interval"])
            current = _interval(
                "max_interval", options.get("max_interval", _DEFAULT_MAX_INTERVAL)
            )
            options["max_interval"] = max(current, initial)
        return cls(**options)

    def _base(self, attempt: int) -> float:
        if self.initial_interval == 0 or self.backoff == 1 or attempt == 1:
            return min(self.initial_interval, self.max_interval)
        try:
            growth = self.backoff ** float(min(attempt - 1, _EXPONENT_CAP))
        except OverflowError:
            return self.max_interval
        return min(self.initial_interval * growth, self.max_interval)

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based).

        ``rand`` is a uniform random number in [0, 1); the wait before jitter is
        ``min(initial_interval * backoff ** (attempt - 1), max_interval)``.
        """
        _check_attempt(attempt)
        if not (isinstance(rand, (int, float)) and 0 <= rand <= 1):
            raise DurableError(
                f"invalid random number {_show(rand)} for a retry delay",
                sqlstate=INVALID_PARAMETER_VALUE,
                hint="Pass a uniform random number in [0, 1), as random.random().",
            )
        base = self._base(attempt)
        wait = base * (1 + self.jitter * (2 * rand - 1))
        return min(max(wait, 0.0), sys.float_info.max)

    def retryable(self, error: Mapping[str, Any], attempt: int) -> bool:
        """Whether another attempt may follow failed attempt ``attempt`` (1-based).

        ``error`` is the recorded error document: no retry when it has
        ``"non_retryable": true`` or its ``sqlstate`` or ``type`` is listed in
        ``non_retryable``, nor once ``max_attempts`` attempts were made.
        """
        _check_attempt(attempt)
        if not isinstance(error, Mapping):
            raise DurableError(
                f"invalid error document {_show(error)}: expected an object",
                sqlstate=INVALID_PARAMETER_VALUE,
                hint="Pass the error document recorded for the failed attempt.",
            )
        if attempt >= self.max_attempts or error.get("non_retryable") is True:
            return False
        return not any(
            isinstance(error.get(key), str) and error[key] in self.non_retryable
            for key in ("sqlstate", "type")
        )

    def as_dict(self) -> dict[str, Any]:
        """The policy as JSON-ready options (intervals in seconds)."""
        return {
            "max_attempts": self.max_attempts,
            "initial_interval": self.initial_interval,
            "backoff": self.backoff,
            "max_interval": self.max_interval,
            "jitter": self.jitter,
            "non_retryable": list(self.non_retryable),
        }


def _check_attempt(attempt: Any) -> None:
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise DurableError(
            f"invalid attempt number {_show(attempt)}: must be a whole number >= 1",
            sqlstate=INVALID_PARAMETER_VALUE,
            hint="Attempts are numbered from 1.",
        )
