"""Signals: exactly-once delivery, buffering, timeouts and errors."""

from __future__ import annotations

import psycopg
import pytest
from conftest import drain, run_state, start, work_until_finished
from psycopg.types.json import Jsonb

WORKFLOWS = """
create schema if not exists app;
create or replace function app.approval(input jsonb) returns jsonb
language plpython3u as $$
first = wf.wait_for_signal("approve", timeout=input.get("timeout"))
second = None
if input.get("twice"):
    second = wf.wait_for_signal("approve", timeout=input.get("timeout"))
return {"first": first, "second": second}
$$;
"""


@pytest.fixture(autouse=True)
def workflows(conn):
    conn.execute(WORKFLOWS)


def signal(conn, run, name, payload=None):
    return conn.execute(
        "select durable.signal(%s, %s, %s)", [run, name, Jsonb(payload)]
    ).fetchone()[0]


def test_run_waits_for_a_signal_and_gets_its_payload(conn):
    run = start(conn, "app.approval")
    drain(conn)
    assert run_state(conn, run)["status"] == "waiting"
    assert run_state(conn, run)["wake_at"] is None
    assert signal(conn, run, "approve", {"by": "ada"}) is True
    work_until_finished(conn, [run])
    assert run_state(conn, run)["result"] == {"first": {"by": "ada"}, "second": None}


def test_signal_before_the_wait_is_buffered(conn):
    run = start(conn, "app.approval")
    assert signal(conn, run, "approve", {"early": True}) is True
    work_until_finished(conn, [run])
    assert run_state(conn, run)["result"]["first"] == {"early": True}


def test_each_signal_is_delivered_exactly_once(conn):
    run = start(conn, "app.approval", {"twice": True})
    signal(conn, run, "approve", 1)
    signal(conn, run, "approve", 2)
    work_until_finished(conn, [run])
    assert run_state(conn, run)["result"] == {"first": 1, "second": 2}
    consumed = conn.execute(
        "select count(*) from durable._signals where run_id = %s"
        " and consumed_seq is not null",
        [run],
    ).fetchone()[0]
    assert consumed == 2


def test_wait_for_signal_times_out_with_none(conn):
    run = start(conn, "app.approval", {"timeout": "0.3 seconds"})
    work_until_finished(conn, [run])
    assert run_state(conn, run)["result"] == {"first": None, "second": None}


def test_signal_with_a_different_name_does_not_wake(conn):
    run = start(conn, "app.approval")
    drain(conn)
    signal(conn, run, "reject")
    drain(conn)
    assert run_state(conn, run)["status"] == "waiting"


def test_signal_to_a_finished_run_is_an_error(conn):
    run = start(conn, "app.approval", {"timeout": 0})
    work_until_finished(conn, [run])
    with pytest.raises(psycopg.Error) as raised:
        signal(conn, run, "approve")
    assert raised.value.sqlstate == "DU011"
    assert "has finished" in raised.value.diag.message_primary


def test_signal_to_an_unknown_run_is_an_error(conn):
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("select durable.signal(gen_random_uuid(), 'x')")
    assert raised.value.sqlstate == "DU010"


def test_signal_in_a_rolled_back_transaction_is_not_delivered(connect):
    conn = connect()
    run = start(conn, "app.approval", {"timeout": "0.5 seconds"})
    drain(conn)
    tx = connect(autocommit=False)
    signal(tx, run, "approve", "lost")
    tx.rollback()
    work_until_finished(conn, [run])
    assert run_state(conn, run)["result"]["first"] is None
