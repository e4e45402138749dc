"""Run and step rows: claiming a ready run, checkpoints, and a run's final state.

Every function here runs in the caller's current transaction and never commits; the
worker loop decides when to commit.
"""

from __future__ import annotations

import json
from typing import Any

from .db import Database
from .payloads import decode

__all__ = [
    "claim",
    "fail",
    "load_checkpoints",
    "record_step",
    "release_worker_runs",
    "succeed",
]

READY = (
    "r.status in ('pending', 'sleeping', 'waiting') and r.wake_at <= pg_catalog.now()"
)

CLAIM = """
with next_run as (
    select r.id, r.started_at is not null as resumed
    from durable._runs as r
    where r.owner = session_user and {ready} {queue_filter}
    order by r.priority desc, r.wake_at
    limit 1
    for update skip locked
)
update durable._runs as r
set status = 'running',
    worker_id = $1,
    started_at = coalesce(r.started_at, pg_catalog.now())
from next_run
where r.id = next_run.id
returning r.id, r.workflow, r.version_id, r.input::text as input, r.attempt,
    next_run.resumed
"""

CLAIM_ANY_QUEUE = CLAIM.format(ready=READY, queue_filter="")
CLAIM_ONE_QUEUE = CLAIM.format(ready=READY, queue_filter="and r.queue = $2")


def claim(db: Database, worker_id: int, queue: str | None) -> dict[str, Any] | None:
    """Mark the best ready run as running on this worker and return it (or None)."""
    if queue is None:
        row = db.one(CLAIM_ANY_QUEUE, ["integer"], [worker_id])
    else:
        row = db.one(CLAIM_ONE_QUEUE, ["integer", "text"], [worker_id, queue])
    if row is None:
        return None
    run = dict(row)
    run["input"] = decode(run["input"])
    return run


def load_checkpoints(db: Database, run_id: str) -> dict[int, dict[str, Any]]:
    """All checkpoints of a run, by sequence number (one query)."""
    rows = db.execute(
        "select seq, name, status, output::text as output, error::text as error"
        " from durable._steps where run_id = $1",
        ["uuid"],
        [run_id],
    )
    return {row["seq"]: row for row in rows}


def record_step(
    db: Database,
    run_id: str,
    seq: int,
    name: str,
    kind: str,
    status: str,
    output_json: str | None,
    error: dict | None,
    started_at: float,
) -> None:
    """Write the checkpoint of one step (it commits with the step's own work)."""
    db.execute(
        "insert into durable._steps"
        " (run_id, seq, name, kind, status, output, error, started_at, finished_at)"
        " values ($1, $2, $3, $4, $5, $6, $7, pg_catalog.to_timestamp($8),"
        " pg_catalog.clock_timestamp())",
        [
            "uuid",
            "integer",
            "text",
            "text",
            "text",
            "jsonb",
            "jsonb",
            "double precision",
        ],
        [
            run_id,
            seq,
            name,
            kind,
            status,
            output_json,
            None if error is None else json.dumps(error),
            started_at,
        ],
    )


def succeed(db: Database, run_id: str, result_json: str) -> None:
    """Mark a run succeeded with its result."""
    db.execute(
        "update durable._runs set status = 'succeeded', result = $2, error = null,"
        " worker_id = null, wake_at = null, finished_at = pg_catalog.clock_timestamp()"
        " where id = $1",
        ["uuid", "jsonb"],
        [run_id, result_json],
    )


def fail(db: Database, run_id: str, error: dict[str, Any]) -> None:
    """Mark a run failed with its error document."""
    db.execute(
        "update durable._runs set status = 'failed', error = $2, worker_id = null,"
        " wake_at = null, finished_at = pg_catalog.clock_timestamp() where id = $1",
        ["uuid", "jsonb"],
        [run_id, json.dumps(error)],
    )


def release_worker_runs(db: Database, worker_id: int) -> int:
    """Put the runs a worker still holds back in line; returns how many."""
    rows = db.execute(
        "update durable._runs set worker_id = null, wake_at = pg_catalog.now(),"
        " status = 'pending' where worker_id = $1 and status = 'running' returning id",
        ["integer"],
        [worker_id],
    )
    return rows.nrows()
