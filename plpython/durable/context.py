"""The workflow context ``wf``: what a workflow body calls to do durable work.

Each step is numbered in the order the workflow reaches it. A step that has a
checkpoint (``durable._steps``) returns its recorded output, or raises its recorded
failure, without running; a new step runs in the current transaction and commits
together with its checkpoint.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from . import runs
from .db import Database
from .errors import NONDETERMINISTIC, DurableError, StepFailed, error_info
from .payloads import decode, encode
from .steps import run_sql

__all__ = ["RunAborted", "WorkflowContext"]

INVALID_PARAMETER = "22023"


class RunAborted(BaseException):
    """Ends a run as failed; a BaseException so that workflow code cannot swallow it."""

    def __init__(self, error: DurableError):
        super().__init__(str(error))
        self.error = error


class WorkflowContext:
    """The ``wf`` global of a running workflow (one instance per run execution)."""

    def __init__(self, db: Database, run: dict[str, Any], checkpoints: dict[int, dict]):
        self._db = db
        self._checkpoints = checkpoints
        self._seq = 0
        self.run_id: str = str(run["id"])
        self.workflow: str = run["workflow"]
        self.input: Any = run["input"]
        self.attempt: int = run["attempt"]
        self.step_key: str | None = None

    def step(
        self,
        name: str,
        action: str | Callable[..., Any],
        *args: Any,
        retry: dict | None = None,
        timeout: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Run one step: a SQL statement (with a list of parameters) or a callable.

        Returns the statement's rows as a list of dicts, or the callable's return
        value, as JSON would give it back. A step that already has a checkpoint
        returns its recorded value without running.
        """
        if not isinstance(name, str) or not name:
            raise DurableError(
                "a step name must be a non-empty string",
                sqlstate=INVALID_PARAMETER,
                hint='Name every step: wf.step("reserve", ...).',
            )
        seq = self._next_seq(name)
        recorded = self._checkpoints.get(seq)
        if recorded is not None:
            if recorded["status"] == "failed":
                raise StepFailed(name, decode(recorded["error"]))
            return decode(recorded["output"])

        kind = kind_of(action)
        started_at = time.time()
        self.step_key = f"{self.run_id}:{seq}"
        try:
            if isinstance(action, str):
                if len(args) > 1 or kwargs:
                    raise DurableError(
                        f'step "{name}": a SQL step takes one list of parameters',
                        sqlstate=INVALID_PARAMETER,
                        hint="wf.step(name, sql, [value1, value2, ...])",
                    )
                output = run_sql(self._db, name, action, args[0] if args else None)
            elif callable(action):
                output = action(*args, **kwargs)
            else:
                raise DurableError(
                    f'step "{name}": expected SQL text or a callable,'
                    f" not {type(action).__name__}",
                    sqlstate=INVALID_PARAMETER,
                    hint="wf.step(name, 'SELECT ...', [params])"
                    " or wf.step(name, fn, *args)",
                )
            output_json = encode(output, f'the result of step "{name}"')
        except Exception as exc:
            self._db.rollback()
            error = error_info(exc)
            runs.record_step(
                self._db,
                self.run_id,
                seq,
                name,
                kind,
                "failed",
                None,
                error,
                started_at,
            )
            self._db.commit()
            raise StepFailed(name, error) from None
        finally:
            self.step_key = None
        runs.record_step(
            self._db,
            self.run_id,
            seq,
            name,
            kind,
            "succeeded",
            output_json,
            None,
            started_at,
        )
        self._db.commit()
        return decode(output_json)

    def _next_seq(self, name: str) -> int:
        """Number the next step and check it against the checkpoint at that position."""
        self._seq += 1
        recorded = self._checkpoints.get(self._seq)
        if recorded is not None and recorded["name"] != name:
            raise RunAborted(
                DurableError(
                    f"nondeterministic workflow {self.workflow}: step {self._seq} is"
                    f' "{name}" now but was "{recorded["name"]}" when it ran',
                    sqlstate=NONDETERMINISTIC,
                    hint="A workflow must reach its steps in the same order on every"
                    " execution; use durable.migrate_run() to move a run to new code.",
                )
            )
        return self._seq


def kind_of(action: Any) -> str:
    """The step kind recorded for an action: ``sql`` for text, else ``python``."""
    return "sql" if isinstance(action, str) else "python"
