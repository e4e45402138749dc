"""Interpretation: execute a canonical definition with the workflow context ``wf``.

:func:`execute` returns the ``steps`` part of the final context: each named step's
output (an SQL step's rows; a signal's payload or null; a child's result; an if's
condition as a boolean; a parallel's list of branch results; a race's
``{"winner": index, "result": ...}``; a repeat's ``{"iterations": n}``; a named
sleep's null). Each step kind is run by its own method of :class:`_Interpreter`,
listed by kind in :data:`_RUN_STEP`. The durable calls it makes, in order, are:

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

The calls are the same, in the same order, on every execution of a run, so that it
replays like any workflow body.
"""

from __future__ import annotations

from typing import Any, Callable

from ..durations import _show
from ..errors import WORKFLOW_ERROR, DurableError
from .paths import is_literal, looks_like_path, parse_path, resolve
from .schema import (
    BRANCH_KEY,
    INVALID,
    Position,
    branch,
    dotted,
    human,
    kind_of,
    nested_lists,
    parse_position,
)

__all__ = ["execute"]


def _param(value: Any, context: dict) -> Any:
    """A parameter's value: a path resolved, a literal unwrapped."""
    if isinstance(value, str):
        return resolve(value, context)
    if is_literal(value):
        return value["value"]
    return value


def _materialise(value: Any, context: dict) -> Any:
    """A child's input with its paths resolved and its literals unwrapped."""
    if isinstance(value, str):
        return resolve(value, context) if looks_like_path(value) else value
    if isinstance(value, list):
        return [_materialise(item, context) for item in value]
    if isinstance(value, dict):
        if is_literal(value):
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
            pending.extend(steps for _, steps in nested_lists(step))
    while stack:
        current = stack.pop()
        if isinstance(current, str) and looks_like_path(current):
            name, _ = parse_path(current)
            if name is None:
                reads_input = True
            else:
                names.add(name)
        elif isinstance(current, list):
            stack.extend(current)
        elif isinstance(current, dict) and not is_literal(current):
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
        """Run a list of steps in order (``prefix``: the list's position)."""
        for i, step in enumerate(items):
            pos = (*prefix, i)
            _RUN_STEP[kind_of(step)](self, step, pos)

    def params(self, step: dict) -> list:
        """The values of a step's parameters in the current context."""
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
        """wf.step with the statement; the output is its rows."""
        self.steps[step["name"]] = self.wf.step(
            step["name"],
            step["sql"],
            self.params(step),
            retry=step.get("retry"),
            timeout=step.get("timeout"),
        )

    def run_sleep(self, step: dict, pos: Position) -> None:
        """wf.sleep; a named sleep's output is null."""
        self.wf.sleep(step["sleep"])
        if "name" in step:
            self.steps[step["name"]] = None

    def run_wait_for_signal(self, step: dict, pos: Position) -> None:
        """wf.wait_for_signal; the output is the signal's payload (or null)."""
        payload = self.wf.wait_for_signal(
            step["wait_for_signal"], timeout=step.get("timeout")
        )
        self.steps[step["name"]] = payload

    def run_workflow(self, step: dict, pos: Position) -> None:
        """wf.start_child with the resolved input, then wf.wait for its result."""
        child_input = _materialise(step.get("input"), self.context)
        run_id = self.wf.start_child(step["workflow"], child_input)
        self.steps[step["name"]] = self.wf.wait(run_id, timeout=step.get("timeout"))

    def run_if(self, step: dict, pos: Position) -> None:
        """The condition as a step, then the then or else list; the output is the
        condition."""
        name = step.get("name")
        label = name if name is not None else f"if@{dotted(pos)}"
        rows = self.wf.step(label, step["if"], self.params(step))
        what = f"step {_show(name)}" if name is not None else human(pos)
        holds = self.holds(rows, f"the if condition of {what}")
        key = "then" if holds else "else"
        self.sequence(step.get(key, []), (*pos, key))
        if name is not None:
            self.steps[name] = holds

    def run_repeat(self, step: dict, pos: Position) -> None:
        """The body, then the until condition as a step, until it holds; the
        output is ``{"iterations": n}``."""
        name = step.get("name")
        what = f"step {_show(name)}" if name is not None else human(pos)
        bound = int(step["max_iterations"])
        for iteration in range(1, bound + 1):
            self.sequence(step["repeat"], (*pos, "repeat"))
            if name is not None:
                label = f"{name}#{iteration}"
            else:
                label = f"until@{dotted(pos)}#{iteration}"
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
            path = dotted((*pos, kind, j))
            calls.append((self.wf.workflow, {BRANCH_KEY: path, "context": context}))
        return calls

    def run_parallel(self, step: dict, pos: Position) -> None:
        """wf.parallel over the branches' child runs; merges every branch's outputs."""
        results = self.wf.parallel(self.calls(step, "parallel", pos))
        for result in results:
            if isinstance(result, dict):
                self.steps.update(result)
        if "name" in step:
            self.steps[step["name"]] = list(results)

    def run_race(self, step: dict, pos: Position) -> None:
        """wf.race over the branches' child runs; merges only the winner's outputs."""
        index, result = self.wf.race(self.calls(step, "race", pos))
        if isinstance(result, dict):
            self.steps.update(result)
        if "name" in step:
            self.steps[step["name"]] = {"winner": index, "result": result}


# The method that runs each kind of step: it makes the step's durable calls with
# ``wf`` and records the step's output in the context.
_RUN_STEP: dict[str, Callable[[_Interpreter, dict, Position], None]] = {
    "sql": _Interpreter.run_sql,
    "parallel": _Interpreter.run_parallel,
    "race": _Interpreter.run_race,
    "sleep": _Interpreter.run_sleep,
    "wait_for_signal": _Interpreter.run_wait_for_signal,
    "if": _Interpreter.run_if,
    "workflow": _Interpreter.run_workflow,
    "repeat": _Interpreter.run_repeat,
}


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
        _Interpreter(wf, workflow, context).sequence(items, parse_position(path))
        return {
            key: value
            for key, value in context["steps"].items()
            if key not in inherited
        }
    context = {"input": run_input, "steps": {}}
    _Interpreter(wf, workflow, context).sequence(definition["steps"], ())
    return context["steps"]
