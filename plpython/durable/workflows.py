"""Pinned workflow code: load a workflow version and compile it as PL/Python would.

A workflow cannot be run by calling its SQL function (inside a function no step could
commit). The worker compiles the pinned source text the same way PL/Python compiles a
function body: ``def <name>():`` followed by the body indented by one tab, with the
arguments, ``plpy``, ``GD`` and ``SD`` as globals, plus ``wf``.
"""

from __future__ import annotations

import builtins
import json
import linecache
from typing import Any, Callable

from . import definitions
from .db import Database
from .errors import RUN_NOT_FOUND, WORKFLOW_ERROR, DurableError

__all__ = [
    "CompiledWorkflow",
    "SqlWorkflow",
    "check_definition_json",
    "compile_source",
    "explain_json",
    "graph_json",
    "load",
]

SYNTAX_ERROR = "42601"
WRONG_OBJECT_TYPE = "42809"
UNDEFINED_FUNCTION = "42883"

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


def graph_json(plpy: Any, workflow: str) -> str:
    """The Mermaid flowchart of a SQL workflow's current definition."""
    rows = plpy.execute(
        plpy.prepare(
            "select w.name, v.source from durable._find_sql_workflow($1,"
            " pg_catalog.current_schemas(true)) as w"
            " join durable._workflow_versions as v on v.id = w.version_id",
            ["text"],
        ),
        [workflow],
    )
    if rows.nrows() == 0:
        function = plpy.execute(
            plpy.prepare("select to_regproc($1) is not null as found", ["text"]),
            [workflow],
        )[0]["found"]
        if function:
            plpy.error(
                f'workflow "{workflow}" is a Python workflow; its structure is code',
                hint="durable.explain(run) draws the steps a run of it took.",
                sqlstate=WRONG_OBJECT_TYPE,
            )
        plpy.error(
            f'SQL workflow "{workflow}" does not exist',
            hint="Define it with durable.define_workflow(name, definition).",
            sqlstate=UNDEFINED_FUNCTION,
        )
    return definitions.graph(rows[0]["name"], json.loads(rows[0]["source"]))


STATUS_CLASSES = {
    "succeeded": "fill:#d4edda,stroke:#2e7d32",
    "failed": "fill:#f8d7da,stroke:#c62828",
    "retrying": "fill:#fff3cd,stroke:#f9a825",
    "waiting": "fill:#e3f2fd,stroke:#1565c0",
}


def explain_json(plpy: Any, run_id: str) -> str:
    """A Mermaid flowchart of the steps a run took (status, attempts, duration)."""
    run = plpy.execute(
        plpy.prepare(
            "select workflow, status from durable._runs where id = $1", ["uuid"]
        ),
        [run_id],
    )
    if run.nrows() == 0:
        plpy.error(
            f"run {run_id} not found",
            hint="Runs are deleted by durable.purge() once finished and old enough.",
            sqlstate=RUN_NOT_FOUND,
        )
    steps = plpy.execute(
        plpy.prepare(
            "select seq, name, kind, status, attempts,"
            " round(extract(epoch from finished_at - started_at)::numeric * 1000)"
            "::bigint as ms from durable._steps where run_id = $1 order by"
            " seq < 0, abs(seq)",
            ["uuid"],
        ),
        [run_id],
    )
    label = definitions.mermaid_label
    lines = ["flowchart TD", f'    run(["{label(run[0]["workflow"])}"])']
    previous = "run"
    for step in steps:
        node = f"s{step['seq']}" if step["seq"] >= 0 else f"c{-step['seq']}"
        details = f"{step['kind']} · {step['status']}"
        if step["attempts"] != 1:
            details += f" · {step['attempts']} attempts"
        if step["ms"] is not None:
            details += f" · {step['ms']} ms"
        lines.append(f'    {node}["{label(step["name"])}<br/>{details}"]')
        lines.append(f"    {previous} --> {node}")
        if step["status"] in STATUS_CLASSES:
            lines.append(f"    class {node} {step['status']}")
        previous = node
    status = run[0]["status"]
    lines.append(f'    finish(["{status}"])')
    lines.append(f"    {previous} --> finish")
    lines += [f"    classDef {name} {style}" for name, style in STATUS_CLASSES.items()]
    return "\n".join(lines) + "\n"
