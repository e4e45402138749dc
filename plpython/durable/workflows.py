"""Pinned workflow code: load a workflow version and compile it as PL/Python would.

A workflow cannot be run by calling its SQL function (inside a function no step could
commit). The worker compiles the pinned source text the same way PL/Python compiles a
function body: ``def <name>():`` followed by the body indented by one tab, with the
arguments, ``plpy``, ``GD`` and ``SD`` as globals, plus ``wf``. A SQL workflow's
version is its definition instead, run by :func:`durable.definitions.execute`; this
module also checks a definition for ``durable.define_workflow``.
"""

from __future__ import annotations

import builtins
import json
import linecache
from typing import Any, Callable

from . import definitions
from .db import Database
from .errors import WORKFLOW_ERROR, DurableError

__all__ = [
    "CompiledWorkflow",
    "SqlWorkflow",
    "check_definition_json",
    "compile_source",
    "load",
]

SYNTAX_ERROR = "42601"

FUNCTION_NAME = "__durable_workflow__"


def munge(source: str) -> str:
    """Wrap a function body in a ``def`` exactly as PL/Python does."""
    body = source.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\n\t")
    return f"def {FUNCTION_NAME}():\n\t{body}\n"


class CompiledWorkflow:
    """A workflow version compiled into a Python function with its own globals."""

    def __init__(
        self, workflow: str, function: Callable, namespace: dict, argname: str
    ):
        self.workflow = workflow
        self.function = function
        self.namespace = namespace
        self.argname = argname

    def __call__(self, wf: Any, value: Any) -> Any:
        """Execute the workflow body with ``wf`` and its input bound as globals."""
        self.namespace["wf"] = wf
        self.namespace["args"] = [value]
        if self.argname:
            self.namespace[self.argname] = value
        return self.function()


def compile_source(
    workflow: str,
    version_id: int,
    source: str,
    argname: str | None,
    plpy: Any,
    gd: dict,
) -> CompiledWorkflow:
    """Compile one workflow version."""
    text = munge(source)
    filename = f"<workflow {workflow} v{version_id}>"
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    try:
        code = compile(text, filename, "exec")
    except SyntaxError as exc:
        raise DurableError(
            f"workflow {workflow} does not compile: {exc.msg} (line {exc.lineno})",
            sqlstate=WORKFLOW_ERROR,
            hint="Fix the function body; PL/Python reports the same error when called.",
        ) from None
    namespace = {
        "__builtins__": builtins,
        "__name__": f"durable.workflow.{workflow}",
        "plpy": plpy,
        "GD": gd,
        "SD": {},
    }
    exec(code, namespace)
    return CompiledWorkflow(
        workflow, namespace[FUNCTION_NAME], namespace, argname or ""
    )


class SqlWorkflow:
    """A SQL-declared workflow version: its definition, interpreted with ``wf``."""

    def __init__(self, workflow: str, definition: dict):
        self.workflow = workflow
        self.definition = definition

    def __call__(self, wf: Any, value: Any) -> Any:
        """Run the definition; the result is the outputs of its named steps."""
        return definitions.execute(wf, self.definition, value)


def load(
    db: Database, cache: dict, version_id: int, gd: dict
) -> CompiledWorkflow | SqlWorkflow:
    """The executable workflow of one version (compiled once per session)."""
    compiled = cache.get(version_id)
    if compiled is None:
        row = db.one(
            "select workflow, kind, source, argname from durable._workflow_versions"
            " where id = $1",
            ["bigint"],
            [version_id],
        )
        if row["kind"] == "sql":
            compiled = SqlWorkflow(row["workflow"], json.loads(row["source"]))
        else:
            compiled = compile_source(
                row["workflow"], version_id, row["source"], row["argname"], db.plpy, gd
            )
        cache[version_id] = compiled
    return compiled


def _sql_checker(plpy: Any) -> Callable[[str, str], None]:
    """Check that one SQL text of a definition parses (the statement count is
    checked by definitions.validate).

    ``plpy.prepare`` parses without executing; errors other than syntax errors
    (a table that does not exist yet, an untyped parameter) are accepted, since the
    objects a workflow uses may be created after it is defined.
    """

    def check(label: str, sql: str) -> None:
        try:
            plpy.prepare(sql, [])
        except plpy.SPIError as exc:
            if getattr(exc, "sqlstate", None) == SYNTAX_ERROR:
                raise DurableError(
                    f"{label}: {exc}",
                    sqlstate=SYNTAX_ERROR,
                    hint="Fix the SQL of this step; it is parsed, not run, when"
                    " the workflow is defined.",
                ) from None

    return check


def _error_json(exc: DurableError) -> str:
    """``{"error": ...}`` for a DurableError, as durable.define_workflow reads it."""
    return json.dumps(
        {"error": {"sqlstate": exc.sqlstate, "message": str(exc), "hint": exc.hint}}
    )


def check_definition_json(plpy: Any, workflow: str, definition_json: str) -> str:
    """``{"definition": canonical}`` or ``{"error": ...}`` (durable.define_workflow)."""
    try:
        canonical = definitions.validate(
            workflow, json.loads(definition_json), _sql_checker(plpy)
        )
    except DurableError as exc:
        return _error_json(exc)
    return json.dumps({"definition": canonical})
