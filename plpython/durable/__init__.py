"""durable: the workflow engine that runs inside PostgreSQL as PL/Python.

Inside the server the package is loaded by ``durable._load()``; workflow code reaches
the engine through the ``wf`` global, and may ``import durable`` for its exceptions.
Outside the server the pure modules (cron, durations, retry, payloads, sqltext,
workflows) import without ``plpy``.
"""

from .errors import ChildFailed, DurableError, NonRetryable, StepFailed, WaitTimeout

__all__ = ["ChildFailed", "DurableError", "NonRetryable", "StepFailed", "WaitTimeout"]
