"""Exceptions of the engine and the SQLSTATEs it reports.

Errors that reach SQL carry a SQLSTATE of the project class ``DU`` (listed here and in
docs/errors.md) or a standard one where it fits.
"""

from __future__ import annotations

import traceback
from typing import Any

__all__ = [
    "CHILD_FAILED",
    "NONDETERMINISTIC",
    "NOT_JSON",
    "PROGRAM_LIMIT_EXCEEDED",
    "RUN_CANCELLED",
    "RUN_FAILED",
    "RUN_FINISHED",
    "RUN_NOT_FINISHED",
    "RUN_NOT_FOUND",
    "STEP_TIMEOUT",
    "UNDECODABLE",
    "WAIT_TIMEOUT",
    "WORKER_LOST",
    "WORKFLOW_ERROR",
    "WORKFLOW_TIMEOUT",
    "ChildFailed",
    "DurableError",
    "LimitExceeded",
    "NonRetryable",
    "StepFailed",
    "WaitTimeout",
    "error_info",
    "recorded_failure",
]

WORKFLOW_ERROR = "DU000"
RUN_FAILED = "DU001"
RUN_NOT_FINISHED = "DU002"
RUN_CANCELLED = "DU003"
RUN_NOT_FOUND = "DU010"
RUN_FINISHED = "DU011"
NONDETERMINISTIC = "DU020"
NOT_JSON = "DU021"
UNDECODABLE = "DU022"
WAIT_TIMEOUT = "DU031"
CHILD_FAILED = "DU032"
WORKER_LOST = "DU040"
WORKFLOW_TIMEOUT = "DU041"
STEP_TIMEOUT = "57014"
PROGRAM_LIMIT_EXCEEDED = "54000"

TRACEBACK_LINES = 20


class DurableError(Exception):
    """An engine error with a SQLSTATE, a message and a hint."""

    def __init__(self, message: str, *, sqlstate: str = WORKFLOW_ERROR, hint: str = ""):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.hint = hint


class NonRetryable(Exception):
    """Raise in a workflow or a step to fail at once, without further attempts."""


class LimitExceeded(DurableError, NonRetryable):
    """A configured limit (limits.* settings) was exceeded; never retried."""

    def __init__(self, message: str, setting: str):
        super().__init__(
            message,
            sqlstate=PROGRAM_LIMIT_EXCEEDED,
            hint=f"The limit is the setting {setting} (durable.set_setting).",
        )


class StepFailed(Exception):
    """Raised into workflow code when a step failed; replayed identically on resume.

    ``error`` is the recorded error document (sqlstate, message, detail, hint, ...).
    """

    def __init__(self, step: str, error: dict[str, Any]):
        super().__init__(f'step "{step}" failed: {error.get("message", "")}')
        self.step = step
        self.error = error
        self.sqlstate = error.get("sqlstate")


class ChildFailed(StepFailed):
    """Raised by wf.wait, wf.parallel and wf.race when a child run failed or was
    cancelled; ``child`` is its run id and ``error`` its error document."""

    def __init__(self, step: str, error: dict[str, Any]):
        super().__init__(step, error)
        self.child = error.get("child")


class WaitTimeout(StepFailed):
    """Raised by wf.wait, wf.parallel and wf.race when the timeout passed first."""


FAILURE_TYPES = {cls.__name__: cls for cls in (StepFailed, ChildFailed, WaitTimeout)}


def recorded_failure(step: str, error: dict[str, Any]) -> StepFailed:
    """The exception a failed checkpoint raises again on replay."""
    return FAILURE_TYPES.get(error.get("raises", ""), StepFailed)(step, error)


def error_info(exc: BaseException) -> dict[str, Any]:
    """Describe an exception as the JSON error document stored on runs and steps."""
    if isinstance(exc, StepFailed):
        info = dict(exc.error)
        info["step"] = exc.step
        return info
    info: dict[str, Any] = {
        "sqlstate": getattr(exc, "sqlstate", None) or WORKFLOW_ERROR,
        "message": str(exc) or type(exc).__name__,
        "type": type(exc).__name__,
    }
    for attribute in ("detail", "hint"):
        value = getattr(exc, attribute, None)
        if value:
            info[attribute] = value
    if isinstance(exc, NonRetryable):
        info["non_retryable"] = True
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    info["traceback"] = "".join(lines[-TRACEBACK_LINES:])
    return info
