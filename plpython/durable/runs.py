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
from .payloads import decode

__all__ = [
    "WORKER_LOCK_CLASS",
    "cancel_runs",
    "children_state",
    "claim",
    "consume_signal",
    "finish",
    "has_compensations",
    "load_checkpoints",
    "may_resume",
    "pin_version",
    "reclaim_orphans",
    "record_attempt",
    "release_worker_runs",
    "run_flags",
    "save_step",
    "schedule_retry",
    "start_child",
    "suspend",
    "wake_if_ready",
]

# Advisory lock (WORKER_LOCK_CLASS, worker id) is held by each live worker.
# Worker-side timestamps are the clock's: inside the worker's CALL, now() is the start
# of the current transaction (which begins right after the previous commit, before an
# idle pause) and statement_timestamp() the start of the whole CALL. The claim takes
# the time as a parameter ($3), so that the index can still use it.
WORKER_LOCK_CLASS = 1146442306

READY = (
    "r.status in ('pending', 'sleeping', 'waiting')"
    " and r.wake_at <= pg_catalog.to_timestamp($3)"
)

SAVE_STEP = (
    "insert into durable._steps as s (run_id, seq, name, kind, status, attempts,"
    " output, error, started_at, finished_at) values ($1, $2, $3, $4, $5, $6, $7,"
    " $8, pg_catalog.to_timestamp($9), pg_catalog.clock_timestamp())"
)
SAVE_STEP_AGAIN = (
    SAVE_STEP + " on conflict (run_id, seq) do update set status = excluded.status,"
    " attempts = excluded.attempts, output = excluded.output,"
    " error = excluded.error, finished_at = excluded.finished_at"
)
SAVE_STEP_TYPES = (
    "uuid", "integer", "text", "text", "text", "integer", "jsonb", "jsonb",
    "double precision",
)  # fmt: skip

# The claim can also finish the run executed before it ($5 its result, $6 its id), in
# the same statement, and write the checkpoint of its last step ($7 to $14, as
# save_step): a succeeded run without a parent needs nothing else.
SAVE_LAST_STEP = """
saved as (
    insert into durable._steps (
        run_id, seq, name, kind, status, attempts, output, error, started_at,
        finished_at
    )
    values (
        $6, $7, $8, $9, $10, $11, $12, $13, pg_catalog.to_timestamp($14),
        pg_catalog.clock_timestamp()
    )
),
"""

FINISH_SUCCEEDED = """
finished as (
    update durable._runs
    set status = 'succeeded', result = $5, error = null, worker_id = null,
        wake_at = null, waiting_for = null,
        finished_at = pg_catalog.clock_timestamp()
    where id = $6
),
"""

CLAIM = """
with {finish}next_run as (
    select r.id, r.started_at is not null as resumed
    from durable._runs as r
    where r.owner = $2 and {ready} {queue_filter}
        and current_user = $2 and session_user = $2
    order by r.priority desc, r.wake_at
    limit 1
    for update skip locked
)
update durable._runs as r
set status = 'running',
    worker_id = $1,
    waiting_for = null,
    started_at = coalesce(r.started_at, pg_catalog.clock_timestamp())
from next_run
where r.id = next_run.id
returning r.id, r.workflow, r.version_id, r.input::text as input, r.attempt,
    next_run.resumed, r.cancel_requested, r.interruptions, r.parent_id, r.queue,
    r.error::text as error, extract(epoch from r.started_at)::float8 as started_at
"""

CLAIMS = {
    (finish, save, queue): CLAIM.format(
        finish=(SAVE_LAST_STEP if save else "") + (FINISH_SUCCEEDED if finish else ""),
        ready=READY,
        queue_filter="and r.queue = $4" if queue else "",
    )
    for finish in (False, True)
    for save in (False, True)
    for queue in (False, True)
    if finish or not save
}
CLAIM_TYPES = [
    "integer", "name", "double precision", "text", "jsonb", "uuid",
    *SAVE_STEP_TYPES[1:],
]  # fmt: skip

# A worker is alive while it holds its advisory lock in this database.
WORKER_ALIVE = f"""
exists (
    select from pg_catalog.pg_locks as l
    where l.locktype = 'advisory' and l.granted and l.objsubid = 2
        and l.database = (
            select d.oid from pg_catalog.pg_database as d
            where d.datname = pg_catalog.current_database()
        )
        and l.classid = {WORKER_LOCK_CLASS} and l.objid = {{worker}}::oid
)
"""


def claim(
    db: Database,
    worker_id: int,
    role: str,
    queue: str | None,
    succeeded: tuple | None = None,
) -> dict[str, Any] | None:
    """Mark the best ready run of ``role`` as running on this worker (or None).

    ``succeeded`` is ``(id, result JSON, checkpoint or None)`` of a run without a
    parent that this worker just executed: the same statement writes the checkpoint
    of its last step (a new row, as save_step takes it) and finishes it. The claim
    finds nothing while the session is not ``role`` (a step's SET ROLE that the
    worker has not undone yet).
    """
    args = [worker_id, role, time.time(), queue]
    checkpoint = None
    if succeeded is not None:
        run_id, result_json, checkpoint = succeeded
        args += [result_json, run_id]
        if checkpoint is not None:
            args += list(checkpoint)
    sql = CLAIMS[(succeeded is not None, checkpoint is not None, queue is not None)]
    row = db.one(sql, CLAIM_TYPES[: len(args)], args)
    if row is None:
        return None
    run = dict(row)
    run["input"] = decode(run["input"])
    run["error"] = decode(run["error"])
    run["id"] = str(run["id"])
    return run


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
        SAVE_STEP if new else SAVE_STEP_AGAIN,
        SAVE_STEP_TYPES,
        [
            run_id, seq, name, kind, status, attempts, output_json, error_json,
            started_at,
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
        "insert into durable._step_attempts"
        " (run_id, seq, run_attempt, attempt, name, error, started_at, finished_at)"
        " values ($1, $2, $3, $4, $5, $6, pg_catalog.to_timestamp($7),"
        " pg_catalog.clock_timestamp()) on conflict do nothing",
        ["uuid", "integer", "integer", "integer", "text", "jsonb", "double precision"],
        [run["id"], seq, run["attempt"], attempt, name, json.dumps(error), started_at],
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
        "update durable._runs set status = $2, worker_id = null, waiting_for = $4,"
        " interruptions = 0,"
        " wake_at = case when $3 is null then null else pg_catalog.to_timestamp($3) end"
        " where id = $1",
        ["uuid", "text", "double precision", "text"],
        [run_id, status, wake_at, waiting_for],
    )


def wake_if_ready(db: Database, run_id: str, waiting_for: str) -> None:
    """Wake a waiting run whose signal or children arrived while it was suspending.

    Runs after the suspension committed, so it sees every signal or child that
    committed before; anything committing later wakes the run itself.
    """
    if waiting_for.startswith("signal:"):
        condition = (
            "exists (select from durable._signals as s where s.run_id = r.id"
            " and s.name = substr(r.waiting_for, 8) and s.consumed_seq is null)"
        )
    else:
        condition = (
            "exists (select from durable._runs as c where c.parent_id = r.id"
            " and c.status in ('succeeded', 'failed', 'cancelled')"
            " and c.id = any(string_to_array(substr(r.waiting_for, 10), ',')::uuid[]))"
        )
    db.execute(
        "update durable._runs as r set wake_at = pg_catalog.clock_timestamp()"
        f" where r.id = $1 and r.status = 'waiting' and {condition}",
        ["uuid"],
        [run_id],
    )


def finish(
    db: Database,
    run: dict[str, Any],
    status: str,
    result_json: str | None,
    error: dict | None,
) -> None:
    """Give a run its final state, and wake its parent if the parent waits."""
    if run.get("parent_id"):
        # Always lock the parent row: a parent moving to "waiting" at this moment then
        # waits for this commit and sees the child finished when it looks again. The
        # parent is locked before the child, in the order durable.cancel() locks a
        # tree, so that the two cannot deadlock.
        db.execute(
            "update durable._runs set wake_at = case when status = 'waiting'"
            " then pg_catalog.clock_timestamp() else wake_at end where id = $1",
            ["uuid"],
            [run["parent_id"]],
        )
    db.execute(
        "update durable._runs set status = $2, result = $3, error = $4,"
        " worker_id = null, wake_at = null, waiting_for = null,"
        " finished_at = pg_catalog.clock_timestamp() where id = $1",
        ["uuid", "text", "jsonb", "jsonb"],
        [run["id"], status, result_json, None if error is None else json.dumps(error)],
    )


def schedule_retry(db: Database, run: dict[str, Any], wake_at: float, seq: int) -> None:
    """Attempt a failed run again at ``wake_at``, forgetting the step that failed it."""
    db.execute(
        "delete from durable._steps"
        " where run_id = $1 and seq = $2 and status = 'failed'",
        ["uuid", "integer"],
        [run["id"], seq],
    )
    db.execute(
        "update durable._runs set status = 'sleeping', attempt = attempt + 1,"
        " worker_id = null, interruptions = 0,"
        " wake_at = pg_catalog.to_timestamp($2) where id = $1",
        ["uuid", "double precision"],
        [run["id"], wake_at],
    )


def may_resume(db: Database, workflow: str) -> bool:
    """True unless the workflow is a function the worker's role may not execute."""
    return bool(
        db.one(
            "select coalesce(pg_catalog.has_function_privilege("
            "pg_catalog.to_regproc($1), 'execute'), true) as allowed",
            ["text"],
            [workflow],
        )["allowed"]
    )


def run_flags(db: Database, run_id: str) -> dict[str, Any]:
    """The flags another session may have set on a running run (cancel, deadline).

    FOR SHARE waits for a durable.cancel() that is still in progress: it interrupts
    the worker before it commits, and holds the run's row lock until then.
    """
    return db.one(
        "select r.cancel_requested,"
        " coalesce(w.step_deadline < pg_catalog.clock_timestamp(), false) as timed_out"
        " from durable._runs as r left join durable._workers as w on w.id = r.worker_id"
        " where r.id = $1 for share of r",
        ["uuid"],
        [run_id],
    )


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
        "update durable._signals set consumed_seq = $3 where id = ("
        " select id from durable._signals where run_id = $1 and name = $2"
        " and consumed_seq is null order by id limit 1)"
        " returning payload::text as payload",
        ["uuid", "text", "integer"],
        [run_id, name, seq],
    )
    if row is None:
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


def pin_version(db: Database, run_id: str, version_id: int) -> None:
    """Make a run execute one particular version of its workflow."""
    db.execute(
        "update durable._runs set version_id = $2, original_version_id = $2"
        " where id = $1",
        ["uuid", "bigint"],
        [run_id, version_id],
    )


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

    A worker holds its advisory lock for life, so a missing lock means the backend
    ended (kill -9, pg_terminate_backend, crash). The interrupted step will count
    as a failed attempt when the run resumes.
    """
    rows = db.execute(
        "update durable._runs as r set status = 'pending', worker_id = null,"
        " wake_at = pg_catalog.clock_timestamp(),"
        " interruptions = r.interruptions + 1"
        " where r.status = 'running' and not "
        + WORKER_ALIVE.format(worker="r.worker_id")
        + " returning r.id"
    )
    db.execute(
        "delete from durable._workers as w where not "
        + WORKER_ALIVE.format(worker="w.id")
    )
    return rows.nrows()


def release_worker_runs(db: Database, worker_id: int, interrupted: bool = True) -> int:
    """Put the runs a worker still holds back in line; returns how many.

    ``interrupted`` counts it as an interrupted attempt (charged to the step the run
    resumes at), for a worker that stops in the middle of a run.
    """
    rows = db.execute(
        "update durable._runs set worker_id = null,"
        " wake_at = pg_catalog.clock_timestamp(),"
        " status = 'pending', interruptions = interruptions + $2::integer"
        " where worker_id = $1 and status = 'running' returning id",
        ["integer", "boolean"],
        [worker_id, interrupted],
    )
    return rows.nrows()
