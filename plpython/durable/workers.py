"""The worker loop behind ``CALL durable.run_worker()``.

Commits happen only inside this ``CALL``: here, and, while the worker executes a run, in
the workflow context through the same handle. A worker registers itself (its backend's
pid and start time: it is alive while that backend exists), then loops: housekeeping
(reclaim runs of dead workers, enforce step timeouts) about once a second, claim a ready
run, execute it, and poll with a short back-off when nothing is ready. The last write of
a run (its end, or its suspension) commits together with the claim of the next run.

``durable.run_worker`` calls the PL/Python procedure in slices of a few seconds, each
one a ``CALL`` of its own, so that the memory PL/Python keeps for the duration of a
call is freed regularly and each slice loads the engine of the installed version. The
worker keeps its id from slice to slice.

The worker's role holds no write privilege on durable's tables: every write goes
through a SECURITY DEFINER function that acts only on the session user's runs and on
the worker this backend registered (see runs.py).
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from . import runs, scheduler, workflows
from .context import RunAborted, RunCancelled, Suspend, WorkflowContext
from .db import Database
from .errors import RUN_CANCELLED, DurableError, error_info
from .payloads import check_size, decode, encode
from .retry import RETRY_KEYS, RetryPolicy

__all__ = ["execute_run", "housekeeping", "run_worker"]

MIN_POLL = 0.002
HEARTBEAT_EVERY = 5.0
SCHEDULE_RECHECK = 1.0
SLICE_SECONDS = 5.0
QUERY_CANCELED = "57014"


class WorkerState:
    """What one run_worker call keeps: settings, plans, compiled workflows, options."""

    def __init__(self, db: Database, cache: dict, gd: dict, worker_id: int, key: str):
        self.db = db
        self.gd = gd
        self.compiled = cache["workflows"]
        self.worker_id = worker_id
        self.version = key.split("-", 1)[1]
        self.settings = {
            row["key"]: row["value"]
            for row in db.execute("select key, value from durable._settings")
        }
        self.retry_defaults = {
            key: json.loads(self.settings[f"retry.{key}"])
            for key in RETRY_KEYS
            if f"retry.{key}" in self.settings
        }
        self.limits = {
            key: int(self.settings[f"limits.{key}"])
            for key in ("max_payload_bytes", "max_steps_per_run", "max_children")
        }
        self.options: dict[str, dict[str, Any]] = {}
        self.policies: dict[str, RetryPolicy] = {}

    def setting(self, key: str) -> float:
        return float(self.settings[key])

    def workflow_options(self, workflow: str) -> dict[str, Any]:
        """The workflow's registered defaults (read once per slice)."""
        if workflow not in self.options:
            row = self.db.one(
                "select retry::text as retry, max_attempts,"
                " extract(epoch from timeout)::float8 as timeout"
                " from durable._workflow_options"
                " where workflow = $1 and owner = session_user",
                ["text"],
                [workflow],
            )
            self.options[workflow] = {
                "retry": decode(row["retry"]) if row else None,
                "max_attempts": (row["max_attempts"] if row else None) or 1,
                "timeout": row["timeout"] if row else None,
            }
        return self.options[workflow]

    def default_policy(self, workflow: str) -> RetryPolicy:
        """The retry policy of the steps of ``workflow`` that set none of their own
        (built once per slice, like the settings and options it comes from)."""
        if workflow not in self.policies:
            options = self.workflow_options(workflow)
            self.policies[workflow] = RetryPolicy.from_options(
                self.retry_defaults, options["retry"]
            )
        return self.policies[workflow]


def execute_run(state: WorkerState, run: dict[str, Any]) -> tuple | None:
    """Execute one claimed run until it ends or suspends.

    Steps commit as the run goes on; the run's last write (its end, or its retry or
    suspension) is left to the caller to commit, together with its next claim. A run
    without a parent that succeeded is not even written: its id, result and the
    checkpoint of its last step (or None) are returned, for the next claim to write
    them in the same statement.
    """
    db = state.db
    run["worker_id"] = state.worker_id
    options = state.workflow_options(run["workflow"])
    if "undecodable" in run:
        runs.finish(db, run, "failed", None, run["undecodable"])
        return None
    if run["cancel_requested"] and not runs.has_compensations(db, run["id"]):
        runs.finish(db, run, "cancelled", None, run["error"] or _cancelled())
        return None
    refused = runs.may_resume(db, run) if run["resumed"] else None
    if refused is not None:
        runs.finish(db, run, "failed", None, refused)
        return None
    try:
        checkpoints = runs.load_checkpoints(db, run["id"]) if run["resumed"] else {}
    except (ValueError, RecursionError) as exc:
        runs.finish(db, run, "failed", None, runs.undecodable(run, "checkpoints", exc))
        return None
    deadline = None
    if options["timeout"]:
        deadline = run["started_at"] + options["timeout"]
    retry_layers = [state.retry_defaults, options["retry"]]
    wf = WorkflowContext(
        db,
        run,
        checkpoints,
        retry_layers,
        deadline,
        state.limits,
        state.default_policy(run["workflow"]),
    )
    try:
        workflow = workflows.load(db, state.compiled, run["version_id"], state.gd)
        output = workflow(wf, run["input"])
        what = f"the result of workflow {run['workflow']}"
        result_json = check_size(
            encode(output, what), what, state.limits["max_payload_bytes"]
        )
    except Suspend as suspend:
        wf.settle()
        runs.suspend(
            db, run["id"], suspend.status, suspend.wake_at, suspend.waiting_for
        )
        db.commit()
        if suspend.waiting_for:
            runs.wake_if_ready(db, run["id"], suspend.waiting_for)
    except RunCancelled:
        _end(db, wf, run, "cancelled", run["error"] or _cancelled())
    except RunAborted as aborted:
        _end(db, wf, run, "failed", error_info(aborted.error))
    except Exception as exc:
        _failed(state, wf, run, options, exc)
    else:
        if not run["parent_id"]:
            return run["id"], result_json, wf.last_checkpoint()
        wf.settle()
        runs.finish(db, run, "succeeded", result_json, None)
    return None


def _failed(
    state: WorkerState,
    wf: WorkflowContext,
    run: dict[str, Any],
    options: dict[str, Any],
    exc: Exception,
) -> None:
    """The workflow raised: attempt the whole run again, or end it as failed."""
    db = state.db
    wf.rollback()
    error = error_info(exc)
    if error.get("sqlstate") == QUERY_CANCELED:
        flags = runs.run_flags(db, run["id"])
        if flags["cancel_requested"]:
            _end(db, wf, run, "cancelled", _cancelled())
            return
    policy = RetryPolicy.from_options(
        state.retry_defaults,
        options["retry"],
        {"max_attempts": options["max_attempts"]},
    )
    if policy.retryable(error, run["attempt"]):
        wake_at = time.time() + policy.delay(run["attempt"], random.random())
        runs.schedule_retry(db, run, wake_at, error.get("seq", 0))
        return
    _end(db, wf, run, "failed", error)


def _end(
    db: Database, wf: WorkflowContext, run: dict[str, Any], status: str, error: dict
) -> None:
    """Finish a run that failed or was cancelled, after its compensations."""
    wf.rollback()
    wf.compensate()
    runs.finish(db, run, status, None, error)


def _cancelled() -> dict[str, Any]:
    return {"sqlstate": RUN_CANCELLED, "message": "cancelled"}


def housekeeping(state: WorkerState) -> bool:
    """Reclaim runs of dead workers, interrupt steps past their timeout, and purge
    one batch of finished runs older than the retention (each in a short
    transaction). Returns False when the extension was updated to another version
    than this engine's, so that the worker loads the new engine."""
    db = state.db
    installed = db.one(
        "select extversion from pg_catalog.pg_extension where extname = 'durable'"
    )
    if installed is None or installed["extversion"] != state.version:
        return False
    reclaimed = runs.reclaim_orphans(db)
    if reclaimed:
        db.log(f"durable worker: reclaimed {reclaimed} run(s) of ended workers")
    db.execute(
        "select durable._purge_batch($1::interval, $2::integer)",
        ["text", "text"],
        [state.settings["retention"], state.settings["retention.batch_size"]],
    )
    db.commit()
    db.execute(
        "select durable._interrupt_overdue_steps($1)",
        ["double precision"],
        [state.setting("step.terminate_after")],
    )
    db.commit()
    return True


def _fire_schedules(state: WorkerState) -> float:
    """Fire due schedules; the monotonic time at which to look again (within 1s)."""
    earliest = scheduler.fire_due(state.db, state.db.plans, state.settings)
    wait = SCHEDULE_RECHECK
    if earliest is not None:
        wait = min(wait, max(0.0, earliest - time.time()))
    return time.monotonic() + wait


def _runtime_budget(db: Database, max_runtime: str | None, margin: float) -> float:
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
        cap = max(timeout_ms / 1000.0 - margin, timeout_ms / 2000.0)
        if cap < requested:
            db.log(
                f"durable worker: max_runtime lowered from {requested:g}s to {cap:g}s"
                f" to stay under statement_timeout ({timeout_ms:g}ms)"
            )
            requested = cap
    return requested


def _register(db: Database, queue: str | None) -> tuple[int, str]:
    """Register this backend as a worker.

    Returns the worker id and its role: the session user, whose runs it executes.
    """
    row = db.one(
        "select id, role::text from durable._worker_register($1)", ["text"], [queue]
    )
    return row["id"], row["role"]


def _unregister(db: Database, worker_id: int) -> None:
    db.execute("select durable._worker_unregister($1)", ["integer"], [worker_id])


def _restore_role(db: Database, role: str) -> bool:
    """Undo a step's SET ROLE or SET SESSION AUTHORIZATION; True if it did.

    The claim only returns a run while the worker is its own role again, so this
    check runs only when a claim found nothing.
    """
    same = db.one(
        "select current_user = $1 and session_user = $1 as same", ["name"], [role]
    )["same"]
    if not same:
        db.execute("reset session authorization")
        db.execute("reset role")
    return not same


def _heartbeat(db: Database, worker_id: int) -> None:
    db.execute("select durable._worker_heartbeat($1)", ["integer"], [worker_id])


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
    plpy: Any,
    gd: dict,
    key: str,
    queue: str | None,
    max_runtime: str | None,
    drain: bool,
    slice_state: str | None = None,
) -> str | None:
    """Execute ready runs owned by session_user for one slice of the worker's time.

    ``slice_state`` is None on the first slice, then what the previous slice
    returned. Returns None when the worker is done, a JSON document to pass to the
    next slice, or a JSON document ``{"error": ...}`` that durable.run_worker()
    raises (so that the client sees a clean PostgreSQL error with its SQLSTATE and
    hint).
    """
    cache = gd.setdefault(f"{key}:cache", {"plans": {}, "workflows": {}})
    db = Database(plpy, cache["plans"])
    try:
        state = _work(db, cache, gd, key, queue, max_runtime, drain, slice_state)
    except Exception as exc:
        error = error_info(exc)
        error.pop("traceback", None)
        if not isinstance(exc, DurableError):
            error["message"] = f"durable worker: {error['message']}"
        return json.dumps({"error": error})
    return None if state is None else json.dumps(state)


def _work(
    db: Database,
    cache: dict,
    gd: dict,
    key: str,
    queue: str | None,
    max_runtime: str | None,
    drain: bool,
    slice_state: str | None,
) -> dict | None:
    """One slice of the worker loop; the state for the next slice, or None."""
    _begin(db)
    resumed = json.loads(slice_state) if slice_state else None
    if resumed is None:
        worker_id, role = _register(db, queue)
    else:
        worker_id, role = resumed["worker_id"], resumed["role"]
    state = WorkerState(db, cache, gd, worker_id, key)
    if resumed is None:
        margin = state.setting("worker.statement_timeout_margin")
        deadline = time.monotonic() + _runtime_budget(db, max_runtime, margin)
        timers = {"housekeeping": 0.0, "schedules": 0.0}
        timers["heartbeat"] = time.monotonic() + HEARTBEAT_EVERY
    else:
        deadline, timers = resumed["deadline"], resumed["timers"]
    slice_end = min(deadline, time.monotonic() + SLICE_SECONDS)
    db.commit()
    done = True
    try:
        done = _loop(state, role, queue, drain, slice_end, timers)
        done = done or time.monotonic() >= deadline
    finally:
        db.rollback()
        if done:
            _unregister(db, worker_id)
        db.commit()
    if done:
        return None
    return {
        "worker_id": worker_id,
        "role": role,
        "deadline": deadline,
        "timers": timers,
    }


def _loop(
    state: WorkerState,
    role: str,
    queue: str | None,
    drain: bool,
    slice_end: float,
    timers: dict[str, float],
) -> bool:
    """Claim and execute runs until ``slice_end``; True when the worker is done
    (drained), False when it should go on in a new slice."""
    db = state.db
    poll_interval = state.setting("worker.poll_interval")
    housekeeping_every = state.setting("worker.housekeeping_interval")
    pause = MIN_POLL
    succeeded = None  # a run to finish with the next claim
    while time.monotonic() < slice_end:
        try:
            if time.monotonic() >= timers["housekeeping"]:
                _commit_finished(db, succeeded)
                succeeded = None
                if not housekeeping(state):
                    return False  # the extension was updated: a new slice loads it
                timers["housekeeping"] = time.monotonic() + housekeeping_every
            if time.monotonic() >= timers["schedules"]:
                _commit_finished(db, succeeded)
                succeeded = None
                timers["schedules"] = _fire_schedules(state)
            # The claim commits with the last write of the run executed before it,
            # and finishes that run if it succeeded.
            run = runs.claim(db, state.worker_id, queue, succeeded)
            succeeded = None
            db.commit()
            if run is not None:
                succeeded = execute_run(state, run)
                pause = MIN_POLL
                continue
            if _restore_role(db, role):
                db.commit()
                continue
            if drain:
                return True
            if time.monotonic() >= timers["heartbeat"]:
                _heartbeat(db, state.worker_id)
                db.commit()
                timers["heartbeat"] = time.monotonic() + HEARTBEAT_EVERY
        except Exception as exc:
            if error_info(exc).get("sqlstate") != QUERY_CANCELED:
                raise
            if not _cancel_arrived_late(state):
                raise  # pg_cancel_backend() of the worker: it stops
            succeeded = None
            continue
        time.sleep(max(0.0, min(pause, slice_end - time.monotonic())))
        pause = min(pause * 2, poll_interval)
    _commit_finished(db, succeeded)
    return False


def _cancel_arrived_late(state: WorkerState) -> bool:
    """Recover from a durable.cancel() interrupt outside a step; False when the
    interrupt did not come from durable.cancel().

    durable.cancel() interrupts the worker of each run it cancels. When the worker
    is past the run's steps, writing the run's end, it waits for the run row that
    the cancel holds and gets the interrupt there. The transaction is rolled back
    and the run is put back in line, without counting an interruption: its next
    execution replays its checkpoints and ends it as cancelled.
    """
    db = state.db
    db.rollback()
    cancelled = db.one(
        "select durable._cancel_arrived($1) as cancelled",
        ["integer"],
        [state.worker_id],
    )["cancelled"]
    db.commit()
    return bool(cancelled)


def _commit_finished(db: Database, succeeded: tuple | None) -> None:
    """Commit what the last run left, finishing it if it succeeded."""
    if succeeded is not None:
        run_id, result_json, checkpoint = succeeded
        if checkpoint is not None:
            runs.save_step(db, run_id, *checkpoint, new=True)
        runs.finish(db, {"id": run_id}, "succeeded", result_json, None)
    db.commit()
