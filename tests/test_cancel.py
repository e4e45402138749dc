"""Cancellation, compensation (saga) and durable.retry()."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from conftest import drain, run_state, start, wait_until, work_until_finished

WORKFLOWS = """
create schema if not exists app;
create table if not exists app.log (run_id uuid, entry text, at timestamptz
    default clock_timestamp());
create sequence if not exists app.retry_gate;

create or replace function app.saga(input jsonb) returns jsonb
language plpython3u as $$
for name in ["book flight", "book hotel", "book car"]:
    wf.step(name, "insert into app.log (run_id, entry) values ($1, $2)",
            [wf.run_id, name])
    wf.on_failure("undo " + name, "insert into app.log (run_id, entry) values ($1, $2)",
                  [wf.run_id, "undo " + name])
if input.get("fail"):
    wf.step("pay", "select 1 / 0", retry={"max_attempts": 1})
wf.sleep(input.get("sleep", 0))
return {"booked": 3}
$$;

create or replace function app.long_step(input jsonb) returns jsonb
language plpython3u as $$
def cleanup(run_id):
    plan = plpy.prepare("insert into app.log (run_id, entry) values ($1, 'cleanup')",
                        ["uuid"])
    plpy.execute(plan, [run_id])
wf.on_failure("cleanup", cleanup, wf.run_id)
wf.step("long", "select pg_sleep(30)")
$$;

create or replace function app.gated(input jsonb) returns jsonb
language plpython3u as $$
wf.step("first", "insert into app.log (run_id, entry) values ($1, 'first')",
        [wf.run_id])
wf.step("gate",
        "select 1 / (case when nextval('app.retry_gate') = 1 then 0 else 1 end)",
        retry={"max_attempts": 1})
wf.step("last", "insert into app.log (run_id, entry) values ($1, 'last')", [wf.run_id])
return {"done": True}
$$;

create or replace function app.family(input jsonb) returns jsonb
language plpython3u as $$
wf.start_child("app.saga", {"sleep": 60})
wf.sleep(60)
$$;
"""


@pytest.fixture(autouse=True)
def workflows(conn):
    conn.execute(WORKFLOWS)


def log(conn, run):
    return [
        row[0]
        for row in conn.execute(
            "select entry from app.log where run_id = %s order by at", [run]
        ).fetchall()
    ]


def cancel(conn, run, reason=None):
    return conn.execute("select durable.cancel(%s, %s)", [run, reason]).fetchone()[0]


def test_failure_runs_compensations_newest_first(conn):
    run = start(conn, "app.saga", {"fail": True})
    work_until_finished(conn, [run])
    assert run_state(conn, run)["status"] == "failed"
    assert log(conn, run) == [
        "book flight", "book hotel", "book car",
        "undo book car", "undo book hotel", "undo book flight",
    ]  # fmt: skip


def test_cancel_a_sleeping_run_runs_its_compensations(conn):
    run = start(conn, "app.saga", {"sleep": 60})
    drain(conn)
    assert run_state(conn, run)["status"] == "sleeping"
    assert cancel(conn, run, "customer changed their mind") is True
    work_until_finished(conn, [run])
    state = run_state(conn, run)
    assert state["status"] == "cancelled"
    assert state["error"]["message"] == "cancelled: customer changed their mind"
    assert log(conn, run)[3:] == [
        "undo book car",
        "undo book hotel",
        "undo book flight",
    ]


def test_cancel_a_finished_run_returns_false(conn):
    run = start(conn, "app.saga")
    work_until_finished(conn, [run])
    assert cancel(conn, run) is False
    assert run_state(conn, run)["status"] == "succeeded"


def test_cancel_a_pending_run(conn):
    run = start(conn, "app.saga", start_at="2999-01-01T00:00:00Z")
    assert cancel(conn, run) is True
    drain(conn)
    assert run_state(conn, run)["status"] == "cancelled"
    assert log(conn, run) == []


def test_cancel_interrupts_a_long_sql_step(connect):
    conn = connect()
    run = start(conn, "app.long_step")
    worker = threading.Thread(
        target=lambda: connect().execute(
            "call durable.run_worker(max_runtime => '20 seconds', drain => true)"
        )
    )
    worker.start()
    wait_until(
        lambda: conn.execute(
            "select count(*) from pg_stat_activity where wait_event = 'PgSleep'"
            " and pid <> pg_backend_pid()"
        ).fetchone()[0]
        > 0
    )
    started = time.monotonic()
    assert cancel(conn, run) is True
    worker.join(20)
    assert time.monotonic() - started < 5
    assert run_state(conn, run)["status"] == "cancelled"
    assert log(conn, run) == ["cleanup"]


def test_cancel_cascades_to_children(conn):
    run = start(conn, "app.family")
    drain(conn)
    drain(conn)
    child = conn.execute(
        "select id::text from durable.runs where parent_id = %s", [run]
    ).fetchone()[0]
    assert cancel(conn, run) is True
    work_until_finished(conn, [run, child])
    assert run_state(conn, run)["status"] == "cancelled"
    assert run_state(conn, child)["status"] == "cancelled"


def test_retry_resumes_a_failed_run_from_its_last_checkpoint(conn):
    conn.execute("select setval('app.retry_gate', 1, false)")
    run = start(conn, "app.gated")
    work_until_finished(conn, [run])
    assert run_state(conn, run)["status"] == "failed"
    assert conn.execute("select durable.retry(%s)", [run]).fetchone()[0] is True
    work_until_finished(conn, [run])
    state = run_state(conn, run)
    assert state["status"] == "succeeded", state["error"]
    assert state["attempt"] == 2
    assert log(conn, run) == ["first", "last"]


def test_retry_of_a_run_that_did_not_fail_returns_false(conn):
    run = start(conn, "app.saga")
    assert conn.execute("select durable.retry(%s)", [run]).fetchone()[0] is False


# A cancel racing the worker that is ending the run. Advisory locks held by the test
# (gates) stop the worker and durable.cancel() at the points where the race happens,
# and each side is let go only once the other is seen waiting where it should be.

RACE_QUEUE, CHILD_QUEUE = "cancel_race", "cancel_race_children"
STEP_GATE, CANCEL_GATE, CHILD_END_GATE = 5701401, 5701402, 5701403

RACE_WORKFLOWS = f"""
create or replace function app.gated_step(input jsonb) returns jsonb
language plpython3u as $$
wf.step("gate", "select pg_advisory_xact_lock_shared({STEP_GATE})")
return {{"done": True}}
$$;

create table if not exists app.probed (run_id uuid);
create or replace function app.probed_insert(input jsonb) returns jsonb
language plpython3u as $$
wf.step("insert", "insert into app.probed values ($1)", [wf.run_id])
return {{"done": True}}
$$;

create or replace function app.race_child(input jsonb) returns jsonb
language plpython3u as $$
return {{"square": wf.step("square", lambda n: n * n, input["n"])}}
$$;

create or replace function app.race_parent(input jsonb) returns jsonb
language plpython3u as $$
child = wf.start_child("app.race_child", {{"n": input["n"]}}, queue="{CHILD_QUEUE}")
return {{"square": wf.wait(child)["square"]}}
$$;
"""


class InThread(threading.Thread):
    """One statement on ``conn`` in a thread of its own; keeps its rows or error."""

    def __init__(self, conn, sql, params=None):
        super().__init__(daemon=True)
        self.conn, self.sql, self.params = conn, sql, params
        self.pid = conn.info.backend_pid
        self.rows = None
        self.error = None
        self.start()

    def run(self):
        try:
            cur = self.conn.execute(self.sql, self.params)
            self.rows = cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            self.error = exc

    def outcome(self, timeout=15.0):
        """``"ok"`` or ``"<sqlstate>: <message>"`` once the statement has returned."""
        self.join(timeout)
        assert not self.is_alive(), f"{self.sql!r} still running after {timeout}s"
        if self.error is None:
            return "ok"
        return f"{self.error.sqlstate}: {str(self.error).splitlines()[0]}"


def race_worker(connect, queue=RACE_QUEUE):
    """A worker of ``queue``, until nothing in it is ready (in a thread)."""
    return InThread(
        connect(),
        "call durable.run_worker(queue => %s, max_runtime => '10 seconds',"
        " drain => true)",
        [queue],
    )


def wait_for_lock(conn, pid, *events):
    """Wait until backend ``pid`` waits for a heavyweight lock of one of ``events``
    (``advisory`` for a gate, ``transactionid``/``tuple`` for a row)."""
    wait_until(
        lambda: conn.execute(
            "select wait_event_type = 'Lock' and wait_event = any(%s)"
            " from pg_stat_activity where pid = %s",
            [list(events), pid],
        ).fetchone()[0]
    )


def interruptions(conn, run):
    return conn.execute(
        "select interruptions from durable._runs where id = %s", [run]
    ).fetchone()[0]


def test_cancel_while_the_worker_ends_the_run(connect):
    """The cancel holds the run row when the worker, past its last step, writes the
    run's end: the worker waits for the row and gets the cancel's interrupt outside
    any step. Its CALL goes on, and the run ends as cancelled, not interrupted."""
    conn, gate = connect(), connect()
    conn.execute(RACE_WORKFLOWS)
    conn.execute(
        f"""
create or replace function app.hold_cancel() returns trigger language plpgsql as $$
begin perform pg_advisory_xact_lock_shared({CANCEL_GATE}); return null; end $$;
create trigger hold_cancel after update of cancel_requested on durable._runs
for each row when (new.cancel_requested and not old.cancel_requested
    and new.workflow = 'app.gated_step')
execute function app.hold_cancel();
"""
    )
    try:
        gate.execute(
            "select pg_advisory_lock(%s), pg_advisory_lock(%s)",
            [STEP_GATE, CANCEL_GATE],
        )
        run = start(conn, "app.gated_step", queue=RACE_QUEUE)
        worker = race_worker(connect)
        wait_for_lock(conn, worker.pid, "advisory")  # in the step
        # The cancel locks the run row, then stops in the trigger before it
        # interrupts the worker.
        canceller = InThread(connect(), "select durable.cancel(%s)", [run])
        wait_for_lock(conn, canceller.pid, "advisory")
        # The step ends; writing the run's end, the worker waits for the row.
        gate.execute("select pg_advisory_unlock(%s)", [STEP_GATE])
        wait_for_lock(conn, worker.pid, "transactionid", "tuple")
        gate.execute("select pg_advisory_unlock(%s)", [CANCEL_GATE])
        # Neither side failed: no deadlock (40P01), no interrupted CALL (57014).
        assert (canceller.outcome(), worker.outcome()) == ("ok", "ok")
        assert canceller.rows == [(True,)]
    finally:
        gate.close()
        conn.execute("drop trigger if exists hold_cancel on durable._runs")
        conn.execute("drop function if exists app.hold_cancel()")
    state = run_state(conn, run)
    assert state["status"] == "cancelled"
    assert state["error"]["message"] == "cancelled"
    assert interruptions(conn, run) == 0


def test_cancel_of_a_parent_while_the_worker_ends_its_child(connect):
    """durable.cancel(parent) and a worker ending the parent's child both lock the
    two rows, in the same order: no deadlock, the child keeps its result and the
    parent ends as cancelled. The child has a queue of its own, so that the worker
    ending it cannot go on with the parent before the cancel reaches it."""
    conn, gate = connect(), connect()
    conn.execute(RACE_WORKFLOWS)
    conn.execute(
        f"""
create or replace function app.hold_child_end() returns trigger language plpgsql as $$
begin perform pg_advisory_xact_lock_shared({CHILD_END_GATE}); return null; end $$;
create trigger hold_child_end after update of status on durable._runs
for each row when (new.status = 'succeeded' and old.status <> 'succeeded'
    and new.workflow = 'app.race_child')
execute function app.hold_child_end();
"""
    )
    try:
        gate.execute("select pg_advisory_lock(%s)", [CHILD_END_GATE])
        parent = start(conn, "app.race_parent", {"n": 3}, queue=RACE_QUEUE)
        drain(conn, RACE_QUEUE)
        assert run_state(conn, parent)["status"] == "waiting"
        child = conn.execute(
            "select id::text from durable._runs where parent_id = %s", [parent]
        ).fetchone()[0]
        worker = race_worker(connect, CHILD_QUEUE)
        # The worker has written the child's end (and holds its row) and stops in
        # the trigger.
        wait_for_lock(conn, worker.pid, "advisory")
        canceller = InThread(connect(), "select durable.cancel(%s)", [parent])
        wait_for_lock(conn, canceller.pid, "transactionid", "tuple")
        gate.execute("select pg_advisory_unlock(%s)", [CHILD_END_GATE])
        # Neither side failed: no deadlock (40P01), no interrupted CALL (57014).
        assert (canceller.outcome(), worker.outcome()) == ("ok", "ok")
        assert canceller.rows == [(True,)]
    finally:
        gate.close()
        conn.execute("drop trigger if exists hold_child_end on durable._runs")
        conn.execute("drop function if exists app.hold_child_end()")
    drain(conn, RACE_QUEUE)
    assert run_state(conn, child)["status"] == "succeeded"
    assert run_state(conn, child)["result"] == {"square": 9}
    assert run_state(conn, parent)["status"] == "cancelled"
    assert interruptions(conn, parent) == interruptions(conn, child) == 0


def test_cancel_while_the_step_infers_its_parameter_types(connect):
    """The cancel's interrupt reaches the worker while it PREPAREs a SQL step to learn
    its parameter types (here: waiting for a lock on the step's table). The interrupt
    cancels the run; it is not mistaken for "types cannot be inferred", which would
    run the step with text parameters and fail it with 42804."""
    conn, gate = connect(), connect()
    conn.execute(RACE_WORKFLOWS)
    run = start(conn, "app.probed_insert", queue=RACE_QUEUE)
    with gate.transaction():
        gate.execute("lock table app.probed in access exclusive mode")
        worker = race_worker(connect)
        wait_for_lock(conn, worker.pid, "relation")
        assert conn.execute("select durable.cancel(%s)", [run]).fetchone() == (True,)
        wait_until(lambda: run_state(conn, run)["status"] == "cancelled")
    assert worker.outcome() == "ok"
    attempts = conn.execute(
        "select error->>'sqlstate' from durable.step_attempts where run_id = %s",
        [run],
    ).fetchall()
    assert attempts == []
    assert conn.execute("select count(*) from app.probed").fetchone() == (0,)
