"""Retries: step policies, attempts history, non-retryable errors, workflow attempts."""

from __future__ import annotations

import psycopg
import pytest
from conftest import drain, run_state, start, work_until_finished

WORKFLOWS = """
create schema if not exists app;
create sequence if not exists app.flaky;
create table if not exists app.effects (run_id uuid, step text);

create or replace function app.flaky(input jsonb) returns jsonb
language plpython3u as $$
rows = wf.step(
    "flaky",
    "select 1 / (case when nextval('app.flaky') % $1 = 0 then 1 else 0 end) as ok",
    [input["every"]],
    retry={"initial_interval": 0.01, "max_attempts": input.get("max", 3),
           "jitter": 0},
)
wf.step("after", "insert into app.effects values ($1, 'after')", [wf.run_id])
return {"ok": rows[0]["ok"], "attempt": wf.attempt}
$$;

create or replace function app.slow_retry(input jsonb) returns jsonb
language plpython3u as $$
wf.step("fails", "select 1 / 0", retry={"initial_interval": "1 hour"})
$$;

create or replace function app.non_retryable(input jsonb) returns jsonb
language plpython3u as $$
import durable
def refuse():
    raise durable.NonRetryable("the card was declined")
wf.step("charge", refuse, retry={"initial_interval": 0.01})
$$;

create or replace function app.listed(input jsonb) returns jsonb
language plpython3u as $$
wf.step("divide", "select 1 / 0",
        retry={"initial_interval": 0.01, "non_retryable": ["22012"]})
$$;

create or replace function app.listed_class(input jsonb) returns jsonb
language plpython3u as $$
def bad():
    raise ValueError("no")
wf.step("bad", bad, retry={"initial_interval": 0.01, "non_retryable": "ValueError"})
$$;

create or replace function app.bad_policy(input jsonb) returns jsonb
language plpython3u as $$
wf.step("x", "select 1", retry={"max_atempts": 2})
$$;

create or replace function app.registered(input jsonb) returns jsonb
language plpython3u as $$
wf.step("fails", "select 1 / 0")
$$;

create or replace function app.body_flaky(input jsonb) returns jsonb
language plpython3u as $$
wf.step("once", "insert into app.effects values ($1, 'once')", [wf.run_id])
n = wf.step("count", "select nextval('app.flaky') as n")[0]["n"]
if wf.attempt == 1:
    raise ValueError("first attempt of the whole run fails")
return {"attempt": wf.attempt}
$$;
"""


@pytest.fixture(autouse=True)
def workflows(conn):
    conn.execute(WORKFLOWS)
    conn.execute("select setval('app.flaky', 1, false)")


def attempts(conn, run):
    return conn.execute(
        "select seq, attempt, error->>'sqlstate' from durable._step_attempts"
        " where run_id = %s order by seq, attempt",
        [run],
    ).fetchall()


def test_step_is_retried_until_it_succeeds(conn):
    conn.execute("select setval('app.flaky', 1, false)")
    run = start(conn, "app.flaky", {"every": 3})
    work_until_finished(conn, [run])
    state = run_state(conn, run)
    assert state["status"] == "succeeded", state["error"]
    assert attempts(conn, run) == [(1, 1, "22012"), (1, 2, "22012")]
    step = conn.execute(
        "select status, attempts from durable.steps where run_id = %s and seq = 1",
        [run],
    ).fetchone()
    assert step == ("succeeded", 3)
    effects = conn.execute(
        "select count(*) from app.effects where run_id = %s", [run]
    ).fetchone()[0]
    assert effects == 1


def test_step_fails_the_run_after_max_attempts(conn):
    run = start(conn, "app.flaky", {"every": 1000, "max": 2})
    work_until_finished(conn, [run])
    state = run_state(conn, run)
    assert state["status"] == "failed"
    assert state["error"]["sqlstate"] == "22012"
    assert state["error"]["attempt"] == 2
    assert attempts(conn, run) == [(1, 1, "22012"), (1, 2, "22012")]


def test_run_sleeps_during_back_off_and_frees_the_worker(conn):
    run = start(conn, "app.slow_retry")
    drain(conn)
    state = run_state(conn, run)
    assert state["status"] == "sleeping"
    assert conn.execute(
        "select wake_at > now() + interval '50 minutes'"
        " from durable.runs where id = %s",
        [run],
    ).fetchone()[0]
    assert conn.execute(
        "select status, attempts from durable.steps where run_id = %s", [run]
    ).fetchone() == ("retrying", 1)


def test_non_retryable_exception_fails_at_once(conn):
    run = start(conn, "app.non_retryable")
    work_until_finished(conn, [run])
    state = run_state(conn, run)
    assert state["status"] == "failed"
    assert state["error"]["message"] == "the card was declined"
    assert len(attempts(conn, run)) == 1


@pytest.mark.parametrize("workflow", ["app.listed", "app.listed_class"])
def test_listed_non_retryable_errors_fail_at_once(conn, workflow):
    run = start(conn, workflow)
    work_until_finished(conn, [run])
    assert run_state(conn, run)["status"] == "failed"
    assert len(attempts(conn, run)) == 1


def test_bad_retry_policy_fails_the_run_with_a_clear_error(conn):
    run = start(conn, "app.bad_policy")
    work_until_finished(conn, [run])
    state = run_state(conn, run)
    assert state["status"] == "failed"
    assert state["error"]["sqlstate"] == "22023"
    assert "max_atempts" in state["error"]["message"]


def test_registered_defaults_apply_to_steps(conn):
    conn.execute(
        "select durable.register_workflow('app.registered',"
        ' retry => \'{"max_attempts": 2, "initial_interval": 0.01}\')'
    )
    run = start(conn, "app.registered")
    work_until_finished(conn, [run])
    assert run_state(conn, run)["status"] == "failed"
    assert len(attempts(conn, run)) == 2


def test_settings_are_the_last_default(conn):
    conn.execute(
        "delete from durable._workflow_options where workflow = 'app.registered'"
    )
    conn.execute(
        "update durable._settings set value = '1' where key = 'retry.max_attempts'"
    )
    try:
        run = start(conn, "app.registered")
        work_until_finished(conn, [run])
        assert len(attempts(conn, run)) == 1
    finally:
        conn.execute(
            "update durable._settings set value = '3' where key = 'retry.max_attempts'"
        )


def test_workflow_level_attempts_rerun_from_the_checkpoints(conn):
    conn.execute(
        "select durable.register_workflow('app.body_flaky', max_attempts => 2,"
        " retry => '{\"initial_interval\": 0.01}')"
    )
    run = start(conn, "app.body_flaky")
    work_until_finished(conn, [run])
    state = run_state(conn, run)
    assert state["status"] == "succeeded", state["error"]
    assert state["result"] == {"attempt": 2}
    once = conn.execute(
        "select count(*) from app.effects where run_id = %s and step = 'once'", [run]
    ).fetchone()[0]
    assert once == 1


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ("retry => '{\"bogus\": 1}'", "bogus"),
        ("retry => '{\"max_attempts\": 0}'", "max_attempts"),
        ("max_attempts => 0", "max_attempts"),
        ("timeout => '-1 second'", "timeout"),
    ],
)
def test_register_workflow_validates(conn, arguments, fragment):
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(f"select durable.register_workflow('app.registered', {arguments})")
    assert raised.value.sqlstate == "22023"
    assert fragment in raised.value.diag.message_primary
    assert raised.value.diag.message_hint
