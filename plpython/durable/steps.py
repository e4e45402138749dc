"""Executing one step: a SQL statement with parameters, or a Python callable.

SQL steps take their parameter types from PostgreSQL itself: the statement is parsed
once with ``PREPARE`` (without executing it) and the types PostgreSQL infers for
``$1..$n`` are read from ``pg_prepared_statements``, so ``WHERE id = $1`` gets the
column's type. Where PostgreSQL cannot infer a type (``SELECT $1``) or the statement
cannot be prepared that way (utility statements), the types follow the Python values.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .db import Database
from .errors import DurableError
from .payloads import rows_as_json
from .sqltext import split_statements

__all__ = ["check_single_statement", "run_sql", "value_type"]

INVALID_PARAMETER = "22023"
SYNTAX_ERROR = "42601"
PROBE = "durable_parameter_probe"
DUPLICATE_PREPARED_STATEMENT = "42P05"
# SQLSTATE classes of errors about the session, not the statement: connection (08),
# transaction rollback (40), resources (53), object state (55), operator
# intervention (57: cancel, shutdown), system (58) and internal errors (XX).
INTERRUPTION_CLASSES = frozenset({"08", "40", "53", "55", "57", "58", "XX"})
JSON_TYPES = frozenset({"json", "jsonb"})
TEXT_TYPES = frozenset({"text", "character varying", "character", "name"})


def value_type(value: Any) -> str:
    """The PostgreSQL type a Python value is passed as when no type can be inferred."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "double precision"
    if isinstance(value, dict):
        return "jsonb"
    if isinstance(value, (list, tuple)):
        items = [item for item in value if item is not None]
        if not items:
            return "text[]"
        for scalar in ("boolean", "bigint", "double precision", "text"):
            if all(value_type(item) == scalar for item in items):
                return scalar + "[]"
        return "jsonb"
    return "text"


def _inferred_types(db: Database, sql: str) -> list[str] | None:
    """The parameter types PostgreSQL infers for ``sql``, or None if it cannot."""
    key = ("parameter types", sql)
    if key in db.plans:
        return db.plans[key]
    try:
        types = _probe_parameter_types(db, sql)
    except Exception as exc:  # plpy.SPIError
        # A cancel, a deadlock or a lost connection says nothing about the statement:
        # it must reach the step, not turn into guessed types (and be cached).
        if (getattr(exc, "sqlstate", None) or "")[:2] in INTERRUPTION_CLASSES:
            raise
        types = None  # not preparable this way; use the values' types
    db.plans[key] = types
    return types


def _probe_parameter_types(db: Database, sql: str) -> list[str]:
    """PREPARE ``sql`` (parsed and planned, not run) and read its parameter types."""
    # plpy.prepare refuses a string with several statements, so nothing but the
    # PREPARE can run here.
    prepare = db.plpy.prepare(f"prepare {PROBE} as {sql}", [])
    try:
        db.plpy.execute(prepare)
    except Exception as exc:  # plpy.SPIError
        if getattr(exc, "sqlstate", None) != DUPLICATE_PREPARED_STATEMENT:
            raise
        # A probe interrupted before its DEALLOCATE: prepared statements outlive the
        # rollback of the transaction that made them.
        db.plpy.execute(f"deallocate {PROBE}")
        db.plpy.execute(prepare)
    row = db.one(
        "select parameter_types::text[] as types"
        " from pg_catalog.pg_prepared_statements where name = $1",
        ["text"],
        [PROBE],
    )
    db.plpy.execute(f"deallocate {PROBE}")
    return list(row["types"])


def _argument(value: Any, type_name: str) -> Any:
    """Convert one Python value for a parameter declared as ``type_name``."""
    if value is None:
        return None
    if type_name in JSON_TYPES:
        return value if isinstance(value, str) else json.dumps(value)
    if type_name in TEXT_TYPES and isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def check_single_statement(db: Database, step: str, sql: str) -> None:
    """Refuse SQL text that holds no statement or several (SPI would run them all)."""
    key = ("statement count", sql)
    count = db.plans.get(key)
    if count is None:
        count = db.plans[key] = len(split_statements(sql))
    if count != 1:
        raise DurableError(
            f'step "{step}" must hold exactly one SQL statement, not {count}',
            sqlstate=SYNTAX_ERROR,
            hint="Give each statement a step of its own.",
        )


def run_sql(db: Database, step: str, sql: str, params: Sequence | None) -> list[dict]:
    """Execute one SQL statement and return its rows as JSON-ready dicts."""
    check_single_statement(db, step, sql)
    if params is None:
        params = []
    elif isinstance(params, (str, bytes, dict)) or not isinstance(params, Sequence):
        raise DurableError(
            f'step "{step}": params must be a list of values,'
            f" not {type(params).__name__}",
            sqlstate=INVALID_PARAMETER,
            hint="Pass the values of $1, $2, ... as a list:"
            " wf.step(name, sql, [a, b]).",
        )
    types = _inferred_types(db, sql) if params else []
    if types is None:
        types = [value_type(value) for value in params]
    if len(types) != len(params):
        raise DurableError(
            f'step "{step}": the statement uses {len(types)} parameter(s)'
            f" but {len(params)} value(s) were given",
            sqlstate=INVALID_PARAMETER,
            hint="Give exactly one value for each of $1, $2, ...",
        )
    args = [_argument(value, type_name) for value, type_name in zip(params, types)]
    return rows_as_json(db.plpy.execute(db.plan(sql, types), args))
