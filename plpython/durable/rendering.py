"""Rendering: Mermaid flowcharts of a SQL workflow's definition and of a run's steps.

``durable.graph(workflow)`` draws a SQL workflow's current definition (the drawing
itself is :func:`durable.definitions.graph`); ``durable.explain(run)`` draws the steps
a run of any workflow took, with their status, attempts and durations.
"""

from __future__ import annotations

import json
from typing import Any

from .definitions import graph, mermaid_label
from .errors import RUN_NOT_FOUND

__all__ = ["explain_json", "graph_json"]

WRONG_OBJECT_TYPE = "42809"
UNDEFINED_FUNCTION = "42883"

STATUS_CLASSES = {
    "succeeded": "fill:#d4edda,stroke:#2e7d32",
    "failed": "fill:#f8d7da,stroke:#c62828",
    "retrying": "fill:#fff3cd,stroke:#f9a825",
    "waiting": "fill:#e3f2fd,stroke:#1565c0",
}


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
    return graph(rows[0]["name"], json.loads(rows[0]["source"]))


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
    workflow = mermaid_label(run[0]["workflow"])
    lines = ["flowchart TD", f'    run(["{workflow}"])']
    previous = "run"
    for step in steps:
        node = f"s{step['seq']}" if step["seq"] >= 0 else f"c{-step['seq']}"
        details = f"{step['kind']} · {step['status']}"
        if step["attempts"] != 1:
            details += f" · {step['attempts']} attempts"
        if step["ms"] is not None:
            details += f" · {step['ms']} ms"
        name = mermaid_label(step["name"])
        lines.append(f'    {node}["{name}<br/>{details}"]')
        lines.append(f"    {previous} --> {node}")
        if step["status"] in STATUS_CLASSES:
            lines.append(f"    class {node} {step['status']}")
        previous = node
    status = run[0]["status"]
    lines.append(f'    finish(["{status}"])')
    lines.append(f"    {previous} --> finish")
    lines += [f"    classDef {name} {style}" for name, style in STATUS_CLASSES.items()]
    return "\n".join(lines) + "\n"
