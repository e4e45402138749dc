"""SQL-declared workflows: validate, interpret and draw workflow definitions.

``durable.define_workflow(name, definition, retry, timeout)`` registers a workflow
whose body is data instead of code. This module holds everything about that data
that needs no database:

* :func:`validate` checks a definition when it is defined and returns its canonical
  form; every error names the workflow and the step, and carries a hint;
* :func:`execute` interprets a canonical definition with the workflow context ``wf``
  deterministically, so that it replays like any workflow body;
* :func:`resolve` evaluates a path against a context document;
* :func:`branch` finds the steps of one branch from its position path;
* :func:`graph` draws a definition as a Mermaid flowchart.

The format
----------
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

Parameters (``params``) are paths or literals: a path is text, a literal is written
``{"value": <any JSON>}``; a bare number, boolean or null is a literal too (the
canonical form wraps it). Other text must be a path. In a child's ``input``, text
that starts like a path (``input``, ``input.``, ``input[`` or ``steps.``) is a path
and resolved when the child starts, ``{"value": ...}`` is taken literally (and
unwrapped), and everything else is kept as it is.

Paths read the context document ``{"input": <run input>, "steps": {name: output}}``::

    path     := ("input" | "steps." NAME) accessor*
    accessor := "." FIELD | "[" INDEX "]" | "[*]" | '["' FIELD '"]'

``[INDEX]`` counts from 0 (negative from the end); ``[*]`` maps the rest of the path
over a list; ``.length`` is the length of a list or the number of keys of an object
(write ``["length"]`` for a field named length). A missing field or index, or
``[*]`` over something that is not a list, gives null. A path may name only a step
that runs before the step using it: an earlier step of the same list, or one inside
an earlier parallel, race, if or repeat (a step of the branch of an ``if`` that did
not run reads as null), never the step itself, a later one, or one of a sibling
branch.

The canonical form keeps the keys in a fixed order, always has ``params`` on sql, if
and repeat steps and ``else`` on if steps, wraps bare literals, and keeps durations,
retry options (less their nulls) and child inputs as written.

Execution
---------
:func:`execute` returns the ``steps`` part of the final context: each named step's
output (an SQL step's rows; a signal's payload or null; a child's result; an if's
condition as a boolean; a parallel's list of branch results; a race's
``{"winner": index, "result": ...}``; a repeat's ``{"iterations": n}``; a named
sleep's null). The durable calls it makes, in order, are:

* sql: ``wf.step(name, sql, params, retry=..., timeout=...)``;
* if: ``wf.step(label, sql, params)`` with label the step's name or ``if@<pos>``;
  the condition holds when the first row's only column is truthy (no rows or null
  is false; a row with several columns is an error, because a checkpoint stored as
  jsonb does not keep column order);
* repeat: the body, then ``wf.step(label, until, params)`` with label
  ``<name>#<i>`` or ``until@<pos>#<i>`` (iterations from 1), until it holds;
  when ``max_iterations`` iterations pass without it holding, execute raises a
  DurableError (DU000): the bound is a safety net, not a way to end a loop;
* sleep: ``wf.sleep(duration)``; wait_for_signal: ``wf.wait_for_signal(signal,
  timeout=...)``; workflow: ``wf.start_child(workflow, input)`` then
  ``wf.wait(run_id, timeout=...)``;
* parallel / race: ``wf.parallel(calls)`` / ``wf.race(calls)``, one child run of
  the same workflow per branch, with the internal input
  ``{"__branch__": "<pos>", "context": {"input": ..., "steps": {...}}}`` (the
  context holds the run input and the outputs of the steps the branch refers to).
  ``execute`` given such an input runs just that branch and returns only the
  outputs of the branch's own steps, which the parent merges into its context (a
  race merges only the winner's). Run inputs with a ``__branch__`` key are
  therefore reserved.

``<pos>`` is a step's position: its index in ``steps``, followed for nested steps by
``.then.<i>``, ``.else.<i>``, ``.repeat.<i>``, ``.parallel.<branch>.<i>`` or
``.race.<branch>.<i>`` (``2.parallel.0.1``). Messages write positions as
``steps[2].parallel[0][1]``.

This module uses only the standard library: it runs inside the database server.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any, Callable, Optional, Union

from .durations import _show, format_duration, parse_duration
from .errors import WORKFLOW_ERROR, DurableError
from .retry import RetryPolicy
from .sqltext import split_statements

__all__ = [
    "BRANCH_KEY",
    "KINDS",
    "MAX_ITERATIONS",
    "branch",
    "execute",
    "graph",
    "mermaid_label",
    "resolve",
    "validate",
]

INVALID = "22023"
SYNTAX_ERROR = "42601"
BRANCH_KEY = "__branch__"
MAX_ITERATIONS = 100_000
MAX_DEPTH = 32
MAX_JSON_DEPTH = 100

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
NAMED = ("sql", "wait_for_signal", "workflow")
NULL_MEANS_ABSENT = ("name", "params", "retry", "timeout", "else")
LISTS = ("then", "else", "repeat")
BRANCHES = ("parallel", "race")

Position = tuple[Union[int, str], ...]
Accessor = tuple[Any, ...]

STEP_HINT = (
    "Each step is an object with one kind key (sql, parallel, race, sleep,"
    ' wait_for_signal, if, workflow or repeat), e.g. {"name": "load", "sql":'
    ' "SELECT 1"}.'
)
PATH_HINT = (
    "Paths look like input, input.a.b, input.items[0], steps.<name>,"
    " steps.<name>.field, steps.<name>[0].id, steps.<name>[*].id or"
    ' steps.<name>.length; wrap literal values as {"value": ...}.'
)
ORDER_HINT = (
    "A path may name only a step that runs before it: an earlier step of the same"
    " list, or a step inside an earlier parallel, race, if or repeat."
)
NAME_HINT = (
    'Step names are non-empty text without ".", "[" or "]" (they appear in paths'
    " such as steps.<name>[0].id), unique in the whole definition."
)
SQL_HINT = "Give one SQL statement as text; pass values as $1, $2, ... with params."

_DIGITS = re.compile(r"[0-9]+")
_INDEX = re.compile(r"\[(\*|0|-?[1-9][0-9]*)\]")
_DECODER = json.JSONDecoder()
_ALL: Accessor = ("all",)
_LENGTH: Accessor = ("length",)


# ---------------------------------------------------------------------- paths


class _PathError(Exception):
    """Why a text is not a path."""


@lru_cache(maxsize=4096)
def _parse_path(path: str) -> tuple[str | None, tuple[Accessor, ...]]:
    """Split a path into its step name (None for ``input``) and its accessors."""
    if path == "input" or path.startswith(("input.", "input[")):
        name, i = None, len("input")
    elif path.startswith("steps."):
        start = i = len("steps.")
        while i < len(path) and path[i] not in ".[]":
            i += 1
        name = path[start:i]
        if not name:
            raise _PathError("a step name must follow steps.")
    else:
        raise _PathError("a path starts with input or steps.<name>")
    accessors: list[Accessor] = []
    while i < len(path):
        if path[i] == ".":
            start = i = i + 1
            while i < len(path) and path[i] not in ".[]":
                i += 1
            field = path[start:i]
            if not field:
                raise _PathError(f"a field name must follow the dot at character {i}")
            accessors.append(_LENGTH if field == "length" else ("key", field))
        elif path[i] == "[":
            match = _INDEX.match(path, i)
            if match:
                text = match.group(1)
                accessors.append(_ALL if text == "*" else ("index", int(text)))
                i = match.end()
            elif path.startswith('["', i):
                try:
                    field, end = _DECODER.raw_decode(path, i + 1)
                except ValueError:
                    raise _PathError(
                        f"bad quoted field name at character {i + 2}"
                    ) from None
                if not path.startswith("]", end):
                    raise _PathError(f'expected "]" at character {end + 1}')
                accessors.append(("key", field))
                i = end + 1
            else:
                raise _PathError(
                    f'expected [<index>], [*] or ["<field>"] at character {i + 1}'
                )
        else:
            raise _PathError(f"unexpected {path[i]!r} at character {i + 1}")
    return name, tuple(accessors)


def _walk(value: Any, accessors: tuple[Accessor, ...], start: int = 0) -> Any:
    for i in range(start, len(accessors)):
        accessor = accessors[i]
        if accessor == _ALL:
            if not isinstance(value, list):
                return None
            return [_walk(item, accessors, i + 1) for item in value]
        if accessor == _LENGTH:
            value = len(value) if isinstance(value, (list, dict)) else None
        elif accessor[0] == "key":
            value = value.get(accessor[1]) if isinstance(value, dict) else None
        else:
            index = accessor[1]
            if isinstance(value, list) and -len(value) <= index < len(value):
                value = value[index]
            else:
                value = None
    return value


def resolve(path: str, context: dict) -> Any:
    """Evaluate a path against ``{"input": ..., "steps": {...}}``; missing is None."""
    if not isinstance(path, str):
        raise DurableError(
            f"invalid path {_show(path)}: expected text, not {type(path).__name__}",
            sqlstate=INVALID,
            hint=PATH_HINT,
        )
    try:
        name, accessors = _parse_path(path)
    except _PathError as problem:
        raise DurableError(
            f"invalid path {_show(path)}: {problem}", sqlstate=INVALID, hint=PATH_HINT
        ) from None
    if not isinstance(context, dict):
        return None
    if name is None:
        root = context.get("input")
    else:
        steps = context.get("steps")
        root = steps.get(name) if isinstance(steps, dict) else None
    return _walk(root, accessors)


def _looks_like_path(text: str) -> bool:
    """Whether text in a child's input is a path (resolved) rather than text."""
    return text == "input" or text.startswith(("input.", "input[", "steps."))


def _is_literal(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "value" in value


# ------------------------------------------------------------------ positions


def _human(pos: Position) -> str:
    """``(2, "parallel", 0, 1)`` -> ``steps[2].parallel[0][1]``."""
    return "steps" + "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in pos
    )


def _dotted(pos: Position) -> str:
    """``(2, "parallel", 0, 1)`` -> ``2.parallel.0.1``."""
    return ".".join(str(part) for part in pos)


def _kind(step: dict) -> str:
    return next(kind for kind in KINDS if kind in step)


def _children(step: dict) -> Iterator[tuple[tuple[str | int, ...], list]]:
    """The step lists nested in a (canonical) step, with their position parts."""
    for key in LISTS:
        if isinstance(step.get(key), list):
            yield (key,), step[key]
    for key in BRANCHES:
        if isinstance(step.get(key), list):
            for j, items in enumerate(step[key]):
                yield (key, j), items


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
    parts = list(_position(branch_path))
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


def _position(branch_path: str) -> Position:
    """``"2.parallel.0"`` -> ``(2, "parallel", 0)``."""
    return tuple(
        int(part) if _DIGITS.fullmatch(part) else part
        for part in branch_path.split(".")
    )


# ----------------------------------------------------------------- validation


def _json_problem(value: Any, depth: int = 0) -> str | None:
    """Why a value is not JSON (None when it is)."""
    if depth > MAX_JSON_DEPTH:
        return f"it is nested more than {MAX_JSON_DEPTH} levels deep"
    if value is None or isinstance(value, (bool, str, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r} is not a JSON number"
    if isinstance(value, list):
        items = value
    elif isinstance(value, dict):
        bad = [key for key in value if not isinstance(key, str)]
        if bad:
            return f"object key {bad[0]!r} is not text"
        items = list(value.values())
    else:
        return f"a {type(value).__name__} is not JSON"
    for item in items:
        problem = _json_problem(item, depth + 1)
        if problem:
            return problem
    return None


def _all_names(items: Any) -> set[str]:
    """Every step name in a (possibly invalid) definition, to tell later from
    unknown steps in messages."""
    names: set[str] = set()
    stack = [items]
    while stack:
        current = stack.pop()
        if not isinstance(current, list):
            continue
        for item in current:
            if not isinstance(item, dict):
                continue
            if isinstance(item.get("name"), str):
                names.add(item["name"])
            stack.extend(item.get(key) for key in LISTS)
            for key in BRANCHES:
                if isinstance(item.get(key), list):
                    stack.extend(item[key])
    return names


@dataclass
class _Site:
    """The step being validated: its object, position, label and canonical form."""

    item: dict
    pos: Position
    where: str
    visible: set[str]
    depth: int
    out: dict


class _Validator:
    """One validation: the names seen so far and the SQL texts to check."""

    def __init__(
        self,
        workflow: str,
        definition: Any,
        check_sql: Callable[[str, str], None] | None,
    ):
        self.workflow = workflow
        self.definition = definition
        self.check_sql = check_sql
        self.names: dict[str, str] = {}
        self.sql: list[tuple[str, str]] = []

    def error(
        self, where: str, problem: str, hint: str, sqlstate: str = INVALID
    ) -> DurableError:
        prefix = f"workflow {self.workflow}: " + (f"{where}: " if where else "")
        return DurableError(prefix + problem, sqlstate=sqlstate, hint=hint)

    def run(self) -> dict:
        definition = self.definition
        if not isinstance(definition, dict):
            raise self.error(
                "",
                f"the definition must be an object, not {type(definition).__name__}",
                'Write {"steps": [...]}.',
            )
        extra = [key for key in definition if key != "steps"]
        if extra:
            raise self.error(
                "",
                f"unknown top-level key {_show(extra[0])}",
                'A definition has exactly one key, "steps": {"steps": [...]}.',
            )
        steps = definition.get("steps")
        if not isinstance(steps, list) or not steps:
            raise self.error(
                "",
                '"steps" must be a non-empty list of steps',
                'Write {"steps": [{"name": "first", "sql": "SELECT 1"}]}.',
            )
        canonical, _ = self.sequence(steps, (), set(), 0)
        for label, sql in self.sql:
            self.check(label, sql)
        return {"steps": canonical}

    def check(self, label: str, sql: str) -> None:
        """Run the SQL checker; make its error name the workflow and the step."""
        if self.check_sql is None:
            return
        try:
            self.check_sql(label, sql)
        except DurableError as error:
            message = str(error)
            if label not in message:
                message = f"{label}: {message}"
            if f"workflow {self.workflow}" not in message:
                message = f"workflow {self.workflow}: {message}"
            raise DurableError(
                message, sqlstate=error.sqlstate, hint=error.hint or SQL_HINT
            ) from None

    def sequence(
        self, items: list, prefix: Position, visible: set[str], depth: int
    ) -> tuple[list, set[str]]:
        """Validate a list of steps run in order; the names it defines."""
        if depth > MAX_DEPTH:
            raise self.error(
                _human(prefix),
                f"steps are nested more than {MAX_DEPTH} levels deep",
                "Split the workflow into child workflows.",
            )
        local = set(visible)
        canonical = []
        for i, item in enumerate(items):
            step, defined = self.step(item, (*prefix, i), local, depth)
            canonical.append(step)
            local |= defined
        return canonical, local - visible

    def step(
        self, item: Any, pos: Position, visible: set[str], depth: int
    ) -> tuple[dict, set[str]]:
        where = _human(pos)
        if not isinstance(item, dict):
            raise self.error(
                where, f"a step must be an object, not {type(item).__name__}", STEP_HINT
            )
        kinds = [kind for kind in KINDS if kind in item]
        if not kinds:
            found = ", ".join(str(key) for key in item) or "no keys"
            raise self.error(
                where, f"the step has no kind key (it has {found})", STEP_HINT
            )
        if len(kinds) > 1:
            raise self.error(
                where,
                f'the step has both "{kinds[0]}" and "{kinds[1]}"; a step has one kind',
                STEP_HINT,
            )
        kind = kinds[0]
        item = {
            key: value
            for key, value in item.items()
            if value is not None or key not in NULL_MEANS_ABSENT
        }
        name = item.get("name")
        if "name" in item:
            self.check_name(name, where)
            where = f"step {_show(name)}"
        unknown = [key for key in item if key not in ALLOWED[kind]]
        if unknown:
            allowed = ALLOWED[kind]
            close = difflib.get_close_matches(str(unknown[0]), allowed, n=1)
            raise self.error(
                where,
                f"unknown key {_show(unknown[0])} in a {kind} step (allowed keys:"
                f" {', '.join(allowed)})",
                (f"Did you mean {close[0]}? " if close else "")
                + "Remove the key, or move it to a step of the kind it belongs to.",
            )
        if kind in NAMED and name is None:
            raise self.error(
                where,
                f"a {kind} step needs a name",
                f'Add "name": its output is read as steps.<name>. {NAME_HINT}',
            )
        if name is not None:
            if name in self.names:
                raise self.error(
                    where,
                    f"duplicate step name {_show(name)}, also used by"
                    f" {self.names[name]}",
                    NAME_HINT,
                )
            self.names[name] = _human(pos)
        out: dict[str, Any] = {} if name is None else {"name": name}
        site = _Site(item, pos, where, visible, depth, out)
        defined = getattr(self, f"step_{kind}")(site)
        if name is not None:
            defined.add(name)
        return out, defined

    def check_name(self, name: Any, where: str) -> None:
        if not isinstance(name, str) or not name:
            raise self.error(
                where,
                f"a step name must be non-empty text, not {_show(name)}",
                NAME_HINT,
            )
        if any(char in name for char in ".[]"):
            raise self.error(
                where,
                f'step name {_show(name)} must not contain ".", "[" or "]"',
                NAME_HINT,
            )

    def require(self, item: dict, key: str, kind: str, where: str) -> Any:
        if key not in item:
            raise self.error(
                where,
                f'a {kind} step needs "{key}"',
                f"The keys of a {kind} step are {', '.join(ALLOWED[kind])}.",
            )
        return item[key]

    # -------------------------------------------------------------- values

    def sql_text(self, value: Any, where: str, key: str, label: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(
                where, f'"{key}" must be SQL text, not {_show(value)}', SQL_HINT
            )
        statements = split_statements(value)
        if not statements:
            raise self.error(
                where,
                f'"{key}" holds no SQL statement',
                SQL_HINT,
                SYNTAX_ERROR,
            )
        if len(statements) > 1:
            raise self.error(
                where,
                f'"{key}" holds {len(statements)} SQL statements; a step runs one',
                "Split the statements into steps of their own.",
                SYNTAX_ERROR,
            )
        self.sql.append((label, value))
        return value

    def params(
        self, value: Any, where: str, visible: set[str], own: str | None
    ) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(
                where,
                f'"params" must be a list, not {type(value).__name__}',
                'Write "params": ["input.id", {"value": 10}] for $1, $2, ...',
            )
        out: list = []
        for i, param in enumerate(value):
            label = f"params[{i}]"
            if isinstance(param, str):
                self.path(param, where, label, visible, own)
                out.append(param)
            elif _is_literal(param):
                self.literal(param["value"], where, label)
                out.append({"value": copy.deepcopy(param["value"])})
            elif param is None or isinstance(param, (bool, int, float)):
                self.literal(param, where, label)
                out.append({"value": param})
            else:
                raise self.error(
                    where,
                    f"{label} {_show(param)} is neither a path nor a literal",
                    'Wrap literal values as {"value": ...}. ' + PATH_HINT,
                )
        return out

    def literal(self, value: Any, where: str, label: str) -> None:
        problem = _json_problem(value)
        if problem:
            raise self.error(
                where,
                f"{label} is not a JSON value: {problem}",
                "Use JSON values only.",
            )

    def path(
        self, path: str, where: str, label: str, visible: set[str], own: str | None
    ) -> None:
        try:
            name, _ = _parse_path(path)
        except _PathError as problem:
            raise self.error(
                where,
                f"{label} {_show(path)} is not a valid path: {problem}",
                PATH_HINT,
            ) from None
        if name is None or name in visible:
            return
        if name == own:
            raise self.error(
                where, f"{label} {_show(path)} refers to the step itself", ORDER_HINT
            )
        if name in self.names or name in _all_names(self.definition.get("steps")):
            raise self.error(
                where,
                f"{label} {_show(path)} refers to step {_show(name)}, which does not"
                " run before this step",
                ORDER_HINT,
            )
        close = difflib.get_close_matches(name, sorted(visible), n=1)
        raise self.error(
            where,
            f"{label} {_show(path)} refers to unknown step {_show(name)}",
            (f"Did you mean {close[0]}? " if close else "") + ORDER_HINT,
        )

    def child_input(
        self, value: Any, where: str, label: str, visible: set[str], own: str
    ) -> None:
        problem = _json_problem(value)
        if problem:
            raise self.error(
                where,
                f"{label} is not a JSON value: {problem}",
                "Use JSON values only.",
            )
        stack = [value]
        while stack:
            current = stack.pop()
            if isinstance(current, str) and _looks_like_path(current):
                self.path(current, where, label, visible, own)
            elif isinstance(current, list):
                stack.extend(current)
            elif isinstance(current, dict) and not _is_literal(current):
                stack.extend(current.values())

    def duration(self, value: Any, where: str, key: str, positive: bool) -> Any:
        try:
            seconds = parse_duration(value, key)
        except DurableError as error:
            raise self.error(where, str(error), error.hint) from None
        if positive and seconds <= 0:
            raise self.error(
                where,
                f"{key} {_show(value)} must be longer than zero",
                "Give a positive number of seconds or an interval such as"
                " '30 seconds'.",
            )
        return copy.deepcopy(value)

    def retry(self, value: Any, where: str) -> dict:
        if not isinstance(value, dict):
            raise self.error(
                where,
                f'"retry" must be an object, not {type(value).__name__}',
                'Write "retry": {"max_attempts": 5}.',
            )
        try:
            RetryPolicy.from_options(value)
        except DurableError as error:
            raise self.error(where, str(error), error.hint) from None
        return {key: copy.deepcopy(v) for key, v in value.items() if v is not None}

    def text(self, value: Any, where: str, key: str, hint: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(
                where, f'"{key}" must be non-empty text, not {_show(value)}', hint
            )
        return value

    def step_list(
        self, site: _Site, value: Any, part: tuple, what: str, allow_empty: bool
    ) -> tuple[list, set[str]]:
        """Validate a nested list of steps (then, else, repeat or a branch)."""
        if not isinstance(value, list) or (not value and not allow_empty):
            kind = "a list of steps" if allow_empty else "a non-empty list of steps"
            raise self.error(
                site.where, f"{what} must be {kind}, not {_show(value)}", STEP_HINT
            )
        return self.sequence(value, (*site.pos, *part), site.visible, site.depth + 1)

    # --------------------------------------------------------------- kinds

    def step_sql(self, site: _Site) -> set[str]:
        item, where, out = site.item, site.where, site.out
        name = out["name"]
        out["sql"] = self.sql_text(item["sql"], where, "sql", where)
        out["params"] = self.params(item.get("params"), where, site.visible, name)
        if "retry" in item:
            out["retry"] = self.retry(item["retry"], where)
        if "timeout" in item:
            out["timeout"] = self.duration(item["timeout"], where, "timeout", True)
        return set()

    def step_sleep(self, site: _Site) -> set[str]:
        site.out["sleep"] = self.duration(
            site.item["sleep"], site.where, "sleep", False
        )
        return set()

    def step_wait_for_signal(self, site: _Site) -> set[str]:
        item, where, out = site.item, site.where, site.out
        out["wait_for_signal"] = self.text(
            item["wait_for_signal"],
            where,
            "wait_for_signal",
            'Name the signal: "wait_for_signal": "approve".',
        )
        if "timeout" in item:
            out["timeout"] = self.duration(item["timeout"], where, "timeout", True)
        return set()

    def step_workflow(self, site: _Site) -> set[str]:
        item, where, out = site.item, site.where, site.out
        out["workflow"] = self.text(
            item["workflow"],
            where,
            "workflow",
            'Name the child workflow: "workflow": "app.other".',
        )
        if "input" in item:
            self.child_input(item["input"], where, "input", site.visible, out["name"])
            out["input"] = copy.deepcopy(item["input"])
        if "timeout" in item:
            out["timeout"] = self.duration(item["timeout"], where, "timeout", True)
        return set()

    def step_if(self, site: _Site) -> set[str]:
        item, where, out = site.item, site.where, site.out
        name = out.get("name")
        out["if"] = self.sql_text(item["if"], where, "if", f"{where} (if)")
        out["params"] = self.params(item.get("params"), where, site.visible, name)
        then = self.require(item, "then", "if", where)
        out["then"], defined = self.step_list(site, then, ("then",), '"then"', True)
        out["else"], other = self.step_list(
            site, item.get("else", []), ("else",), '"else"', True
        )
        return defined | other

    def step_parallel(self, site: _Site) -> set[str]:
        return self.branches(site, "parallel")

    def step_race(self, site: _Site) -> set[str]:
        return self.branches(site, "race")

    def branches(self, site: _Site, kind: str) -> set[str]:
        value = site.item[kind]
        if not isinstance(value, list) or len(value) < 2:
            raise self.error(
                site.where,
                f'"{kind}" must be a list of at least 2 branches, not {_show(value)}',
                f'Write "{kind}": [[steps of branch 1], [steps of branch 2]].',
            )
        defined: set[str] = set()
        site.out[kind] = []
        for j, steps in enumerate(value):
            canonical, names = self.step_list(
                site, steps, (kind, j), f"{kind}[{j}]", False
            )
            site.out[kind].append(canonical)
            defined |= names
        return defined

    def step_repeat(self, site: _Site) -> set[str]:
        item, where, out = site.item, site.where, site.out
        name = out.get("name")
        out["repeat"], defined = self.step_list(
            site, item["repeat"], ("repeat",), '"repeat"', False
        )
        until = self.require(item, "until", "repeat", where)
        out["until"] = self.sql_text(until, where, "until", f"{where} (until)")
        visible = site.visible | defined
        out["params"] = self.params(item.get("params"), where, visible, name)
        bound = self.require(item, "max_iterations", "repeat", where)
        if (isinstance(bound, float) and bound.is_integer()) or (
            isinstance(bound, Decimal)
            and bound.is_finite()
            and bound == bound.to_integral_value()
        ):
            bound = int(bound)
        if (
            isinstance(bound, bool)
            or not isinstance(bound, int)
            or not 1 <= bound <= MAX_ITERATIONS
        ):
            raise self.error(
                where,
                f'"max_iterations" must be a whole number from 1 to {MAX_ITERATIONS},'
                f" not {_show(item['max_iterations'])}",
                "Every loop needs a bound: the most iterations it may run.",
            )
        out["max_iterations"] = bound
        return defined


def validate(
    workflow: str,
    definition: Any,
    check_sql: Callable[[str, str], None] | None = None,
) -> dict:
    """Check a workflow definition; return its canonical form (a new dict).

    ``check_sql(label, sql)`` is called for every SQL text (step, if, until) after
    the rest of the definition passed, and may raise DurableError (42601).
    """
    return _Validator(workflow, definition, check_sql).run()


# ------------------------------------------------------------------ execution


def _param(value: Any, context: dict) -> Any:
    if isinstance(value, str):
        return resolve(value, context)
    if _is_literal(value):
        return value["value"]
    return value


def _materialise(value: Any, context: dict) -> Any:
    """A child's input with its paths resolved and its literals unwrapped."""
    if isinstance(value, str):
        return resolve(value, context) if _looks_like_path(value) else value
    if isinstance(value, list):
        return [_materialise(item, context) for item in value]
    if isinstance(value, dict):
        if _is_literal(value):
            return value["value"]
        return {key: _materialise(item, context) for key, item in value.items()}
    return value


def _references(items: list) -> tuple[set[str], bool]:
    """The step names a list of steps refers to, and whether it reads the input."""
    names: set[str] = set()
    reads_input = False
    stack: list[Any] = []
    pending = [items]
    while pending:
        for step in pending.pop():
            stack.extend(p for p in step.get("params", ()) if isinstance(p, str))
            if "workflow" in step:
                stack.append(step.get("input"))
            pending.extend(steps for _, steps in _children(step))
    while stack:
        current = stack.pop()
        if isinstance(current, str) and _looks_like_path(current):
            name, _ = _parse_path(current)
            if name is None:
                reads_input = True
            else:
                names.add(name)
        elif isinstance(current, list):
            stack.extend(current)
        elif isinstance(current, dict) and not _is_literal(current):
            stack.extend(current.values())
    return names, reads_input


class _Interpreter:
    """One execution of a definition (or of one branch) with ``wf``."""

    def __init__(self, wf: Any, workflow: str, context: dict):
        self.wf = wf
        self.workflow = workflow
        self.context = context
        self.steps: dict = context["steps"]

    def sequence(self, items: list, prefix: Position) -> None:
        for i, step in enumerate(items):
            pos = (*prefix, i)
            getattr(self, f"run_{_kind(step)}")(step, pos)

    def params(self, step: dict) -> list:
        return [_param(value, self.context) for value in step.get("params", ())]

    def holds(self, rows: Any, what: str) -> bool:
        """Truthiness of a condition's result: the first row's only column."""
        if not isinstance(rows, list) or not rows:
            return False
        row = rows[0]
        if isinstance(row, dict):
            if len(row) != 1:
                raise DurableError(
                    f"workflow {self.workflow}: {what} returned {len(row)} columns;"
                    " a condition returns one",
                    sqlstate=INVALID,
                    hint="Select a single boolean: SELECT count(*) > 0 FROM ...",
                )
            row = next(iter(row.values()))
        return bool(row)

    def run_sql(self, step: dict, pos: Position) -> None:
        self.steps[step["name"]] = self.wf.step(
            step["name"],
            step["sql"],
            self.params(step),
            retry=step.get("retry"),
            timeout=step.get("timeout"),
        )

    def run_sleep(self, step: dict, pos: Position) -> None:
        self.wf.sleep(step["sleep"])
        if "name" in step:
            self.steps[step["name"]] = None

    def run_wait_for_signal(self, step: dict, pos: Position) -> None:
        payload = self.wf.wait_for_signal(
            step["wait_for_signal"], timeout=step.get("timeout")
        )
        self.steps[step["name"]] = payload

    def run_workflow(self, step: dict, pos: Position) -> None:
        child_input = _materialise(step.get("input"), self.context)
        run_id = self.wf.start_child(step["workflow"], child_input)
        self.steps[step["name"]] = self.wf.wait(run_id, timeout=step.get("timeout"))

    def run_if(self, step: dict, pos: Position) -> None:
        name = step.get("name")
        label = name if name is not None else f"if@{_dotted(pos)}"
        rows = self.wf.step(label, step["if"], self.params(step))
        what = f"step {_show(name)}" if name is not None else _human(pos)
        holds = self.holds(rows, f"the if condition of {what}")
        key = "then" if holds else "else"
        self.sequence(step.get(key, []), (*pos, key))
        if name is not None:
            self.steps[name] = holds

    def run_repeat(self, step: dict, pos: Position) -> None:
        name = step.get("name")
        what = f"step {_show(name)}" if name is not None else _human(pos)
        bound = int(step["max_iterations"])
        for iteration in range(1, bound + 1):
            self.sequence(step["repeat"], (*pos, "repeat"))
            if name is not None:
                label = f"{name}#{iteration}"
            else:
                label = f"until@{_dotted(pos)}#{iteration}"
            rows = self.wf.step(label, step["until"], self.params(step))
            if self.holds(rows, f"the until condition of {what}"):
                if name is not None:
                    self.steps[name] = {"iterations": iteration}
                return
        raise DurableError(
            f"workflow {self.workflow}: repeat {what} reached max_iterations"
            f" ({bound}) before its until condition held",
            sqlstate=WORKFLOW_ERROR,
            hint="Raise max_iterations, or check that the until condition can become"
            " true.",
        )

    def calls(self, step: dict, kind: str, pos: Position) -> list[tuple[str, dict]]:
        """One ``(workflow, input)`` per branch: a child run of this workflow."""
        calls = []
        for j, items in enumerate(step[kind]):
            names, reads_input = _references(items)
            context = {
                "input": self.context.get("input") if reads_input else None,
                "steps": {k: v for k, v in self.steps.items() if k in names},
            }
            path = _dotted((*pos, kind, j))
            calls.append((self.wf.workflow, {BRANCH_KEY: path, "context": context}))
        return calls

    def run_parallel(self, step: dict, pos: Position) -> None:
        results = self.wf.parallel(self.calls(step, "parallel", pos))
        for result in results:
            if isinstance(result, dict):
                self.steps.update(result)
        if "name" in step:
            self.steps[step["name"]] = list(results)

    def run_race(self, step: dict, pos: Position) -> None:
        index, result = self.wf.race(self.calls(step, "race", pos))
        if isinstance(result, dict):
            self.steps.update(result)
        if "name" in step:
            self.steps[step["name"]] = {"winner": index, "result": result}


def execute(wf: Any, definition: dict, run_input: Any) -> dict:
    """Interpret a validated definition with ``wf``; the steps' outputs by name.

    A run input ``{"__branch__": pos, "context": {...}}`` (written by parallel and
    race steps for their child runs) runs just that branch and returns only the
    outputs of its own steps.
    """
    workflow = str(getattr(wf, "workflow", "") or "")
    if isinstance(run_input, dict) and BRANCH_KEY in run_input:
        path = run_input[BRANCH_KEY]
        items = branch(definition, path, workflow=workflow)
        passed = run_input.get("context")
        passed = passed if isinstance(passed, dict) else {}
        inherited = passed.get("steps")
        inherited = dict(inherited) if isinstance(inherited, dict) else {}
        context = {"input": passed.get("input"), "steps": dict(inherited)}
        _Interpreter(wf, workflow, context).sequence(items, _position(path))
        return {
            key: value
            for key, value in context["steps"].items()
            if key not in inherited
        }
    context = {"input": run_input, "steps": {}}
    _Interpreter(wf, workflow, context).sequence(definition["steps"], ())
    return context["steps"]


# ---------------------------------------------------------------------- graph

_ESCAPES = {
    '"': "#quot;",
    "#": "#35;",
    "&": "#amp;",
    "<": "#lt;",
    ">": "#gt;",
    "`": "#96;",
    "|": "#124;",
    "\\": "#92;",
}
_LABEL_CHARS = 48

Exit = tuple[str, Optional[str]]


def mermaid_label(text: str, limit: int = _LABEL_CHARS) -> str:
    """Text for a Mermaid label: one line, shortened, with entity codes."""
    text = " ".join(
        "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in text).split()
    )
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return "".join(_ESCAPES.get(char, char) for char in text)


def _node_id(pos: Position) -> str:
    return "n" + "_".join(str(part) for part in pos)


def _duration_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return format_duration(parse_duration(value))


class _Graph:
    """Mermaid lines for a canonical definition."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def node(self, node: str, shape: str, text: str) -> None:
        opening, closing = shape.split("|")
        self.lines.append(f'    {node}{opening}"{mermaid_label(text)}"{closing}')

    def edges(self, exits: list[Exit], target: str, arrow: str = "-->") -> None:
        for source, label in exits:
            if label is None:
                self.lines.append(f"    {source} {arrow} {target}")
            else:
                text = mermaid_label(label)
                self.lines.append(f'    {source} {arrow}|"{text}"| {target}')

    def sequence(self, items: list, prefix: Position, exits: list[Exit]) -> list[Exit]:
        for i, step in enumerate(items):
            exits = self.step(step, (*prefix, i), exits)
        return exits

    def step(self, step: dict, pos: Position, exits: list[Exit]) -> list[Exit]:
        kind = _kind(step)
        node = _node_id(pos)
        name = step.get("name")
        named = "" if name is None else f"{name}: "
        if kind == "sql":
            self.node(node, "[|]", name)
        elif kind == "sleep":
            self.node(node, "([|])", f"{named}sleep {_duration_text(step['sleep'])}")
        elif kind == "wait_for_signal":
            self.node(node, "[/|/]", f"{named}signal {step['wait_for_signal']}")
        elif kind == "workflow":
            self.node(node, "[[|]]", f"{named}{step['workflow']}")
        elif kind == "if":
            self.node(node, "{|}", f"{named}if {step['if']}")
        elif kind in BRANCHES:
            self.node(node, "{{|}}", f"{named}{kind}")
        else:
            bound = step["max_iterations"]
            self.node(node, "([|])", f"{named}repeat, at most {bound} times")
        self.edges(exits, node)
        if kind == "if":
            outs = []
            for key in ("then", "else"):
                outs += self.sequence(step[key], (*pos, key), [(node, key)])
            return outs
        if kind in BRANCHES:
            ends = [
                self.sequence(items, (*pos, kind, j), [(node, None)])
                for j, items in enumerate(step[kind])
            ]
            join = f"{node}_join"
            self.node(join, "{{|}}", "join" if kind == "parallel" else "first wins")
            for end in ends:
                self.edges(end, join)
            return [(join, None)]
        if kind == "repeat":
            body = self.sequence(step["repeat"], (*pos, "repeat"), [(node, None)])
            until = " ".join(step["until"].split())
            self.edges([(source, f"until {until}") for source, _ in body], node, "-.->")
            return body
        return [(node, None)]


def graph(workflow: str, definition: dict) -> str:
    """A Mermaid ``flowchart TD`` of a definition (validated first)."""
    canonical = validate(workflow, definition)
    drawing = _Graph()
    drawing.node("begin", "([|])", workflow)
    exits = drawing.sequence(canonical["steps"], (), [("begin", None)])
    drawing.node("finish", "([|])", "end")
    drawing.edges(exits, "finish")
    return "\n".join(["flowchart TD", *drawing.lines]) + "\n"
