"""Pinned workflow code: load a workflow version and compile it as PL/Python would.

A workflow cannot be run by calling its SQL function (inside a function no step could
commit). The worker compiles the pinned source text the same way PL/Python compiles a
function body: ``def <name>():`` followed by the body indented by one tab, with the
arguments, ``plpy``, ``GD`` and ``SD`` as globals, plus ``wf``.
"""

from __future__ import annotations

import builtins
import linecache
from typing import Any, Callable

from .db import Database
from .errors import WORKFLOW_ERROR, DurableError

__all__ = ["CompiledWorkflow", "compile_source", "load"]

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


def load(db: Database, cache: dict, version_id: int, gd: dict) -> CompiledWorkflow:
    """The compiled workflow of one version (compiled once per session)."""
    compiled = cache.get(version_id)
    if compiled is None:
        row = db.one(
            "select workflow, source, argname from durable._workflow_versions"
            " where id = $1",
            ["bigint"],
            [version_id],
        )
        compiled = compile_source(
            row["workflow"], version_id, row["source"], row["argname"], db.plpy, gd
        )
        cache[version_id] = compiled
    return compiled
