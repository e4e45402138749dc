"""SQL-declared workflows: validate, interpret and draw workflow definitions.

``durable.define_workflow(name, definition, retry, timeout)`` registers a workflow
whose body is data instead of code. This package holds everything about that data
that needs no database, one module per concern:

=================  ==============================================================
module             holds
=================  ==============================================================
``schema``         the format: step kinds and their keys, positions, :func:`branch`
                   (the steps of one branch from its position path), BRANCH_KEY
``paths``          the path language of parameters and child inputs: :func:`resolve`
``validation``     :func:`validate`: check a definition when it is defined and
                   return its canonical form; every error names the workflow and
                   the step, and carries a hint
``interpreter``    :func:`execute`: interpret a canonical definition with the
                   workflow context ``wf``, deterministically, so that it replays
                   like any workflow body
``mermaid``        :func:`graph`: draw a definition as a Mermaid flowchart
=================  ==============================================================

Callers import from ``durable.definitions``. It uses only the standard library: it
runs inside the database server.
"""

from __future__ import annotations

from . import schema
from .interpreter import execute
from .mermaid import graph, mermaid_label
from .paths import resolve
from .schema import ALLOWED, BRANCH_KEY, KINDS, branch
from .validation import MAX_ITERATIONS, validate

__all__ = [
    "ALLOWED",
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

# The unit tests walk definitions with these (tests/unit/test_definitions.py).
_kind = schema.kind_of
_children = schema.nested_lists
