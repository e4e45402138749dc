"""Validation: check a workflow definition and write its canonical form.

Every error names the workflow and the step (by name, or by position), and carries a
hint. Each step kind is checked by its own method of :class:`_Validator`, listed by
kind in :data:`_CHECK_STEP`.

The canonical form keeps the keys in a fixed order, always has ``params`` on sql, if
and repeat steps and ``else`` on if steps, wraps bare literals, and keeps durations,
retry options (less their nulls) and child inputs as written.
"""

from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

from ..durations import _show, parse_duration
from ..errors import DurableError
from ..retry import RetryPolicy
from ..sqltext import split_statements
from .paths import PATH_HINT, PathError, is_literal, looks_like_path, parse_path
from .schema import ALLOWED, BRANCHES, INVALID, KINDS, LISTS, Position, human

__all__ = ["MAX_ITERATIONS", "validate"]

SYNTAX_ERROR = "42601"
MAX_ITERATIONS = 100_000
MAX_DEPTH = 32
MAX_JSON_DEPTH = 100

NAMED = ("sql", "wait_for_signal", "workflow")
NULL_MEANS_ABSENT = ("name", "params", "retry", "timeout", "else")

STEP_HINT = (
    "Each step is an object with one kind key (sql, parallel, race, sleep,"
    ' wait_for_signal, if, workflow or repeat), e.g. {"name": "load", "sql":'
    ' "SELECT 1"}.'
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
        """An error that names the workflow and ``where`` (a step, or nothing)."""
        prefix = f"workflow {self.workflow}: " + (f"{where}: " if where else "")
        return DurableError(prefix + problem, sqlstate=sqlstate, hint=hint)

    def run(self) -> dict:
        """Validate the whole definition; its canonical form."""
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
                human(prefix),
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
        """Validate one step: its canonical form, and the names it defines (its own
        and its nested steps')."""
        where = human(pos)
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
            self.names[name] = human(pos)
        out: dict[str, Any] = {} if name is None else {"name": name}
        site = _Site(item, pos, where, visible, depth, out)
        defined = _CHECK_STEP[kind](self, site)
        if name is not None:
            defined.add(name)
        return out, defined

    def check_name(self, name: Any, where: str) -> None:
        """Reject a step name that is not text or that a path could not name."""
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
        """The value of a required key."""
        if key not in item:
            raise self.error(
                where,
                f'a {kind} step needs "{key}"',
                f"The keys of a {kind} step are {', '.join(ALLOWED[kind])}.",
            )
        return item[key]

    # -------------------------------------------------------------- values

    def sql_text(self, value: Any, where: str, key: str, label: str) -> str:
        """One SQL statement as text, kept for the SQL checker under ``label``."""
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
        """The canonical parameters: paths kept, literals wrapped."""
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
            elif is_literal(param):
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
        """Reject a literal that is not JSON."""
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
        """Reject a path that does not parse or names a step not run before."""
        try:
            name, _ = parse_path(path)
        except PathError as problem:
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
        """Check a child's input: JSON, with valid paths where text looks like one."""
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
            if isinstance(current, str) and looks_like_path(current):
                self.path(current, where, label, visible, own)
            elif isinstance(current, list):
                stack.extend(current)
            elif isinstance(current, dict) and not is_literal(current):
                stack.extend(current.values())

    def duration(self, value: Any, where: str, key: str, positive: bool) -> Any:
        """A duration (seconds or interval text) as written, once it parses."""
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
        """Retry options (less their nulls), once they make a policy."""
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
        """Non-empty text."""
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
        """An sql step: one statement, its params, retry and timeout."""
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
        """A sleep step: a duration of zero or more."""
        site.out["sleep"] = self.duration(
            site.item["sleep"], site.where, "sleep", False
        )
        return set()

    def step_wait_for_signal(self, site: _Site) -> set[str]:
        """A wait_for_signal step: the signal's name and a timeout."""
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
        """A workflow step: the child workflow, its input and a timeout."""
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
        """An if step: its condition, params, then and else lists."""
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
        """A parallel step: its branches."""
        return self.branches(site, "parallel")

    def step_race(self, site: _Site) -> set[str]:
        """A race step: its branches."""
        return self.branches(site, "race")

    def branches(self, site: _Site, kind: str) -> set[str]:
        """The branches of a parallel or race step: two or more non-empty lists."""
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
        """A repeat step: its body, until condition and params, max_iterations."""
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


# The method that checks each kind of step: it writes the step's canonical keys into
# ``site.out`` and returns the names its nested steps define.
_CHECK_STEP: dict[str, Callable[[_Validator, _Site], set[str]]] = {
    "sql": _Validator.step_sql,
    "parallel": _Validator.step_parallel,
    "race": _Validator.step_race,
    "sleep": _Validator.step_sleep,
    "wait_for_signal": _Validator.step_wait_for_signal,
    "if": _Validator.step_if,
    "workflow": _Validator.step_workflow,
    "repeat": _Validator.step_repeat,
}


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
