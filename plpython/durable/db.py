"""The database handle used by every engine module.

The engine never imports ``plpy``: the worker entry point wraps the ``plpy`` module it
was given in a :class:`Database`, and everything else receives that object. Plans are
prepared once per session and kept (``plpy.prepare`` plans survive commits).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["Database"]


class Database:
    """``plpy`` plus a cache of prepared plans keyed by SQL text and argument types."""

    def __init__(self, plpy: Any, plans: dict | None = None):
        self.plpy = plpy
        self.plans: dict = {} if plans is None else plans

    def plan(self, sql: str, types: Sequence[str] = ()) -> Any:
        """Return the prepared plan for ``sql`` with parameter ``types``."""
        key = (sql, tuple(types))
        plan = self.plans.get(key)
        if plan is None:
            plan = self.plpy.prepare(sql, list(types))
            self.plans[key] = plan
        return plan

    def execute(self, sql: str, types: Sequence[str] = (), args: Sequence = ()) -> Any:
        """Run ``sql`` through its cached plan and return the result."""
        return self.plpy.execute(self.plan(sql, types), list(args))

    def one(self, sql: str, types: Sequence[str] = (), args: Sequence = ()) -> Any:
        """Return the first row of the result, or None."""
        rows = self.execute(sql, types, args)
        return rows[0] if rows.nrows() else None

    def commit(self) -> None:
        """Commit the current transaction (only the worker loop calls this)."""
        self.plpy.commit()

    def rollback(self) -> None:
        """Roll the current transaction back."""
        self.plpy.rollback()

    def log(self, message: str) -> None:
        """Write ``message`` to the server log at LOG level."""
        self.plpy.log(message)
