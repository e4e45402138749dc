"""Run and step rows: claiming, checkpoints, suspending, finishing, reclaiming.

Every function here runs in the caller's current transaction and never commits; the
worker loop decides when to commit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from .db import Database
from .errors import UNDECODABLE
from .payloads import decode

__all__ = [
    "cancel_runs",
    "children_state",
    "claim",
    "consume_signal",
    "finish",
    "has_compensations",
    "load_checkpoints",
    "may_resume",
    "pin_branch_version",
    "publish_step",
    "reclaim_orphans",
    "record_attempt",
    "release_worker_runs",
    "reset_interruptions",
    "run_flags",
    "save_step",
    "schedule_retry",
    "start_child",
    "suspend",
    "undecodable",
    "wake_if_ready",
]

# Every write goes through a SECURITY DEFINER function of durable
# (sql/src/200-worker.sql) that acts only on the session user's runs: the worker's
# role holds no write privilege on durable's tables. Worker-side timestamps are the
# clock's: inside the worker's CALL, now() is the start of the current transaction;
# the claim takes the time as a parameter, so that the index can still use it.

SAVE_STEP_TYPES = (
    "uuid", "integer", "text", "text", "text", "integer", "jsonb", "jsonb",
    "double precision",
)  # fmt: skip

CLAIM_TYPES = [
    "integer", "double precision", "text", "uuid", "jsonb", *SAVE_STEP_TYPES[1:],
]  # fmt: skip
CLAIMS = {
    count: "select durable._claim("
    + ", ".join(f"${n}" for n in range(1, count + 1))
    + ") as claimed"
    for count in (3, 5, 13)
}


def claim(
    db: Database,
    worker_id: int,
    queue: str | None,
    succeeded: tuple | None = None,
) -> dict[str, Any] | None:
    """Mark the best ready run of the worker's role as running on it (or None).

    ``succeeded`` is ``(id, result JSON, checkpoint or None)`` of a run without a
    parent that this worker just executed: the same statement writes the checkpoint
    of its last step (a new row, as save_step takes it) and finishes it. The claim
    finds nothing while the session is not the worker's role (a step's SET ROLE that
    the worker has not undone yet). A run whose input or error the engine cannot
    decode comes back with ``undecodable`` set, for the worker to fail that run alone.
    """
    args = [worker_id, time.time(), queue]
    if succeeded is not None:
        run_id, result_json, checkpoint = succeeded
        args += [run_id, result_json]
        if checkpoint is not None:
            args += list(checkpoint)
    run = db.one(CLAIMS[len(args)], CLAIM_TYPES[: len(args)], args)["claimed"]
    if run["id"] is None:
        return None
    run["id"] = str(run["id"])
    try:
        run["input"] = decode(run["input"])
        run["error"] = decode(run["error"])
    except (ValueError, RecursionError) as exc:
        run["input"] = run["error"] = None
        run["undecodable"] = undecodable(run, "input", exc)
    return run


def undecodable(run: dict[str, Any], what: str, exc: Exception) -> dict[str, Any]:
    """The error that fails a run whose ``what`` (input, checkpoints) the engine
    cannot decode: that run fails alone, the worker goes on."""
    return {
        "sqlstate": UNDECODABLE,
        "message": f"the {what} of run {run['id']} of workflow {run['workflow']}"
        f" cannot be decoded: {type(exc).__name__}: {exc}",
        "hint": "JSON nested deeper than the engine can read (see the setting"
        " limits.max_payload_depth); start the run again with flatter data.",
    }


def load_checkpoints(db: Database, run_id: str) -> dict[int, dict[str, Any]]:
    """All checkpoints of a run, by sequence number (one query)."""
    rows = db.execute(
        "select seq, name, kind, status, attempts, output::text as output,"
        " error::text as error from durable._steps where run_id = $1",
        ["uuid"],
        [run_id],
    )
    checkpoints = {}
    for row in rows:
        checkpoint = dict(row)
        checkpoint["output"] = decode(checkpoint["output"])
        checkpoint["error"] = decode(checkpoint["error"])
        checkpoints[checkpoint["seq"]] = checkpoint
    return checkpoints


def save_step(
    db: Database,
    run_id: str,
    seq: int,
    name: str,
    kind: str,
    status: str,
    attempts: int,
    output_json: str | None,
    error_json: str | None,
    started_at: float,
    new: bool = False,
) -> None:
    """Write (or update) the checkpoint at one position of a run (JSON texts).

    ``new`` says that the position has no checkpoint yet: a plain INSERT then
    avoids the speculative insertion of ON CONFLICT.
    """
    db.execute(
        "select durable._save_step($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        [*SAVE_STEP_TYPES, "boolean"],
        [
            run_id, seq, name, kind, status, attempts, output_json, error_json,
            started_at, new,
        ],
    )  # fmt: skip


def record_attempt(
    db: Database,
    run: dict[str, Any],
    seq: int,
    attempt: int,
    name: str,
    error: dict,
    started_at: float,
) -> None:
    """Keep the error of one failed attempt of a step."""
    db.execute(
        "select durable._record_attempt($1, $2, $3, $4, $5, $6)",
        ["uuid", "integer", "integer", "text", "jsonb", "double precision"],
        [run["id"], seq, attempt, name, json.dumps(error), started_at],
    )


def suspend(
    db: Database,
    run_id: str,
    status: str,
    wake_at: float | None,
    waiting_for: str | None,
) -> None:
    """Park a run (sleeping or waiting) until ``wake_at`` (epoch) or a wake-up."""
    db.execute(
        "select durable._suspend($1, $2, $3, $4)",
        ["uuid", "text", "double precision", "text"],
        [run_id, status, wake_at, waiting_for],
    )


def wake_if_ready(db: Database, run_id: str, waiting_for: str) -> None:
    """Wake a waiting run whose signal or children arrived while it was suspending."""
    db.execute(
        "select durable._wake_if_ready($1, $2)", ["uuid", "text"], [run_id, waiting_for]
    )


def finish(
    db: Database,
    run: dict[str, Any],
    status: str,
    result_json: str | None,
    error: dict | None,
) -> None:
    """Give a run its final state, and wake its parent if the parent waits."""
    db.execute(
        "select durable._finish($1, $2, $3, $4)",
        ["uuid", "text", "jsonb", "jsonb"],
        [run["id"], status, result_json, None if error is None else json.dumps(error)],
    )


def schedule_retry(db: Database, run: dict[str, Any], wake_at: float, seq: int) -> None:
    """Attempt a failed run again at ``wake_at``, forgetting the step that failed it."""
    db.execute(
        "select durable._schedule_retry($1, $2, $3)",
        ["uuid", "double precision", "integer"],
        [run["id"], wake_at, seq],
    )


def may_resume(db: Database, run: dict[str, Any]) -> dict[str, Any] | None:
    """None when the run's owner may still execute its workflow, else the error.

    Fails closed: a Python workflow is looked up by its exact signature
    ``name(jsonb)``, so a dropped function, or one only overloaded, stops the run;
    a SQL workflow must still be defined.
    """
    row = db.one(
        "select v.kind, f.fn is not null as exists,"
        " coalesce(pg_catalog.has_function_privilege(f.fn, 'execute'), false)"
        " as allowed,"
        " v.kind = 'sql' and exists (select from durable._sql_workflows as w"
        " where w.name = $1) as defined"
        " from durable._workflow_versions as v cross join lateral (select case"
        " when v.kind = 'python' then pg_catalog.to_regprocedure($1 || '(jsonb)')"
        " end as fn) as f where v.id = $2",
        ["text", "bigint"],
        [run["workflow"], run["version_id"]],
    )
    workflow = run["workflow"]
    if row is None or (row["kind"] == "sql" and not row["defined"]):
        return {
            "sqlstate": "42883",
            "message": f'workflow "{workflow}" no longer exists; run {run["id"]}'
            " cannot resume",
            "hint": "Define the workflow again and call durable.retry(), or cancel"
            " the run.",
        }
    if row["kind"] == "sql":
        return None
    if not row["exists"]:
        return {
            "sqlstate": "42883",
            "message": f'workflow function "{workflow}(jsonb)" no longer exists;'
            f" run {run['id']} cannot resume",
            "hint": "Create the function again and call durable.retry(), or cancel"
            " the run.",
        }
    if row["allowed"]:
        return None
    return {
        "sqlstate": "42501",
        "message": f'permission denied to resume workflow "{workflow}"',
        "hint": "The run's owner lost EXECUTE on the workflow function.",
    }


def run_flags(db: Database, run_id: str) -> dict[str, Any]:
    """The flags another session may have set on a running run (cancel, deadline).

    Waits for a durable.cancel() that is still in progress: it interrupts the worker
    before it commits, and holds the run's row lock until then.
    """
    return db.one("select * from durable._run_flags($1)", ["uuid"], [run_id])


def has_compensations(db: Database, run_id: str) -> bool:
    """True when the run registered compensations that may have to run."""
    return bool(
        db.one(
            "select exists (select from durable._steps where run_id = $1"
            " and kind = 'compensation') as found",
            ["uuid"],
            [run_id],
        )["found"]
    )


def consume_signal(db: Database, run_id: str, name: str, seq: int) -> tuple[bool, Any]:
    """Take the oldest unconsumed signal ``name`` of a run for step ``seq``."""
    row = db.one(
        "select * from durable._consume_signal($1, $2, $3)",
        ["uuid", "text", "integer"],
        [run_id, name, seq],
    )
    if not row["consumed"]:
        return False, None
    return True, decode(row["payload"])


def start_child(
    db: Database, parent_id: str, workflow: str, child_input: Any, options: dict
) -> str:
    """Start a child run of ``parent_id`` (owned by the same role)."""
    row = db.one(
        "select durable._start($1, $2, $3, $4, $5, $6, $7,"
        " pg_catalog.current_schemas(true)) as id",
        ["text", "jsonb", "timestamptz", "text", "text", "integer", "uuid"],
        [
            workflow,
            json.dumps({} if child_input is None else child_input),
            options.get("start_at"),
            options.get("idempotency_key"),
            options.get("queue", "default"),
            options.get("priority", 0),
            parent_id,
        ],
    )
    return str(row["id"])


def pin_branch_version(db: Database, child_id: str) -> None:
    """Make a child run of the same SQL workflow execute its parent's version."""
    db.execute("select durable._pin_branch_version($1)", ["uuid"], [child_id])


def children_state(db: Database, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Status, result and error of child runs, by id."""
    rows = db.execute(
        "select id::text as id, status, result::text as result, error::text as error,"
        " extract(epoch from finished_at)::float8 as finished_at"
        " from durable._runs where id = any($1::uuid[])",
        ["text[]"],
        [list(ids)],
    )
    return {
        row["id"]: {
            "status": row["status"],
            "result": decode(row["result"]),
            "error": decode(row["error"]),
            "finished_at": row["finished_at"],
        }
        for row in rows
    }


def cancel_runs(db: Database, ids: Sequence[str], reason: str) -> None:
    """Cancel runs (as durable.cancel does)."""
    for run_id in ids:
        db.execute("select durable.cancel($1, $2)", ["uuid", "text"], [run_id, reason])


def reclaim_orphans(db: Database) -> int:
    """Put running runs whose worker is gone back in line; returns how many.

    A worker is alive while its backend (pid, start time, role) exists, so a run of
    a worker that ended (kill -9, pg_terminate_backend, crash) is reclaimed at once.
    The interrupted step will count as a failed attempt when the run resumes.
    """
    return db.one("select durable._reclaim_orphans() as n")["n"]


def release_worker_runs(db: Database, worker_id: int, interrupted: bool = True) -> int:
    """Put the runs a worker still holds back in line; returns how many.

    ``interrupted`` counts it as an interrupted attempt (charged to the step the run
    resumes at), for a worker that stops in the middle of a run.
    """
    return db.one(
        "select durable._release_worker_runs($1, $2) as n",
        ["integer", "boolean"],
        [worker_id, interrupted],
    )["n"]


def reset_interruptions(db: Database, run_id: str) -> None:
    """Forget a running run's interrupted attempts once they have been recorded."""
    db.execute("select durable._reset_interruptions($1)", ["uuid"], [run_id])


def publish_step(
    db: Database, worker_id: int, run_id: str, timeout_s: float | None
) -> None:
    """Publish the deadline of the step the worker runs (None: no step timeout)."""
    db.execute(
        "select durable._worker_step($1, $2, $3)",
        ["integer", "uuid", "double precision"],
        [worker_id, run_id, timeout_s],
    )
