"""The workflow context ``wf``: what a workflow body calls to do durable work.

Replay bookkeeping: every durable call (a step, a timer, a signal wait, children, a
recorded value, a compensation) takes the next position (``seq``) of the run. A position
that has a checkpoint returns its recorded outcome without doing the work again; the
name at a position must be the one recorded there, or the workflow is nondeterministic.
New work runs in the current transaction and commits together with its checkpoint.

A step's transaction commits when the workflow reaches its next durable call, or
together with the run's suspension or end (and the worker's claim of its next run), so
a 1-step run costs one commit. If the workflow raises before that commit, or its worker
dies, the step is rolled back with everything else since the last commit and runs again
on the run's next attempt: its database effects still commit exactly once. (PL/Python
15 leaks a little memory for every ``plpy.subtransaction()``, so the code after a step
is not given a subtransaction of its own.)
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Callable

from . import alarm, definitions, runs
from .db import Database
from .durations import format_duration, parse_duration
from .errors import (
    CHILD_FAILED,
    NONDETERMINISTIC,
    STEP_TIMEOUT,
    WAIT_TIMEOUT,
    WORKER_LOST,
    WORKFLOW_TIMEOUT,
    ChildFailed,
    DurableError,
    LimitExceeded,
    StepFailed,
    WaitTimeout,
    error_info,
    recorded_failure,
)
from .payloads import check_size, decode, encode
from .retry import RetryPolicy
from .steps import run_sql

__all__ = ["RunAborted", "RunCancelled", "Suspend", "WorkflowContext"]

INVALID_PARAMETER = "22023"
QUERY_CANCELED = "57014"
FINISHED = ("succeeded", "failed", "cancelled")


class Suspend(BaseException):
    """Unwinds a workflow that must wait; the worker parks the run."""

    def __init__(self, status: str, wake_at: float | None, waiting_for: str | None):
        super().__init__(status)
        self.status = status
        self.wake_at = wake_at
        self.waiting_for = waiting_for


class RunAborted(BaseException):
    """Ends a run as failed; a BaseException so that workflow code cannot swallow it."""

    def __init__(self, error: DurableError):
        super().__init__(str(error))
        self.error = error


class RunCancelled(BaseException):
    """Stops a run whose cancellation was requested (at a step boundary)."""


class _StepTimedOut(Exception):
    """The step's own timer fired: the attempt failed with the step timeout."""

    sqlstate = QUERY_CANCELED

    def __init__(self) -> None:
        super().__init__("canceling statement due to the step timeout")


class WorkflowContext:
    """The ``wf`` global of a running workflow (one instance per execution)."""

    def __init__(
        self,
        db: Database,
        run: dict[str, Any],
        checkpoints: dict[int, dict],
        retry_defaults: Sequence[dict | None],
        deadline: float | None,
        limits: dict[str, int],
        policy: RetryPolicy | None = None,
    ):
        self._db = db
        self._run = run
        self._checkpoints = checkpoints
        self._retry_defaults = list(retry_defaults)
        self._deadline = deadline
        self._limits = limits
        self._seq = 0
        self._uncommitted: list[tuple] = []
        self._step_to_commit = False
        self._unwritten: tuple | None = None  # the step's checkpoint, not yet written
        self._policy = policy
        self.compensations: list[tuple] = []
        self.run_id: str = run["id"]
        self.workflow: str = run["workflow"]
        self.input: Any = run["input"]
        self.attempt: int = run["attempt"]
        self.step_key: str | None = None

    # ------------------------------------------------------------------ steps

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
        value, as JSON gives it back. A step that already has a checkpoint returns
        its recorded value (or raises its recorded failure) without running.
        """
        _check_name(name, "step")
        seq, recorded = self._position(name)
        if recorded is not None and recorded["status"] != "retrying":
            return self._replayed(name, recorded)
        policy = self._retry_policy(retry)
        timeout_s = None if timeout is None else parse_duration(timeout, "step timeout")
        attempt = (recorded["attempts"] if recorded else 0) + 1
        self._boundary()
        kind = "sql" if isinstance(action, str) else "python"
        attempt = self._count_interruptions(seq, name, kind, attempt, policy)
        if timeout_s is not None:
            self._set_step_deadline(timeout_s)
        started_at = time.time()
        self.step_key = f"{self.run_id}:{seq}"
        try:
            output = self._perform_timed(name, action, args, kwargs, timeout_s)
            what = f'the result of step "{name}"'
            output_json = check_size(
                encode(output, what), what, self._limits["max_payload_bytes"]
            )
        except Exception as exc:
            error = self._interrupted_error(exc, name, timeout_s)
            self._step_failed(seq, name, kind, attempt, error, started_at, policy)
        finally:
            self.step_key = None
        output = decode(output_json)
        self._save(
            seq, name, kind, "succeeded", output, None, attempt, started_at,
            output_json, defer=True,
        )  # fmt: skip
        if timeout_s is not None:
            self._set_step_deadline(None)
        self._step_to_commit = True
        return output

    def _retry_policy(self, retry: dict | None) -> RetryPolicy:
        """The step's policy: its own options over the workflow's and the settings."""
        if retry is not None:
            return RetryPolicy.from_options(*self._retry_defaults, retry)
        if self._policy is None:
            self._policy = RetryPolicy.from_options(*self._retry_defaults)
        return self._policy

    def _perform(self, name: str, action: Any, args: tuple, kwargs: dict) -> Any:
        if isinstance(action, str):
            if len(args) > 1 or kwargs:
                raise DurableError(
                    f'step "{name}": a SQL step takes one list of parameters',
                    sqlstate=INVALID_PARAMETER,
                    hint="wf.step(name, sql, [value1, value2, ...])",
                )
            return run_sql(self._db, name, action, args[0] if args else None)
        if callable(action):
            return action(*args, **kwargs)
        raise DurableError(
            f'step "{name}": expected SQL text or a callable,'
            f" not {type(action).__name__}",
            sqlstate=INVALID_PARAMETER,
            hint="wf.step(name, 'SELECT ...', [params]) or wf.step(name, fn, *args)",
        )

    def _perform_timed(
        self,
        name: str,
        action: Any,
        args: tuple,
        kwargs: dict,
        timeout_s: float | None,
    ) -> Any:
        """Perform the step under its own timer when it has a timeout.

        The timer cancels the step's statement at the deadline (durable.alarm). Once
        it has fired the attempt is a timeout, whatever the step did afterwards:
        the statement failed with 57014, or a Python step caught that, failed in
        another way, or returned after its deadline without a database call.
        """
        timer = None if timeout_s is None else alarm.arm(timeout_s)
        try:
            output = self._perform(name, action, args, kwargs)
        except Exception:
            if self._timer_fired(timer):
                raise _StepTimedOut() from None
            raise
        except BaseException:
            self._timer_fired(timer)
            raise
        if self._timer_fired(timer):
            raise _StepTimedOut()
        return output

    def _timer_fired(self, timer: alarm.StepAlarm | None) -> bool:
        """Stop the step's timer; True if it fired, its interrupt then taken here
        so that it cannot cancel a later statement of the worker."""
        if timer is None or not timer.disarm():
            return False
        alarm.absorb_cancel(self._db)
        return True

    def _interrupted_error(
        self, exc: Exception, name: str, timeout_s: float | None
    ) -> dict[str, Any]:
        """Roll the step back and describe its failure (timeouts and cancels too)."""
        self._rollback()
        error = error_info(exc)
        if error.get("sqlstate") == QUERY_CANCELED:
            flags = runs.run_flags(self._db, self.run_id)
            if flags["cancel_requested"]:
                raise RunCancelled() from None
            timed_out = isinstance(exc, _StepTimedOut) or flags["timed_out"]
            if timed_out and timeout_s is not None:
                error = {
                    "sqlstate": STEP_TIMEOUT,
                    "message": f'step "{name}" timed out after'
                    f" {format_duration(timeout_s)}",
                    "hint": "Give the step a longer timeout, or make it faster.",
                }
        if timeout_s is not None:
            self._set_step_deadline(None)
        return error

    def _step_failed(
        self,
        seq: int,
        name: str,
        kind: str,
        attempt: int,
        error: dict[str, Any],
        started_at: float,
        policy: RetryPolicy,
    ) -> None:
        """Record a failed attempt; retry later, or fail the step for good."""
        runs.record_attempt(self._db, self._run, seq, attempt, name, error, started_at)
        error = {**error, "seq": seq, "attempt": attempt}
        if policy.retryable(error, attempt):
            self._save(seq, name, kind, "retrying", None, error, attempt, started_at)
            wake_at = time.time() + policy.delay(attempt, random.random())
            raise Suspend("sleeping", self._capped(wake_at), None)  # retry back-off
        self._save(seq, name, kind, "failed", None, error, attempt, started_at)
        self._commit()
        raise StepFailed(name, error) from None

    def _count_interruptions(
        self, seq: int, name: str, kind: str, attempt: int, policy: RetryPolicy
    ) -> int:
        """Count attempts lost with a worker (kill -9, crash) against this step."""
        lost = self._run["interruptions"]
        if not lost:
            return attempt
        self._run["interruptions"] = 0
        runs.reset_interruptions(self._db, self.run_id)
        for _ in range(lost):
            error = {
                "sqlstate": WORKER_LOST,
                "message": f'the worker executing step "{name}" ended before the step'
                " committed (backend terminated or server crash)",
                "seq": seq,
                "attempt": attempt,
            }
            runs.record_attempt(
                self._db, self._run, seq, attempt, name, error, time.time()
            )
            if not policy.retryable(error, attempt):
                self._save(seq, name, kind, "failed", None, error, attempt)
                self._commit()
                raise StepFailed(name, error)
            attempt += 1
        return attempt

    def _set_step_deadline(self, timeout_s: float | None) -> None:
        """Publish (and commit) the deadline of the running step for housekeeping."""
        runs.publish_step(self._db, self._run["worker_id"], self.run_id, timeout_s)
        if timeout_s is not None:
            self._commit()

    # ---------------------------------------------------------------- values

    def now(self) -> datetime:
        """The current time, recorded on first execution and replayed identically."""
        value = self._value("wf.now", time.time)
        return datetime.fromtimestamp(value, timezone.utc)

    def uuid(self) -> str:
        """A random UUID as text, recorded and replayed identically."""
        return self._value("wf.uuid", lambda: str(uuid.uuid4()))

    def random(self) -> float:
        """A random float in [0, 1), recorded and replayed identically."""
        return self._value("wf.random", random.random)

    def _value(self, name: str, produce: Callable[[], Any]) -> Any:
        seq, recorded = self._position(name)
        if recorded is not None:
            return recorded["output"]
        value = produce()
        self._save(seq, name, "value", "succeeded", value)
        return value

    # ---------------------------------------------------------------- timers

    def sleep(self, duration: Any) -> None:
        """Durable timer: the run sleeps for ``duration`` (seconds or an interval)."""
        seconds = parse_duration(duration, "sleep duration")
        self._timer(lambda now: now + seconds)

    def sleep_until(self, moment: Any) -> None:
        """Durable timer: sleep until ``moment`` (a datetime, ISO text, or epoch)."""
        until = _epoch(moment)
        self._timer(lambda now: until)

    def _timer(self, until_from: Callable[[float], float]) -> None:
        seq, recorded = self._position("sleep")
        if recorded is not None and recorded["status"] == "succeeded":
            return
        until = self._wait_until(seq, "sleep", "sleep", recorded, until_from)
        if time.time() >= until:
            self._save(seq, "sleep", "sleep", "succeeded", {"until": until})
            return
        self._suspend("sleeping", until, None)

    # --------------------------------------------------------------- signals

    def wait_for_signal(self, name: str, timeout: Any = None) -> Any:
        """Wait for ``durable.signal(run, name, payload)``; the payload, or None on
        timeout. Each signal is delivered exactly once; early signals are buffered."""
        _check_name(name, "signal")
        seq, recorded = self._position(name)
        if recorded is not None and recorded["status"] == "succeeded":
            return recorded["output"].get("payload")
        until = self._wait_until(
            seq, name, "signal", recorded, _after(timeout, "signal timeout")
        )
        found, payload = runs.consume_signal(self._db, self.run_id, name, seq)
        if found:
            self._save(seq, name, "signal", "succeeded", {"payload": payload})
            self._commit()
            return payload
        if until is not None and time.time() >= until:
            self._save(seq, name, "signal", "succeeded", {"timed_out": True})
            return None
        self._suspend("waiting", until, f"signal:{name}")

    # -------------------------------------------------------------- children

    def start_child(self, workflow: str, input: Any = None, **options: Any) -> str:
        """Start a child run (its id, as text); options as durable.start takes them."""
        name = f"start_child:{workflow}"
        return self._start_children(name, [(workflow, input)], options)[0]

    def wait(self, run_id: str, timeout: Any = None) -> Any:
        """The result of a child run; raises durable.ChildFailed if it failed."""
        return self._await_children(f"wait:{run_id}", [str(run_id)], "all", timeout)[0]

    def parallel(self, calls: Sequence[Any], timeout: Any = None) -> list[Any]:
        """Run each ``(workflow, input)`` as a child and wait for all of them; the
        results in input order. The first failed child raises durable.ChildFailed."""
        ids = self._start_children("parallel", [_call(c) for c in calls], {})
        return self._await_children("parallel:wait", ids, "all", timeout)

    def race(self, calls: Sequence[Any], timeout: Any = None) -> tuple[int, Any]:
        """Run the calls as children; the first to finish wins and the others are
        cancelled. Returns ``(index, result)``; a failed winner raises ChildFailed."""
        ids = self._start_children("race", [_call(c) for c in calls], {})
        return self._await_children("race:wait", ids, "any", timeout)

    def _start_children(
        self, name: str, calls: list[tuple[str, Any]], options: dict
    ) -> list[str]:
        seq, recorded = self._position(name)
        if recorded is not None:
            return recorded["output"]
        self._boundary()
        started = self._db.one(
            "select count(*)::int as n from durable._runs where parent_id = $1",
            ["uuid"],
            [self.run_id],
        )["n"]
        if started + len(calls) > self._limits["max_children"]:
            raise LimitExceeded(
                f"run {self.run_id} of workflow {self.workflow} would have"
                f" {started + len(calls)} child runs, more than"
                f" {self._limits['max_children']}",
                "limits.max_children",
            )
        ids = []
        for workflow, child_input in calls:
            child = runs.start_child(
                self._db, self.run_id, workflow, child_input, options
            )
            if (
                workflow == self.workflow
                and isinstance(child_input, dict)
                and (definitions.BRANCH_KEY in child_input)
            ):
                # A branch of this SQL workflow runs this run's version of it.
                runs.pin_branch_version(self._db, child)
            ids.append(child)
        self._save(seq, name, "start_children", "succeeded", ids)
        self._commit()
        return ids

    def _await_children(
        self, name: str, ids: list[str], mode: str, timeout: Any
    ) -> Any:
        seq, recorded = self._position(name)
        if recorded is not None and recorded["status"] != "waiting":
            return self._replayed(name, recorded)
        until = self._wait_until(
            seq, name, "wait_children", recorded, _after(timeout, "wait timeout")
        )
        states = runs.children_state(self._db, ids)
        finished = [i for i in ids if states.get(i, {}).get("status") in FINISHED]
        if mode == "any" and finished:
            winner = min(
                finished, key=lambda i: (states[i]["finished_at"], ids.index(i))
            )
            losers = [i for i in ids if i not in finished]
            runs.cancel_runs(self._db, losers, f"lost the race to run {winner}")
            index = ids.index(winner)
            self._settle(seq, name, [winner], states, lambda r: [index, r[0]])
            return index, states[winner]["result"]
        if mode == "all" and len(finished) == len(ids):
            return self._settle(seq, name, ids, states, lambda results: results)
        if until is not None and time.time() >= until:
            error = {
                "sqlstate": WAIT_TIMEOUT,
                "message": f"{name}: child runs did not finish in time",
                "raises": "WaitTimeout",
                "seq": seq,
            }
            self._save(seq, name, "wait_children", "failed", None, error)
            self._commit()
            raise WaitTimeout(name, error)
        self._suspend("waiting", until, "children:" + ",".join(ids))

    def _settle(
        self,
        seq: int,
        name: str,
        ids: list[str],
        states: dict,
        output: Callable[[list], Any],
    ) -> Any:
        """Checkpoint finished children (results, or the first failure)."""
        for child in ids:
            state = states[child]
            if state["status"] != "succeeded":
                child_error = state["error"] or {}
                error = {
                    "sqlstate": CHILD_FAILED,
                    "message": f"child run {child} {state['status']}:"
                    f" {child_error.get('message', '')}",
                    "child": child,
                    "child_error": child_error,
                    "raises": "ChildFailed",
                    "seq": seq,
                }
                self._save(seq, name, "wait_children", "failed", None, error)
                self._commit()
                raise ChildFailed(name, error)
        value = output([states[child]["result"] for child in ids])
        self._save(seq, name, "wait_children", "succeeded", value)
        self._commit()
        return value

    # ---------------------------------------------------------- compensation

    def on_failure(
        self, name: str, action: str | Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        """Register a compensation: if the run finally fails or is cancelled, the
        compensations run newest first (SQL text with a parameter list, or a callable).
        """
        _check_name(name, "compensation")
        seq, recorded = self._position(f"on_failure:{name}")
        self.compensations.append((seq, name, action, args, kwargs))
        if recorded is None:
            self._save(seq, f"on_failure:{name}", "compensation", "succeeded", None)

    def compensate(self) -> None:
        """Run the registered compensations, newest first; each commits on its own.

        A compensation that already ran (a checkpoint at minus its position) is
        skipped; one that fails is recorded and the others still run.
        """
        for seq, name, action, args, kwargs in reversed(self.compensations):
            position = -seq
            recorded = self._checkpoints.get(position)
            if recorded is not None and recorded["status"] in ("succeeded", "failed"):
                continue
            kind = "compensate"
            started_at = time.time()
            try:
                output = self._perform(name, action, args, kwargs)
                output = decode(encode(output, f'the result of compensation "{name}"'))
                self._save(
                    position, name, kind, "succeeded", output, None, 1, started_at
                )
            except Exception as exc:
                self._rollback()
                error = error_info(exc)
                self._save(position, name, kind, "failed", None, error, 1, started_at)
            self._commit()

    # ------------------------------------------------------------ internals

    def _position(self, name: str) -> tuple[int, dict | None]:
        """Commit the previous step, number the next durable call and check it
        against its checkpoint."""
        if self._step_to_commit:
            self._commit()
        self._seq += 1
        if self._seq > self._limits["max_steps_per_run"]:
            raise RunAborted(
                LimitExceeded(
                    f"run {self.run_id} of workflow {self.workflow} reached"
                    f" {self._limits['max_steps_per_run']} steps",
                    "limits.max_steps_per_run",
                )
            )
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
        return self._seq, recorded

    def _replayed(self, name: str, recorded: dict) -> Any:
        if recorded["status"] == "failed":
            raise recorded_failure(name, recorded["error"])
        return recorded["output"]

    def _boundary(self) -> None:
        """Checks before new durable work: cancellation and the workflow timeout."""
        if self._run["cancel_requested"]:
            raise RunCancelled()
        if self._deadline is not None and time.time() >= self._deadline:
            raise RunAborted(
                DurableError(
                    f"workflow {self.workflow} timed out",
                    sqlstate=WORKFLOW_TIMEOUT,
                    hint="Raise the timeout with durable.register_workflow().",
                )
            )

    def _wait_until(
        self,
        seq: int,
        name: str,
        kind: str,
        recorded: dict | None,
        until_from: Callable[[float], float | None],
    ) -> float | None:
        """When a wait ends: as recorded, or fixed (and checkpointed) on first reach."""
        if recorded is not None:
            return recorded["output"]["until"]
        self._boundary()
        until = until_from(time.time())
        self._save(seq, name, kind, "waiting", {"until": until})
        return until

    def _suspend(self, status: str, until: float | None, waiting_for: str | None):
        """Park the run, unless it was cancelled or ran out of time meanwhile."""
        self._boundary()
        raise Suspend(status, self._capped(until), waiting_for)

    def _capped(self, wake_at: float | None) -> float | None:
        """Wake no later than the workflow's deadline."""
        if self._deadline is None:
            return wake_at
        return self._deadline if wake_at is None else min(wake_at, self._deadline)

    def _save(
        self,
        seq: int,
        name: str,
        kind: str,
        status: str,
        output: Any,
        error: dict | None = None,
        attempts: int = 1,
        started_at: float | None = None,
        output_json: str | None = None,
        defer: bool = False,
    ) -> None:
        """Write a checkpoint in the current transaction (and remember it locally).

        ``output_json`` is the output already encoded, when the caller has it.
        ``defer`` keeps a step's checkpoint until the transaction is about to
        commit, so that the run's end can write it in the statement of its next claim.
        """
        if output_json is None and output is not None:
            output_json = json.dumps(output)
        row = (
            seq,
            name,
            kind,
            status,
            attempts,
            output_json,
            None if error is None else json.dumps(error),
            started_at or time.time(),
        )
        new = seq not in self._checkpoints
        if defer:
            self._unwritten = (*row, new)
        else:
            runs.save_step(self._db, self.run_id, *row, new=new)
            self._uncommitted.append(row)
        self._checkpoints[seq] = {
            "seq": seq, "name": name, "kind": kind, "status": status,
            "attempts": attempts, "output": output, "error": error,
        }  # fmt: skip

    def last_checkpoint(self) -> tuple | None:
        """Hand over the last step's checkpoint if it is not written yet and is a new
        row (the worker writes it together with the run's end); None otherwise."""
        if self._unwritten is None or not self._unwritten[-1]:
            self._write_checkpoint()
            return None
        row, self._unwritten = self._unwritten[:-1], None
        return row

    def _write_checkpoint(self) -> None:
        """Write the last step's checkpoint if it is still unwritten."""
        if self._unwritten is not None:
            *row, new = self._unwritten
            self._unwritten = None
            runs.save_step(self._db, self.run_id, *row, new=new)

    def rollback(self) -> None:
        """Roll back everything since the last commit, the last step included when
        it has not committed yet (it runs again on the run's next attempt)."""
        self._db.rollback()
        self._unwritten = None
        self._uncommitted.clear()
        self._step_to_commit = False

    def settle(self) -> None:
        """Write the last step's checkpoint: the run is about to suspend or end."""
        self._write_checkpoint()

    def _commit(self) -> None:
        self._write_checkpoint()
        self._db.commit()
        self._uncommitted.clear()
        self._step_to_commit = False

    def _rollback(self) -> None:
        """Roll back a failed step, keeping the checkpoints written before it.

        Recorded values, registered compensations and settled timers share the
        transaction of the step that follows them; they are written again so that
        what the workflow already saw stays what it replays.
        """
        self._db.rollback()
        for row in self._uncommitted:
            runs.save_step(self._db, self.run_id, *row)


def _check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not name:
        raise DurableError(
            f"a {what} name must be a non-empty string",
            sqlstate=INVALID_PARAMETER,
            hint=f'Name every {what}: wf.step("reserve", ...).',
        )


def _after(timeout: Any, what: str) -> Callable[[float], float | None]:
    """The deadline of a wait with an optional timeout, from the moment it starts."""
    seconds = None if timeout is None else parse_duration(timeout, what)
    return lambda now: None if seconds is None else now + seconds


def _call(call: Any) -> tuple[str, Any]:
    """Normalise one item of wf.parallel/wf.race: "workflow" or (workflow, input)."""
    if isinstance(call, str):
        return call, None
    if isinstance(call, (tuple, list)) and len(call) == 2 and isinstance(call[0], str):
        return call[0], call[1]
    raise DurableError(
        f"a child call must be (workflow, input), not {call!r}",
        sqlstate=INVALID_PARAMETER,
        hint='wf.parallel([("app.resize", {"size": 1}), ("app.resize", {"size": 2})])',
    )


def _epoch(moment: Any) -> float:
    """Seconds since the epoch of a datetime, ISO 8601 text, or number."""
    if isinstance(moment, (int, float)) and not isinstance(moment, bool):
        return float(moment)
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        except ValueError:
            raise DurableError(
                f"invalid time {moment!r} for wf.sleep_until",
                sqlstate=INVALID_PARAMETER,
                hint="Give an ISO 8601 timestamp with a time zone, a datetime, or epoch"
                " seconds.",
            ) from None
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    raise DurableError(
        f"invalid time {moment!r} for wf.sleep_until",
        sqlstate=INVALID_PARAMETER,
        hint="Give an ISO 8601 timestamp, a datetime, or epoch seconds.",
    )
