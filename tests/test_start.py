"""durable.start(), status(), result() and wait(): the transactional API."""

from __future__ import annotations

import threading

import psycopg
import pytest
from conftest import drain

WORKFLOWS = """
create schema if not exists app;
create or replace function app.echo(input jsonb) returns jsonb
language plpython3u as $$
return {"echo": input}
$$;
create or replace function app.not_python(input jsonb) returns jsonb
language sql as $$ select input $$;
create or replace function app.wrong_args(input text) returns jsonb
language plpython3u as $$ return None $$;
create or replace function app.wrong_return(input jsonb) returns text
language plpython3u as $$ return "x" $$;
create or replace procedure app.a_procedure(input jsonb)
language plpython3u as $$ pass $$;
"""


@pytest.fixture(autouse=True)
def workflows(conn):
    conn.execute(WORKFLOWS)


def start(conn, *args, **kwargs):
    names = ", ".join([*["%s"] * len(args), *[f"{k} => %s" for k in kwargs]])
    return conn.execute(
        f"select durable.start({names})", [*args, *kwargs.values()]
    ).fetchone()[0]


def test_start_drain_succeeded_with_result(conn):
    run = start(conn, "app.echo", psycopg.types.json.Jsonb({"n": 1}))
    assert conn.execute("select durable.status(%s)", [run]).fetchone()[0] == "pending"
    drain(conn)
    assert conn.execute("select durable.status(%s)", [run]).fetchone()[0] == "succeeded"
    assert conn.execute("select durable.result(%s)", [run]).fetchone()[0] == {
        "echo": {"n": 1}
    }


def test_input_defaults_to_empty_object(conn):
    run = start(conn, "app.echo")
    drain(conn)
    assert conn.execute("select durable.result(%s)", [run]).fetchone()[0] == {
        "echo": {}
    }


def test_unqualified_name_resolves_through_search_path(conn):
    conn.execute("set search_path = app, public")
    run = start(conn, "echo")
    assert (
        conn.execute(
            "select workflow from durable.runs where id = %s", [run]
        ).fetchone()[0]
        == "app.echo"
    )


def test_start_in_rolled_back_transaction_leaves_no_run(connect):
    conn = connect(autocommit=False)
    run = start(conn, "app.echo")
    conn.rollback()
    count = conn.execute("select count(*) from durable.runs where id = %s", [run])
    assert count.fetchone()[0] == 0


def test_idempotency_key_returns_existing_run(conn):
    first = start(conn, "app.echo", idempotency_key="order-42")
    second = start(conn, "app.echo", idempotency_key="order-42")
    other = start(conn, "app.echo", idempotency_key="order-43")
    assert first == second
    assert other != first
    count = conn.execute(
        "select count(*) from durable.runs where idempotency_key = 'order-42'"
    ).fetchone()[0]
    assert count == 1


def test_concurrent_starts_with_one_key_make_one_run(connect):
    barrier = threading.Barrier(4)
    ids = []

    def starter():
        conn = connect()
        barrier.wait()
        ids.append(start(conn, "app.echo", idempotency_key="race"))

    threads = [threading.Thread(target=starter) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 1


def test_start_at_in_future_is_pending_and_not_claimed(conn):
    run = start(conn, "app.echo", start_at="2999-01-01T00:00:00Z")
    drain(conn)
    assert conn.execute("select durable.status(%s)", [run]).fetchone()[0] == "pending"


def test_priority_orders_the_queue(conn):
    conn.execute("delete from durable._runs")
    low = start(conn, "app.echo", priority=0)
    high = start(conn, "app.echo", priority=10)
    drain(conn)
    order = conn.execute(
        "select id from durable.runs where id in (%s, %s) order by started_at",
        [low, high],
    ).fetchall()
    assert [row[0] for row in order] == [high, low]


def test_queue_only_drains_its_own_runs(conn):
    mine = start(conn, "app.echo", queue="emails")
    other = start(conn, "app.echo", queue="reports")
    drain(conn, queue="emails")
    status = conn.execute(
        "select durable.status(%s), durable.status(%s)", [mine, other]
    ).fetchone()
    assert status == ("succeeded", "pending")


@pytest.mark.parametrize(
    ("workflow", "sqlstate", "fragment"),
    [
        ("app.missing", "42883", 'workflow "app.missing" does not exist'),
        ("app.not_python", "42809", "is not a PL/Python function"),
        ("app.a_procedure", "42809", "is not a PL/Python function"),
        ("app.wrong_args", "42P13", "must take one jsonb argument and return jsonb"),
        ("app.wrong_return", "42P13", "must take one jsonb argument and return jsonb"),
    ],
)
def test_bad_workflow_is_a_clear_error(conn, workflow, sqlstate, fragment):
    with pytest.raises(psycopg.Error) as raised:
        start(conn, workflow)
    assert raised.value.sqlstate == sqlstate
    assert fragment in raised.value.diag.message_primary
    assert raised.value.diag.message_hint


def test_bad_arguments_are_clear_errors(conn):
    with pytest.raises(psycopg.errors.NullValueNotAllowed):
        start(conn, None)
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        start(conn, "app.echo", queue="")


def test_status_of_unknown_run(conn):
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("select durable.status(gen_random_uuid())")
    assert raised.value.sqlstate == "DU010"
    assert "not found" in raised.value.diag.message_primary


def test_result_of_unfinished_run(conn):
    run = start(conn, "app.echo", start_at="2999-01-01T00:00:00Z")
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("select durable.result(%s)", [run])
    assert raised.value.sqlstate == "DU002"
    assert "has not finished" in raised.value.diag.message_primary


def test_wait_returns_when_a_worker_finishes_the_run(connect):
    conn = connect()
    run = start(conn, "app.echo", psycopg.types.json.Jsonb({"w": 1}))
    worker = threading.Thread(target=lambda: drain(connect()))
    worker.start()
    assert conn.execute("select durable.wait(%s, '20 seconds')", [run]).fetchone()[
        0
    ] == {"echo": {"w": 1}}
    worker.join()


def test_wait_times_out(conn):
    run = start(conn, "app.echo", start_at="2999-01-01T00:00:00Z")
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("select durable.wait(%s, '0.1 seconds')", [run])
    assert raised.value.sqlstate == "DU030"


def test_wait_on_a_run_started_in_the_same_transaction(connect):
    conn = connect(autocommit=False)
    run = start(conn, "app.echo")
    with pytest.raises(psycopg.errors.InvalidTransactionState):
        conn.execute("select durable.wait(%s, '1 second')", [run])
    conn.rollback()


def test_wait_needs_read_committed(connect):
    conn = connect(autocommit=False)
    conn.execute("set transaction isolation level repeatable read")
    with pytest.raises(psycopg.errors.InvalidTransactionState):
        conn.execute("select durable.wait(gen_random_uuid())")
    conn.rollback()
