"""Tests for durable.retry: option layering, validation, delays, retryability."""

from __future__ import annotations

import dataclasses
import json
import math
from decimal import Decimal

import pytest
from durable.durations import parse_duration
from durable.errors import DurableError
from durable.retry import RETRY_KEYS, RetryPolicy
from hypothesis import given
from hypothesis import strategies as st

DEFAULTS = {
    "max_attempts": 3,
    "initial_interval": 1.0,
    "backoff": 2.0,
    "max_interval": 300.0,
    "jitter": 0.1,
    "non_retryable": [],
}


def test_keys_are_the_fields():
    fields = tuple(field.name for field in dataclasses.fields(RetryPolicy))
    assert fields == RETRY_KEYS


def test_defaults():
    policy = RetryPolicy()
    assert policy.as_dict() == DEFAULTS
    assert RetryPolicy.from_options() == policy
    assert RetryPolicy.from_options(None, {}, None) == policy


def test_later_layers_override_earlier_ones():
    policy = RetryPolicy.from_options(
        {"max_attempts": 5, "backoff": 3, "jitter": 0.5},
        None,
        {"max_attempts": 7, "jitter": None},
        {"initial_interval": "2 seconds"},
    )
    assert policy.as_dict() == {
        "max_attempts": 7,
        "initial_interval": 2.0,
        "backoff": 3.0,
        "max_interval": 300.0,
        "jitter": 0.5,
        "non_retryable": [],
    }


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1 second", 1.0),
        ("5 minutes", 300.0),
        ("00:00:30", 30.0),
        ("1.5", 1.5),
        ("500 ms", 0.5),
        (2, 2.0),
        (0.5, 0.5),
        (0, 0.0),
        (Decimal("2.5"), 2.5),
    ],
)
def test_intervals_accept_numbers_and_interval_strings(value, seconds):
    policy = RetryPolicy.from_options(
        {"initial_interval": value, "max_interval": value}
    )
    assert policy.initial_interval == seconds
    assert policy.max_interval == seconds
    assert type(policy.initial_interval) is float


def test_max_interval_defaults_to_at_least_initial_interval():
    assert RetryPolicy.from_options({"initial_interval": "10 min"}).max_interval == 600
    assert RetryPolicy.from_options({"initial_interval": 5}).max_interval == 300
    assert (
        RetryPolicy.from_options(
            {"max_interval": "1 hour"}, {"initial_interval": "10 min"}
        ).max_interval
        == 3600
    )


def test_non_retryable_forms():
    assert RetryPolicy.from_options({"non_retryable": "23505"}).non_retryable == (
        "23505",
    )
    policy = RetryPolicy.from_options(
        {"non_retryable": ["23505", "ValueError", "23505", "P0001"]}
    )
    assert policy.non_retryable == ("23505", "ValueError", "P0001")
    replaced = RetryPolicy.from_options(
        {"non_retryable": ["23505"]}, {"non_retryable": []}
    )
    assert replaced.non_retryable == ()
    assert RetryPolicy(non_retryable=["KeyError"]).non_retryable == ("KeyError",)


def test_whole_float_attempts_are_accepted():
    policy = RetryPolicy.from_options({"max_attempts": 4.0})
    assert policy.max_attempts == 4
    assert type(policy.max_attempts) is int


def test_direct_construction_is_validated_and_normalised():
    policy = RetryPolicy(initial_interval="2s", backoff=3, max_interval=10)
    assert policy == RetryPolicy(initial_interval=2.0, backoff=3.0, max_interval=10.0)
    assert type(policy.backoff) is float
    with pytest.raises(DurableError, match="max_attempts 0: must be at least 1"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(DurableError, match="must not be less than initial_interval"):
        RetryPolicy(initial_interval=600)


def test_policy_is_frozen_and_hashable():
    policy = RetryPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 5  # type: ignore[misc]
    assert hash(policy) == hash(RetryPolicy())


def test_as_dict_is_json_and_round_trips():
    policy = RetryPolicy.from_options(
        {"initial_interval": "1.5 s", "non_retryable": ["40001", "ValueError"]}
    )
    assert json.loads(json.dumps(policy.as_dict())) == policy.as_dict()
    assert RetryPolicy.from_options(policy.as_dict()) == policy


# (layer, message, hint fragment)
INVALID_OPTIONS = [
    (
        {"max_attempt": 5},
        'unknown retry option "max_attempt": 5',
        "Did you mean max_attempts?",
    ),
    ({"delay": "1s"}, 'unknown retry option "delay": "1s"', "Retry options are"),
    ({1: 2}, "unknown retry option 1: 2", "Retry options are"),
    (
        {"max_attempts": 0},
        "invalid retry option max_attempts 0: must be at least 1",
        "max_attempts (whole number >= 1)",
    ),
    (
        {"max_attempts": "3"},
        'invalid retry option max_attempts "3": expected a whole number, not str',
        "Retry options are",
    ),
    (
        {"max_attempts": 2.5},
        "invalid retry option max_attempts 2.5: expected a whole number, not float",
        "Retry options are",
    ),
    (
        {"max_attempts": True},
        "invalid retry option max_attempts true: expected a whole number, not bool",
        "Retry options are",
    ),
    (
        {"initial_interval": "5 parsecs"},
        'invalid retry option initial_interval "5 parsecs": unknown unit "parsecs"',
        "Retry options are",
    ),
    (
        {"initial_interval": -1},
        "invalid retry option initial_interval -1: a duration cannot be negative",
        "Retry options are",
    ),
    (
        {"initial_interval": [1]},
        "invalid retry option initial_interval [1]: expected a number of seconds "
        "or an interval string, not list",
        "Retry options are",
    ),
    (
        {"backoff": 0.5},
        "invalid retry option backoff 0.5: must be at least 1",
        "backoff (number >= 1)",
    ),
    (
        {"backoff": "2"},
        'invalid retry option backoff "2": expected a number, not str',
        "Retry options are",
    ),
    (
        {"backoff": math.inf},
        "invalid retry option backoff Infinity: must be a finite number",
        "Retry options are",
    ),
    (
        {"max_interval": "1 minute", "initial_interval": "2 minutes"},
        'invalid retry option max_interval "1 minute": must not be less than '
        'initial_interval "2 minutes" (2min)',
        "max_interval (interval >= initial_interval)",
    ),
    (
        {"max_interval": "forever"},
        'invalid retry option max_interval "forever": unknown unit "forever"',
        "Retry options are",
    ),
    (
        {"jitter": 1.5},
        "invalid retry option jitter 1.5: must be at most 1",
        "jitter (number 0-1)",
    ),
    (
        {"jitter": -0.1},
        "invalid retry option jitter -0.1: must be at least 0",
        "Retry options are",
    ),
    (
        {"jitter": math.nan},
        "invalid retry option jitter NaN: must be a finite number",
        "Retry options are",
    ),
    (
        {"non_retryable": 23505},
        "invalid retry option non_retryable 23505: expected a string or a list of "
        "strings, not int",
        "Retry options are",
    ),
    (
        {"non_retryable": ["23505", 1]},
        'invalid retry option non_retryable ["23505", 1]: expected strings, '
        "found int 1",
        "Retry options are",
    ),
    (
        {"non_retryable": ["builtins.ValueError"]},
        'invalid retry option non_retryable ["builtins.ValueError"]: '
        '"builtins.ValueError" is neither a SQLSTATE nor an exception class name',
        "class names bare",
    ),
    (
        {"non_retryable": [""]},
        'invalid retry option non_retryable [""]: "" is neither a SQLSTATE nor an '
        "exception class name",
        "Write SQLSTATEs as five digits or capitals",
    ),
    (
        ["max_attempts"],
        'invalid retry options ["max_attempts"]: expected an object, not list',
        "Retry options are",
    ),
    (
        "max_attempts=3",
        'invalid retry options "max_attempts=3": expected an object, not str',
        "Retry options are",
    ),
]


@pytest.mark.parametrize(("layer", "message", "hint"), INVALID_OPTIONS)
def test_invalid_options(layer, message, hint):
    with pytest.raises(DurableError) as caught:
        RetryPolicy.from_options({"max_attempts": 2}, layer)
    assert str(caught.value) == message
    assert caught.value.sqlstate == "22023"
    assert hint in caught.value.hint
    assert "max_attempts" in caught.value.hint  # every hint lists the keys


def test_delays_grow_and_are_capped():
    policy = RetryPolicy(jitter=0)
    delays = [policy.delay(attempt, 0.5) for attempt in range(1, 12)]
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]


def test_jitter_spreads_the_delay():
    policy = RetryPolicy(initial_interval=10, jitter=0.2)
    assert policy.delay(1, 0.0) == pytest.approx(8.0)
    assert policy.delay(1, 0.5) == 10.0
    assert policy.delay(1, 0.999999) == pytest.approx(12.0, rel=1e-5)
    assert policy.delay(1, 1.0) == pytest.approx(12.0)


def test_full_jitter_can_reach_zero():
    assert RetryPolicy(jitter=1).delay(3, 0.0) == 0.0


def test_constant_and_zero_delays():
    constant = RetryPolicy(initial_interval=5, backoff=1, jitter=0)
    assert {constant.delay(attempt, 0.3) for attempt in (1, 2, 50, 10**100)} == {5}
    immediate = RetryPolicy(initial_interval=0)
    assert {immediate.delay(attempt, 0.9) for attempt in (1, 2, 10**100)} == {0}


@pytest.mark.parametrize("attempt", [10**7, 10**100, 10**400])
def test_huge_attempt_numbers_do_not_overflow(attempt):
    policy = RetryPolicy(backoff=1.000001, max_interval=3600, jitter=0)
    assert policy.delay(attempt, 0.5) == 3600.0
    assert RetryPolicy(backoff=10).delay(attempt, 1.0) == pytest.approx(330.0)


@pytest.mark.parametrize("attempt", [0, -1, True, 1.0, "1", None])
def test_delay_rejects_bad_attempt_numbers(attempt):
    with pytest.raises(DurableError, match="invalid attempt number") as caught:
        RetryPolicy().delay(attempt, 0.5)
    assert caught.value.sqlstate == "22023"
    assert caught.value.hint


@pytest.mark.parametrize("rand", [-0.1, 1.5, math.nan, "0.5", None])
def test_delay_rejects_bad_random_numbers(rand):
    with pytest.raises(DurableError, match="invalid random number") as caught:
        RetryPolicy().delay(1, rand)
    assert caught.value.hint


@pytest.mark.parametrize(
    ("error", "attempt", "expected"),
    [
        ({"sqlstate": "XX000", "type": "RuntimeError"}, 1, True),
        ({"sqlstate": "XX000", "type": "RuntimeError"}, 2, True),
        ({"sqlstate": "XX000", "type": "RuntimeError"}, 3, False),
        ({"sqlstate": "XX000", "type": "RuntimeError"}, 4, False),
        ({}, 1, True),
        ({"sqlstate": None, "type": None}, 1, True),
        ({"sqlstate": "23505", "type": "UniqueViolation"}, 1, False),
        ({"sqlstate": "DU000", "type": "ValueError"}, 1, False),
        ({"sqlstate": "DU000", "type": "KeyError"}, 1, True),
        ({"sqlstate": "DU000", "non_retryable": True}, 1, False),
        ({"sqlstate": "DU000", "non_retryable": False}, 1, True),
        ({"sqlstate": "DU000", "non_retryable": "yes"}, 1, True),
        ({"sqlstate": ["23505"]}, 1, True),
    ],
)
def test_retryable(error, attempt, expected):
    policy = RetryPolicy(non_retryable=("23505", "ValueError"))
    assert policy.retryable(error, attempt) is expected


def test_a_single_attempt_is_never_retried():
    assert RetryPolicy(max_attempts=1).retryable({"sqlstate": "XX000"}, 1) is False


def test_retryable_rejects_bad_arguments():
    with pytest.raises(DurableError, match="invalid error document"):
        RetryPolicy().retryable(None, 1)  # type: ignore[arg-type]
    with pytest.raises(DurableError, match="invalid attempt number"):
        RetryPolicy().retryable({}, 0)


# Property tests.

INTERVALS = st.one_of(
    st.floats(min_value=0, max_value=100),
    st.integers(min_value=0, max_value=100),
    st.integers(min_value=0, max_value=100).map(lambda n: f"{n} seconds"),
    st.sampled_from(["1 second", "500 ms", "00:01:30", "1:30.5", "1 min 5"]),
)
VALID_VALUES = {
    "max_attempts": st.integers(min_value=1, max_value=100),
    "initial_interval": INTERVALS,
    "backoff": st.floats(min_value=1, max_value=10),
    "max_interval": st.one_of(
        st.floats(min_value=100, max_value=10_000),
        st.sampled_from(["5 minutes", "1 hour", "00:10:00", "2 days"]),
    ),
    "jitter": st.floats(min_value=0, max_value=1),
    "non_retryable": st.one_of(
        st.sampled_from(["23505", "ValueError"]),
        st.lists(
            st.sampled_from(["23505", "40001", "P0001", "ValueError", "KeyError"])
        ),
    ),
}
LAYERS = st.lists(
    st.none()
    | st.fixed_dictionaries(
        {},
        optional={key: st.none() | values for key, values in VALID_VALUES.items()},
    ),
    max_size=4,
)
POLICIES = st.builds(
    RetryPolicy,
    max_attempts=st.integers(min_value=1, max_value=20),
    initial_interval=st.floats(min_value=0, max_value=1e6),
    backoff=st.floats(min_value=1, max_value=100),
    max_interval=st.just(1e6) | st.floats(min_value=1e6, max_value=1e9),
    jitter=st.floats(min_value=0, max_value=1),
)
ATTEMPTS = st.integers(min_value=1, max_value=3000) | st.integers(min_value=1)
RANDS = st.floats(min_value=0, max_value=1, exclude_max=True)


def expected_base(policy: RetryPolicy, attempt: int) -> float:
    if policy.initial_interval == 0 or policy.backoff == 1:
        return policy.initial_interval
    try:
        growth = policy.backoff ** (attempt - 1)
    except OverflowError:
        growth = math.inf
    return min(policy.initial_interval * growth, policy.max_interval)


def expected_value(key, value):
    if key in ("initial_interval", "max_interval"):
        return parse_duration(value)
    if key == "non_retryable":
        return tuple(dict.fromkeys([value] if isinstance(value, str) else value))
    return value


@given(LAYERS)
def test_layering_later_non_null_values_win(layers):
    policy = RetryPolicy.from_options(*layers)
    for key in RETRY_KEYS:
        given_values = [
            layer[key] for layer in layers if layer and layer.get(key) is not None
        ]
        if given_values:
            assert getattr(policy, key) == expected_value(key, given_values[-1])
        elif key == "max_interval":
            assert policy.max_interval == max(300.0, policy.initial_interval)
        else:
            assert getattr(policy, key) == getattr(RetryPolicy(), key)
    assert RetryPolicy.from_options(policy.as_dict()) == policy


@given(POLICIES, ATTEMPTS, ATTEMPTS, RANDS)
def test_delay_is_monotonic_without_jitter(policy, first, second, rand):
    policy = dataclasses.replace(policy, jitter=0.0)
    low, high = sorted((first, second))
    assert policy.delay(low, rand) <= policy.delay(high, rand)


@given(POLICIES, ATTEMPTS, RANDS)
def test_delay_stays_within_the_jitter_band(policy, attempt, rand):
    delay = policy.delay(attempt, rand)
    base = expected_base(policy, attempt)
    assert base * (1 - policy.jitter) <= delay <= base * (1 + policy.jitter)
    assert delay <= policy.max_interval * (1 + policy.jitter)
    assert delay >= 0


@given(POLICIES, ATTEMPTS, RANDS)
def test_delay_is_finite_and_non_negative(policy, attempt, rand):
    delay = policy.delay(attempt, rand)
    assert math.isfinite(delay)
    assert delay >= 0


@given(POLICIES, st.integers(min_value=1, max_value=50))
def test_attempts_are_bounded_by_max_attempts(policy, attempt):
    error = {"sqlstate": "XX000", "type": "RuntimeError"}
    assert policy.retryable(error, attempt) is (attempt < policy.max_attempts)
