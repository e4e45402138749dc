"""The format of a workflow definition: step kinds, their keys, and positions.

A definition is ``{"steps": [step, ...]}``. Each step is an object with exactly one
*kind* key and the keys allowed for that kind (``null`` for an optional key means
"not given"):

=================  ==========================================================
kind               keys (required in capitals)
=================  ==========================================================
sql                NAME, SQL, params, retry, timeout
sleep              SLEEP (seconds or interval text, >= 0), name
wait_for_signal    NAME, WAIT_FOR_SIGNAL (signal name), timeout
if                 IF (SQL), params, THEN (list), else (list), name
workflow           NAME, WORKFLOW (child workflow), input (JSON), timeout
parallel, race     PARALLEL / RACE (>= 2 non-empty lists of steps), name
repeat             REPEAT (non-empty list), UNTIL (SQL), params (of until),
                   MAX_ITERATIONS (whole number 1-100000), name
=================  ==========================================================

Names are non-empty text without ``.``, ``[`` or ``]``, unique in the whole
definition. Timeouts are > 0; ``retry`` takes the options of :mod:`durable.retry`.

A step's *position* is its index in ``steps``, followed for nested steps by
``.then.<i>``, ``.else.<i>``, ``.repeat.<i>``, ``.parallel.<branch>.<i>`` or
``.race.<branch>.<i>`` (``2.parallel.0.1``). Messages write positions as
``steps[2].parallel[0][1]``. The child run of a parallel or race branch gets the
branch's position in its input under :data:`BRANCH_KEY`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Union

from ..durations import _show
from ..errors import DurableError

__all__ = [
    "ALLOWED",
    "BRANCHES",
    "BRANCH_KEY",
    "INVALID",
    "KINDS",
    "LISTS",
    "Position",
    "branch",
    "dotted",
    "human",
    "kind_of",
    "nested_lists",
    "parse_position",
]

INVALID = "22023"
BRANCH_KEY = "__branch__"

KINDS = (
    "sql",
    "parallel",
    "race",
    "sleep",
    "wait_for_signal",
    "if",
    "workflow",
    "repeat",
)
ALLOWED = {
    "sql": ("name", "sql", "params", "retry", "timeout"),
    "parallel": ("name", "parallel"),
    "race": ("name", "race"),
    "sleep": ("name", "sleep"),
    "wait_for_signal": ("name", "wait_for_signal", "timeout"),
    "if": ("name", "if", "params", "then", "else"),
    "workflow": ("name", "workflow", "input", "timeout"),
    "repeat": ("name", "repeat", "until", "params", "max_iterations"),
}
LISTS = ("then", "else", "repeat")
BRANCHES = ("parallel", "race")

Position = tuple[Union[int, str], ...]

_DIGITS = re.compile(r"[0-9]+")


def kind_of(step: dict) -> str:
    """The kind of a (canonical) step: its one key that is in KINDS."""
    return next(kind for kind in KINDS if kind in step)


def nested_lists(step: dict) -> Iterator[tuple[tuple[str | int, ...], list]]:
    """The step lists nested in a (canonical) step, with their position parts."""
    for key in LISTS:
        if isinstance(step.get(key), list):
            yield (key,), step[key]
    for key in BRANCHES:
        if isinstance(step.get(key), list):
            for j, items in enumerate(step[key]):
                yield (key, j), items


def human(pos: Position) -> str:
    """``(2, "parallel", 0, 1)`` -> ``steps[2].parallel[0][1]``."""
    return "steps" + "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in pos
    )


def dotted(pos: Position) -> str:
    """``(2, "parallel", 0, 1)`` -> ``2.parallel.0.1``."""
    return ".".join(str(part) for part in pos)


def parse_position(branch_path: str) -> Position:
    """``"2.parallel.0"`` -> ``(2, "parallel", 0)``."""
    return tuple(
        int(part) if _DIGITS.fullmatch(part) else part
        for part in branch_path.split(".")
    )


def branch(definition: dict, branch_path: str, *, workflow: str = "") -> list:
    """The steps of the nested list at ``branch_path`` (``"2.parallel.0"``)."""

    def missing(reason: str) -> DurableError:
        return DurableError(
            f"workflow {workflow or '(unnamed)'}: no branch {_show(branch_path)} in"
            f" the definition: {reason}",
            sqlstate=INVALID,
            hint="Branch paths such as 2.parallel.0 are written by execute() for the"
            " child runs of parallel and race steps; the run must use the definition"
            " it started with.",
        )

    if not isinstance(branch_path, str) or not branch_path:
        raise missing("expected a position path as text")
    parts = list(parse_position(branch_path))
    items = definition.get("steps") if isinstance(definition, dict) else None
    i = 0
    while i < len(parts):
        index = parts[i]
        if not isinstance(index, int) or not isinstance(items, list):
            raise missing(f"expected a step index at part {i + 1}")
        if index >= len(items) or not isinstance(items[index], dict):
            raise missing(f"there is no step {index} at part {i + 1}")
        step = items[index]
        if i + 1 == len(parts):
            raise missing("it names a step, not a list of steps")
        key = parts[i + 1]
        if key in LISTS:
            items, i = step.get(key), i + 2
        elif key in BRANCHES and i + 2 < len(parts) and isinstance(parts[i + 2], int):
            branches = step.get(key)
            j = parts[i + 2]
            if not isinstance(branches, list) or j >= len(branches):
                raise missing(f"there is no {key} branch {j}")
            items, i = branches[j], i + 3
        else:
            raise missing(f"unexpected {_show(key)} at part {i + 2}")
    if not isinstance(items, list):
        raise missing("it does not name a list of steps")
    return items
