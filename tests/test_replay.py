"""Replay after resuming, recorded values, determinism, pinned code and timers."""

from __future__ import annotations

import time

import psycopg
import pytest
from conftest import drain, run_state, start, work_until_finished

WORKFLOWS = """
create schema if not exists app;
create table if not exists app.effects (run_id uuid, step text);
create table if not exists app.switch (on_ boolean);

create or replace function app.sleeper(input jsonb) returns jsonb
language plpython3u as $$
wf.step("before", "insert into app.effects values ($1, 'before')", [wf.run_id])
values = {"now": wf.now().isoformat(), "uuid": wf.uuid(), "random": wf.random()}
wf.sleep(input.get("seconds", 0.3))
wf.step("after", "insert into app.effects values ($1, 'after')", [wf.run_id])
return {"values": values, "again": {"now": values["now"]}, "version": 1}
$$;

create or replace function app.until(input jsonb) returns jsonb
language plpython3u as $$
wf.sleep_until(input["at"])
return {"woke": True}
$$;

create or replace function app.branches(input jsonb) returns jsonb
language plpython3u as $$
on = plpy.execute("select coalesce(bool_or(on_), false) as on from app.switch")[0]["on"]
wf.step("first" if not on else "other", "select 1")
wf.sleep(0.2)
wf.step("last", "select 1")
return {}
$$;

create or replace function app.values_twice(input jsonb) returns jsonb
language plpython3u as $$
first = [wf.now().timestamp(), wf.uuid(), wf.random()]
wf.sleep(0.2)
return {"first": first}
$$;
"""


@pytest.fixture(autouse=True)
def workflows(conn):
    conn.execute(WORKFLOWS)


def effects(conn, run):
    return conn.execute(
        "select step, count(*) from app.effects where run_id = %s group by step"
        " order by step",
        [run],
    ).fetchall()


def test_sleep_parks_the_run_and_resumes_without_repeating_steps(conn):
    run = start(conn, "app.sleeper", {"seconds": 0.5})
    drain(conn)
    state = run_state(conn, run)
    assert state["status"] == "sleeping"
    assert conn.execute(
        "select wake_at between now() + interval '0.2 s' and now() + interval '1 s'"
        " from durable.runs where id = %s",
        [run],
    ).fetchone()[0]
    work_until_finished(conn, [run])
    assert run_state(conn, run)["status"] == "succeeded"
    assert effects(conn, run) == [("after", 1), ("before", 1)]


def test_timer_lateness_with_an_idle_worker_is_well_under_a_second(connect):
    conn = connect()
    run = start(conn, "app.sleeper", {"seconds": 0.3})
    conn.execute("call durable.run_worker(max_runtime => '1.5 seconds')")
    lateness = conn.execute(
        "select extract(epoch from after.started_at)::float8"
        " - (timer.output->>'until')::float8"
        " from durable.steps as after join durable.steps as timer using (run_id)"
        " where after.run_id = %s and after.name = 'after' and timer.kind = 'sleep'",
        [run],
    ).fetchone()[0]
    assert run_state(conn, run)["status"] == "succeeded"
    assert 0 <= lateness < 0.5


def test_recorded_values_replay_identically(conn):
    run = start(conn, "app.values_twice")
    drain(conn)
    recorded = conn.execute(
        "select array_agg(output::text order by seq) from durable.steps"
        " where run_id = %s and kind = 'value'",
        [run],
    ).fetchone()[0]
    work_until_finished(conn, [run])
    result = run_state(conn, run)["result"]
    assert len(recorded) == 3
    assert [str(v) for v in result["first"][1:2]] == [recorded[1].strip('"')]
    assert result["first"][2] == float(recorded[2])


def test_sleep_until(conn):
    # Far enough ahead that the drain ends before it, even on a busy machine.
    at = conn.execute("select (now() + interval '2 s')::text").fetchone()[0]
    run = start(conn, "app.until", {"at": at.replace(" ", "T")})
    drain(conn)
    assert run_state(conn, run)["status"] == "sleeping"
    work_until_finished(conn, [run])
    assert run_state(conn, run)["result"] == {"woke": True}


def test_changed_step_order_fails_as_nondeterministic(conn):
    conn.execute("delete from app.switch")
    run = start(conn, "app.branches")
    drain(conn)
    conn.execute("insert into app.switch values (true)")
    work_until_finished(conn, [run])
    state = run_state(conn, run)
    assert state["status"] == "failed"
    assert state["error"]["sqlstate"] == "DU020"
    assert '"other"' in state["error"]["message"]
    assert '"first"' in state["error"]["message"]
    conn.execute("delete from app.switch")


def test_create_or_replace_does_not_touch_an_in_flight_run(conn):
    run = start(conn, "app.sleeper", {"seconds": 0.3})
    drain(conn)
    conn.execute(
        """
        create or replace function app.sleeper(input jsonb) returns jsonb
        language plpython3u as $$
        wf.step("new code", "select 1")
        return {"version": 2}
        $$;
        """
    )
    new_run = start(conn, "app.sleeper")
    work_until_finished(conn, [run, new_run])
    assert run_state(conn, run)["result"]["version"] == 1
    assert run_state(conn, new_run)["result"] == {"version": 2}
    versions = conn.execute(
        "select count(*) from durable._workflow_versions where workflow = 'app.sleeper'"
    ).fetchone()[0]
    assert versions == 2
    conn.execute(WORKFLOWS)


def test_migrate_run_moves_a_run_to_the_current_code(conn):
    conn.execute(WORKFLOWS)
    run = start(conn, "app.sleeper", {"seconds": 0.3})
    drain(conn)
    conn.execute(
        """
        create or replace function app.sleeper(input jsonb) returns jsonb
        language plpython3u as $$
        wf.step("before", "select 1")
        wf.now(); wf.uuid(); wf.random()
        wf.sleep(input.get("seconds", 0.3))
        return {"version": 3}
        $$;
        """
    )
    assert conn.execute("select durable.migrate_run(%s)", [run]).fetchone()[0] is True
    assert conn.execute("select durable.migrate_run(%s)", [run]).fetchone()[0] is False
    work_until_finished(conn, [run])
    assert run_state(conn, run)["result"] == {"version": 3}
    assert (
        conn.execute(
            "select durable.migrate_run(%s, to_latest => false)", [run]
        ).fetchone()[0]
        is True
    )
    conn.execute(WORKFLOWS)


def test_migrate_run_of_unknown_run(conn):
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("select durable.migrate_run(gen_random_uuid())")
    assert raised.value.sqlstate == "DU010"


def test_sleep_takes_interval_text(conn):
    conn.execute(
        """
        create or replace function app.interval_sleep(input jsonb) returns jsonb
        language plpython3u as $$
        wf.sleep("10 minutes")
        $$;
        """
    )
    run = start(conn, "app.interval_sleep")
    started = time.time()
    drain(conn)
    wake = conn.execute(
        "select extract(epoch from wake_at) from durable.runs where id = %s", [run]
    ).fetchone()[0]
    assert 590 < float(wake) - started < 610
