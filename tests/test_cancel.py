"""Cancellation, compensation (saga) and durable.retry()."""

from __future__ import annotations

import threading
import time

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
