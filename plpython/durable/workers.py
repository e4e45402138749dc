"""The worker loop behind ``CALL durable.run_worker()``.

This is the only place that commits. A worker registers itself, takes its session
advisory lock, then loops: claim a ready run, execute it (each step commits with its
checkpoint), and poll with a short back-off when nothing is ready.
"""

from __future__ import annotations

import json
import time
from typing import Any

from . import runs, workflows
from .context import RunAborted, WorkflowContext
from .db import Database
from .errors import DurableError, error_info
from .payloads import encode

__all__ = ["WORKER_LOCK_CLASS", "execute_run", "run_worker"]

# Advisory lock (WORKER_LOCK_CLASS, worker id) is held by each live worker.
WORKER_LOCK_CLASS = 1146442306
MIN_POLL = 0.002
HEARTBEAT_EVERY = 5.0


def _setting(db: Database, key: str) -> float:
    row = db.one("select value from durable._settings where key = $1", ["text"], [key])
    return float(row["value"])


def _runtime_budget(db: Database, max_runtime: str | None) -> float:
    """Seconds this call may run: max_runtime, kept under statement_timeout."""
    requested = db.one(
        "select extract(epoch from $1::interval)::float8 as seconds",
        ["text"],
        [max_runtime or "1 minute"],
    )["seconds"]
    timeout_ms = db.one(
        "select setting::float8 as ms from pg_catalog.pg_settings"
        " where name = 'statement_timeout'"
    )["ms"]
    if timeout_ms > 0:
        margin = _setting(db, "worker.statement_timeout_margin")
        cap = max(timeout_ms / 1000.0 - margin, timeout_ms / 2000.0)
        if cap < requested:
            db.log(
                f"durable worker: max_runtime lowered from {requested:g}s to {cap:g}s"
                f" to stay under statement_timeout ({timeout_ms:g}ms)"
            )
            requested = cap
    return requested


def _register(db: Database, queue: str | None) -> int:
    """Insert this worker's row and take its lifetime advisory lock."""
    worker_id = db.one(
        "insert into durable._workers (queue) values ($1) returning id",
        ["text"],
        [queue],
    )["id"]
    db.execute(
        "select pg_catalog.pg_advisory_lock($1, $2)",
        ["integer", "integer"],
        [WORKER_LOCK_CLASS, worker_id],
    )
    return worker_id


def _unregister(db: Database, worker_id: int) -> None:
    runs.release_worker_runs(db, worker_id)
    db.execute("delete from durable._workers where id = $1", ["integer"], [worker_id])
    db.execute(
        "select pg_catalog.pg_advisory_unlock($1, $2)",
        ["integer", "integer"],
        [WORKER_LOCK_CLASS, worker_id],
    )


def _heartbeat(db: Database, worker_id: int) -> None:
    db.execute(
        "update durable._workers set heartbeat_at = pg_catalog.now() where id = $1",
        ["integer"],
        [worker_id],
    )


def execute_run(db: Database, cache: dict, gd: dict, run: dict[str, Any]) -> None:
    """Execute one claimed run until it ends; commits after every step."""
    run_id = str(run["id"])
    checkpoints = runs.load_checkpoints(db, run_id) if run["resumed"] else {}
    try:
        workflow = workflows.load(db, cache, run["version_id"], gd)
        output = workflow(WorkflowContext(db, run, checkpoints), run["input"])
        result_json = encode(output, f"the result of workflow {run['workflow']}")
    except RunAborted as aborted:
        db.rollback()
        runs.fail(db, run_id, error_info(aborted.error))
    except Exception as exc:
        db.rollback()
        runs.fail(db, run_id, error_info(exc))
    else:
        runs.succeed(db, run_id, result_json)
    db.commit()


def _begin(db: Database) -> None:
    """Commit once up front: fails clearly when not called on an autocommit CALL."""
    try:
        db.commit()
    except Exception:  # plpy.SPIError: invalid transaction termination
        raise DurableError(
            "durable.run_worker() must be called with CALL outside a transaction block",
            sqlstate="2D000",
            hint="Use an autocommit connection and a CALL statement of its own"
            " (not BEGIN; CALL ...; nor a multi-statement string).",
        ) from None


def run_worker(
    plpy: Any, gd: dict, key: str, queue: str | None, max_runtime: str | None, drain: bool
) -> str | None:
    """Execute ready runs owned by session_user until the runtime budget is spent.

    Returns None, or the JSON error document that durable.run_worker() raises (so
    that the client sees a clean PostgreSQL error with its SQLSTATE and hint).
    """
    cache = gd.setdefault(f"{key}:cache", {"plans": {}, "workflows": {}})
    db = Database(plpy, cache["plans"])
    try:
        _work(db, cache, gd, queue, max_runtime, drain)
    except Exception as exc:
        error = error_info(exc)
        error.pop("traceback", None)
        if not isinstance(exc, DurableError):
            error["message"] = f"durable worker: {error['message']}"
        return json.dumps(error)
    return None


def _work(
    db: Database,
    cache: dict,
    gd: dict,
    queue: str | None,
    max_runtime: str | None,
    drain: bool,
) -> None:
    _begin(db)
    deadline = time.monotonic() + _runtime_budget(db, max_runtime)
    poll_interval = _setting(db, "worker.poll_interval")
    worker_id = _register(db, queue)
    db.commit()
    try:
        pause = MIN_POLL
        next_heartbeat = time.monotonic() + HEARTBEAT_EVERY
        while time.monotonic() < deadline:
            run = runs.claim(db, worker_id, queue)
            db.commit()
            if run is not None:
                execute_run(db, cache["workflows"], gd, run)
                pause = MIN_POLL
                continue
            if drain:
                break
            if time.monotonic() >= next_heartbeat:
                _heartbeat(db, worker_id)
                db.commit()
                next_heartbeat = time.monotonic() + HEARTBEAT_EVERY
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 2, poll_interval)
    finally:
        db.rollback()
        _unregister(db, worker_id)
        db.commit()
