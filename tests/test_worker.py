"""Executing runs: SQL and Python steps, checkpoints, failures, worker rules."""

from __future__ import annotations

import psycopg
import pytest
from conftest import drain
from psycopg.types.json import Jsonb

WORKFLOWS = """
create schema if not exists app;
create table if not exists app.effects (
    run_id uuid, step text, n int, created_at timestamptz default clock_timestamp()
);
create table if not exists app.items (id int primary key, payload jsonb, ref uuid);
insert into app.items values (1, '{"a": 1}', null), (2, '{"b": [1, 2]}', null)
on conflict do nothing;

create or replace function app.three_steps(input jsonb) returns jsonb
language plpython3u as $$
for i, name in enumerate(["one", "two", "three"]):
    wf.step(name, "insert into app.effects (run_id, step, n) values ($1, $2, $3)",
            [wf.run_id, name, i])
return {"done": 3}
$$;

create or replace function app.rows_back(input jsonb) returns jsonb
language plpython3u as $$
rows = wf.step("read", "select id, payload, 1.5::numeric as num, 2::numeric as whole,"
               " decode('01ff', 'hex') as raw, array[1, 2] as arr,"
               " null::text as nothing"
               " from app.items where id = any($1) order by id", [input["ids"]])
return {"rows": rows}
$$;

create or replace function app.python_step(input jsonb) returns jsonb
language plpython3u as $$
def total(values, scale=1):
    return {"total": sum(values) * scale, "key": wf.step_key}
out = wf.step("sum", total, input["values"], scale=10)
return out
$$;

create or replace function app.fails_in_step(input jsonb) returns jsonb
language plpython3u as $$
wf.step("ok", "insert into app.effects (run_id, step) values ($1, 'ok')", [wf.run_id])
wf.step("boom", "insert into app.effects (run_id, step) values ($1, 'boom');"
        .rstrip(";"), [wf.run_id])
wf.step("bad", "select 1 / 0")
return {"unreachable": True}
$$;

create or replace function app.catches_failure(input jsonb) returns jsonb
language plpython3u as $$
import durable
try:
    wf.step("bad", "select 1 / $1::int", [0])
except durable.StepFailed as failure:
    return {"caught": failure.step, "sqlstate": failure.sqlstate}
$$;

create or replace function app.not_json(input jsonb) returns jsonb
language plpython3u as $$
wf.step("set", lambda: {1, 2, 3})
$$;

create or replace function app.not_json_result(input jsonb) returns jsonb
language plpython3u as $$
return object()
$$;

create or replace function app.body_error(input jsonb) returns jsonb
language plpython3u as $$
wf.step("first", "insert into app.effects (run_id, step) values ($1, 'first')",
        [wf.run_id])
plpy.execute("insert into app.effects (step) values ('uncommitted body write')")
return input["missing"]
$$;

create or replace function app.typed_params(input jsonb) returns jsonb
language plpython3u as $$
rows = wf.step("typed", "update app.items set payload = $1, ref = $2 where id = $3"
               " returning id, payload, ref", [{"new": True}, wf.run_id, 1])
plain = wf.step("untyped", "select $1 as v", ["text value"])
return {"rows": rows, "plain": plain}
$$;

create or replace function app.multi_statement(input jsonb) returns jsonb
language plpython3u as $$
wf.step("evil", "select 1; drop table app.items")
$$;

create or replace function app.facts(input jsonb) returns jsonb
language plpython3u as $$
return {"run_id": wf.run_id, "workflow": wf.workflow, "attempt": wf.attempt,
        "input": wf.input, "args": args[0] == input}
$$;
"""


@pytest.fixture(autouse=True)
def workflows(conn):
    conn.execute(WORKFLOWS)
    # Failures here are about what a failed step leaves behind, not about retries.
    conn.execute(
        "update durable._settings set value = '1' where key = 'retry.max_attempts'"
    )


def start(conn, workflow, value=None):
    return conn.execute(
        "select durable.start(%s, %s)", [workflow, Jsonb(value or {})]
    ).fetchone()[0]


def run_row(conn, run):
    cur = conn.execute(
        "select status, result, error from durable.runs where id = %s", [run]
    )
    return cur.fetchone()


def test_three_sql_steps_each_take_effect_exactly_once(conn):
    run = start(conn, "app.three_steps")
    drain(conn)
    assert run_row(conn, run)[:2] == ("succeeded", {"done": 3})
    effects = conn.execute(
        "select step, count(*) from app.effects where run_id = %s group by step", [run]
    ).fetchall()
    assert sorted(effects) == [("one", 1), ("three", 1), ("two", 1)]
    steps = conn.execute(
        "select seq, name, kind, status from durable.steps"
        " where run_id = %s order by seq",
        [run],
    ).fetchall()
    assert steps == [
        (1, "one", "sql", "succeeded"),
        (2, "two", "sql", "succeeded"),
        (3, "three", "sql", "succeeded"),
    ]


def test_each_step_commits_in_its_own_transaction(conn):
    run = start(conn, "app.three_steps")
    drain(conn)
    xmins = conn.execute(
        "select count(distinct xmin::text) from durable._steps where run_id = %s", [run]
    ).fetchone()[0]
    assert xmins == 3


def test_sql_step_rows_come_back_as_json(conn):
    run = start(conn, "app.rows_back", {"ids": [1, 2]})
    drain(conn)
    status, result, _ = run_row(conn, run)
    assert status == "succeeded"
    assert result["rows"] == [
        {
            "id": 1,
            "payload": {"a": 1},
            "num": 1.5,
            "whole": 2,
            "raw": "\\x01ff",
            "arr": [1, 2],
            "nothing": None,
        },
        {
            "id": 2,
            "payload": {"b": [1, 2]},
            "num": 1.5,
            "whole": 2,
            "raw": "\\x01ff",
            "arr": [1, 2],
            "nothing": None,
        },
    ]


def test_parameter_types_come_from_the_statement(conn):
    run = start(conn, "app.typed_params")
    drain(conn)
    status, result, error = run_row(conn, run)
    assert status == "succeeded", error
    assert result["rows"] == [{"id": 1, "payload": {"new": True}, "ref": str(run)}]
    assert result["plain"] == [{"v": "text value"}]


def test_parameter_types_despite_a_probe_left_behind(connect):
    """The statement that infers a SQL step's parameter types is a prepared statement,
    which outlives a rollback: one left behind by an interrupted probe is replaced,
    not taken as "cannot infer" (that would pass the uuid as text)."""
    worker = connect()
    worker.execute("prepare durable_parameter_probe as select 1")
    run = start(worker, "app.typed_params")
    drain(worker)
    status, result, error = run_row(worker, run)
    assert status == "succeeded", error
    assert result["rows"][0]["ref"] == str(run)
    probes = worker.execute(
        "select count(*) from pg_prepared_statements"
        " where name = 'durable_parameter_probe'"
    ).fetchone()
    assert probes == (0,)


def test_python_step_result_is_checkpointed(conn):
    run = start(conn, "app.python_step", {"values": [1, 2, 3]})
    drain(conn)
    status, result, _ = run_row(conn, run)
    assert status == "succeeded"
    assert result == {"total": 60, "key": f"{run}:1"}
    output = conn.execute(
        "select kind, output from durable.steps where run_id = %s", [run]
    ).fetchone()
    assert output == ("python", {"total": 60, "key": f"{run}:1"})


def test_failing_step_fails_the_run_and_rolls_back_its_work(conn):
    run = start(conn, "app.fails_in_step")
    drain(conn)
    status, _, error = run_row(conn, run)
    assert status == "failed"
    assert error["sqlstate"] == "22012"
    assert "division by zero" in error["message"]
    assert error["step"] == "bad"
    steps = conn.execute(
        "select name, status, error->>'sqlstate' from durable.steps"
        " where run_id = %s order by seq",
        [run],
    ).fetchall()
    assert steps == [
        ("ok", "succeeded", None),
        ("boom", "succeeded", None),
        ("bad", "failed", "22012"),
    ]
    effects = conn.execute(
        "select step from app.effects where run_id = %s order by created_at", [run]
    ).fetchall()
    assert effects == [("ok",), ("boom",)]
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("select durable.result(%s)", [run])
    assert raised.value.sqlstate == "DU001"
    assert "division by zero" in raised.value.diag.message_primary


def test_workflow_code_can_handle_a_failed_step(conn):
    run = start(conn, "app.catches_failure")
    drain(conn)
    assert run_row(conn, run)[:2] == (
        "succeeded",
        {"caught": "bad", "sqlstate": "22012"},
    )


def test_non_json_step_result_is_a_clear_error_on_the_run(conn):
    run = start(conn, "app.not_json")
    drain(conn)
    status, _, error = run_row(conn, run)
    assert status == "failed"
    assert error["sqlstate"] == "DU021"
    assert 'the result of step "set" is not JSON-serialisable' in error["message"]


def test_non_json_workflow_result_is_a_clear_error(conn):
    run = start(conn, "app.not_json_result")
    drain(conn)
    status, _, error = run_row(conn, run)
    assert status == "failed"
    assert error["sqlstate"] == "DU021"
    assert "the result of workflow app.not_json_result" in error["message"]


def test_error_in_workflow_body_rolls_back_uncommitted_body_work(conn):
    run = start(conn, "app.body_error")
    drain(conn)
    status, _, error = run_row(conn, run)
    assert status == "failed"
    assert error["type"] == "KeyError"
    assert "missing" in error["message"]
    assert "traceback" in error
    stray = conn.execute(
        "select count(*) from app.effects where step = 'uncommitted body write'"
    ).fetchone()[0]
    assert stray == 0
    # The step just before the error had not committed yet (it commits at the next
    # durable call or with the run's end): it is rolled back with the body's work,
    # effects and checkpoint together.
    first = conn.execute(
        "select count(*) from app.effects where run_id = %s and step = 'first'", [run]
    ).fetchone()[0]
    checkpoints = conn.execute(
        "select count(*) from durable.steps where run_id = %s", [run]
    ).fetchone()[0]
    assert (first, checkpoints) == (0, 0)


def test_multi_statement_step_sql_is_refused(conn):
    run = start(conn, "app.multi_statement")
    drain(conn)
    status, _, error = run_row(conn, run)
    assert status == "failed"
    assert error["sqlstate"] == "42601"
    assert conn.execute("select to_regclass('app.items') is not null").fetchone()[0]


def test_workflow_facts(conn):
    run = start(conn, "app.facts", {"x": 1})
    drain(conn)
    assert run_row(conn, run)[1] == {
        "run_id": str(run),
        "workflow": "app.facts",
        "attempt": 1,
        "input": {"x": 1},
        "args": True,
    }


def test_worker_refuses_a_transaction_block(connect):
    conn = connect(autocommit=False)
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("call durable.run_worker(drain => true)")
    assert raised.value.sqlstate == "2D000"
    assert "outside a transaction block" in raised.value.diag.message_primary
    conn.rollback()


def test_worker_unregisters_when_it_returns(conn):
    drain(conn)
    assert conn.execute("select count(*) from durable._workers").fetchone()[0] == 0


def test_worker_stops_after_max_runtime(conn):
    import time

    started = time.monotonic()
    conn.execute("call durable.run_worker(max_runtime => '0.3 seconds')")
    elapsed = time.monotonic() - started
    assert 0.25 < elapsed < 5


def test_statement_timeout_caps_the_worker(conn):
    conn.execute("set statement_timeout = '3s'")
    conn.execute("call durable.run_worker(max_runtime => '1 hour')")
    conn.execute("reset statement_timeout")


def test_worker_only_runs_runs_owned_by_its_session_user(conn):
    conn.execute("drop role if exists other_owner")
    conn.execute("create role other_owner")
    run = start(conn, "app.facts")
    conn.execute("update durable._runs set owner = 'other_owner' where id = %s", [run])
    drain(conn)
    assert run_row(conn, run)[0] == "pending"
    conn.execute("delete from durable._runs where id = %s", [run])


def test_worker_keeps_its_id_across_slices(connect):
    """A worker's CALL runs in slices of 5 seconds (each a CALL of the PL/Python
    procedure); the worker stays one registered worker, holding its lock, and
    executes runs started during any slice."""
    import threading
    import time

    from conftest import wait_until

    watcher = connect()
    worker = connect()
    thread = threading.Thread(
        target=worker.execute,
        args=("call durable.run_worker(max_runtime => '7 seconds')",),
    )
    thread.start()
    try:
        wait_until(lambda: worker_count(watcher) == 1)
        first_id = watcher.execute("select id from durable._workers").fetchone()[0]
        early = start(watcher, "app.facts")
        wait_until(lambda: run_row(watcher, early)[0] == "succeeded")
        time.sleep(5.5)  # not a poll: the time it takes to reach the second slice
        late = start(watcher, "app.facts")
        wait_until(lambda: run_row(watcher, late)[0] == "succeeded")
        ids = watcher.execute("select array_agg(id) from durable._workers").fetchone()
        assert ids == ([first_id],)
        alive = watcher.execute(
            "select alive from durable.workers where id = %s", [first_id]
        ).fetchone()[0]
        assert alive is True
    finally:
        thread.join(15)
    assert worker_count(watcher) == 0


def worker_count(conn) -> int:
    return conn.execute("select count(*) from durable._workers").fetchone()[0]


def test_pg_cancel_backend_stops_an_idle_worker(connect):
    """An operator's pg_cancel_backend() of a worker ends its CALL with 57014 (only
    the interrupts of durable.cancel() are absorbed by the worker)."""
    import threading

    from conftest import wait_until

    watcher = connect()
    worker = connect()
    pid = worker.info.backend_pid
    outcome: list = []

    def work() -> None:
        try:
            worker.execute("call durable.run_worker(max_runtime => '30 seconds')")
            outcome.append("returned")
        except psycopg.Error as exc:
            outcome.append(exc.sqlstate)

    thread = threading.Thread(target=work)
    thread.start()
    wait_until(lambda: worker_count(watcher) == 1)
    watcher.execute("select pg_cancel_backend(%s)", [pid])
    thread.join(10)
    assert outcome == ["57014"]
    assert worker_count(watcher) == 0
