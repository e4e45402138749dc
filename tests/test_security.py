"""Per-role isolation, privileges, escapes from a step, limits, hostile input.

Roles: alice and bob use durable (grant_usage), carol is a member of durable_admin,
dave has no usage at all. Workflow functions are created by the superuser (PL/Python
is an untrusted language) and granted to alice and bob.
"""

from __future__ import annotations

import psycopg
import pytest
from conftest import create_roles, drain
from psycopg.types.json import Jsonb

ROLES = ("alice", "bob", "carol", "dave")

SETUP = """
create schema if not exists app;
grant usage on schema app to alice, bob, carol;
create table if not exists app.bob_private (secret text);
revoke all on app.bob_private from public;
grant select on app.bob_private to bob;
create or replace function app.whoami(input jsonb) returns jsonb
language plpython3u as $$
rows = wf.step("who", "select current_user as cu, session_user as su")
return rows[0]
$$;
create or replace function app.escape(input jsonb) returns jsonb
language plpython3u as $$
attempt = input["attempt"]
def run(sql):
    try:
        plpy.execute(sql)
        return "ok"
    except plpy.SPIError as exc:
        return exc.sqlstate
outcome = wf.step("escape", run, attempt)
who = wf.step("who", "select current_user as cu, session_user as su")[0]
try:
    plpy.execute("select * from app.bob_private")
    read = "read"
except plpy.SPIError as exc:
    read = exc.sqlstate
return {"outcome": outcome, "who": who, "bob_private": read}
$$;
create or replace function app.big(input jsonb) returns jsonb
language plpython3u as $$
return {"blob": "x" * input["size"]}
$$;
create or replace function app.many_steps(input jsonb) returns jsonb
language plpython3u as $$
for i in range(input["n"]):
    wf.step("s%d" % i, "select 1")
$$;
create or replace function app.many_children(input jsonb) returns jsonb
language plpython3u as $$
wf.parallel([("app.whoami", {}) for _ in range(input["n"])])
$$;
revoke execute on function app.whoami(jsonb), app.escape(jsonb), app.big(jsonb),
    app.many_steps(jsonb), app.many_children(jsonb) from public;
grant execute on function app.whoami(jsonb), app.escape(jsonb), app.big(jsonb),
    app.many_steps(jsonb), app.many_children(jsonb) to alice, bob, carol;
"""


@pytest.fixture(scope="module", autouse=True)
def roles(cluster, dbname):
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        create_roles(conn, ROLES, admins=("carol",))
        for role in ("alice", "bob"):
            conn.execute("select durable.grant_usage(%s)", [role])
        conn.execute(SETUP)


def start(conn, workflow, value=None):
    return conn.execute(
        "select durable.start(%s, %s)::text", [workflow, Jsonb(value or {})]
    ).fetchone()[0]


def sqlstate_of(conn, sql, params=()):
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(sql, params)
    return raised.value.sqlstate


def test_a_role_sees_only_its_own_runs_and_admins_see_all(as_role):
    alice, bob, carol = as_role("alice"), as_role("bob"), as_role("carol")
    run = start(alice, "app.whoami")
    assert alice.execute("select count(*) from durable.runs where id = %s", [run]
                         ).fetchone()[0] == 1  # fmt: skip
    assert bob.execute("select count(*) from durable.runs where id = %s", [run]
                       ).fetchone()[0] == 0  # fmt: skip
    assert carol.execute("select count(*) from durable.runs where id = %s", [run]
                         ).fetchone()[0] == 1  # fmt: skip
    for sql in (
        "select durable.status(%s)",
        "select durable.result(%s)",
        "select durable.signal(%s, 'x')",
        "select durable.cancel(%s)",
        "select durable.retry(%s)",
    ):
        assert sqlstate_of(bob, sql, [run]) == "DU010", sql
    assert carol.execute("select durable.cancel(%s)", [run]).fetchone()[0] is True


def test_workers_run_only_their_roles_runs_with_that_roles_privileges(as_role):
    alice, bob = as_role("alice"), as_role("bob")
    run = start(alice, "app.whoami")
    drain(bob)
    assert alice.execute("select durable.status(%s)", [run]).fetchone()[0] == "pending"
    drain(alice)
    result = alice.execute("select durable.result(%s)", [run]).fetchone()[0]
    assert result == {"cu": "alice", "su": "alice"}


@pytest.mark.parametrize(
    ("attempt", "outcome"),
    [
        ("reset role", "ok"),
        ("set role bob", "42501"),
        ("select set_config('role', 'bob', false)", "42501"),
        ("set session authorization bob", "42501"),
        ("set role durable_admin", "42501"),
    ],
)
def test_a_step_cannot_escape_its_owner(as_role, attempt, outcome):
    alice = as_role("alice")
    run = start(alice, "app.escape", {"attempt": attempt})
    drain(alice)
    result = alice.execute("select durable.result(%s)", [run]).fetchone()[0]
    assert result == {
        "outcome": outcome,
        "who": {"cu": "alice", "su": "alice"},
        "bob_private": "42501",
    }


def test_starting_needs_execute_on_the_workflow(as_role, conn):
    conn.execute("revoke execute on function app.whoami(jsonb) from bob")
    try:
        assert sqlstate_of(as_role("bob"), "select durable.start('app.whoami')") == (
            "42501"
        )
    finally:
        conn.execute("grant execute on function app.whoami(jsonb) to bob")


def test_privilege_is_checked_again_before_a_resume(as_role, conn):
    conn.execute(
        """
        create or replace function app.pausing(input jsonb) returns jsonb
        language plpython3u as $$
        wf.wait_for_signal("go")
        return {"resumed": True}
        $$;
        revoke execute on function app.pausing(jsonb) from public;
        grant execute on function app.pausing(jsonb) to alice;
        """
    )
    alice = as_role("alice")
    run = start(alice, "app.pausing")
    drain(alice)
    conn.execute("revoke execute on function app.pausing(jsonb) from alice")
    alice.execute("select durable.signal(%s, 'go')", [run])
    drain(alice)
    state = alice.execute(
        "select status, error->>'sqlstate' from durable.runs where id = %s", [run]
    ).fetchone()
    assert state == ("failed", "42501")


def test_a_role_without_usage_can_call_nothing(as_role):
    dave = as_role("dave")
    for sql in (
        "select durable.start('app.whoami')",
        "select durable.status(gen_random_uuid())",
        "select durable.signal(gen_random_uuid(), 'x')",
        "select durable.cancel(gen_random_uuid())",
        "select durable.schedule('s', '* * * * *', 'app.whoami')",
        "select durable.define_workflow('app.d', '{\"steps\": []}')",
        "select * from durable.runs",
        "call durable.run_worker(drain => true)",
    ):
        assert sqlstate_of(dave, sql) == "42501", sql


def test_grant_and_revoke_usage(conn, as_role):
    conn.execute("select durable.grant_usage('dave')")
    try:
        dave = as_role("dave")
        assert dave.execute("select count(*) from durable.runs").fetchone()[0] == 0
    finally:
        conn.execute("select durable.revoke_usage('dave')")
    assert sqlstate_of(as_role("dave"), "select count(*) from durable.runs") == "42501"
    assert sqlstate_of(conn, "select durable.grant_usage('nobody')") == "42704"


def test_nothing_is_granted_to_public(conn):
    granted = conn.execute(
        "select count(*) from pg_proc p, aclexplode(p.proacl) a"
        " where p.pronamespace = 'durable'::regnamespace and a.grantee = 0"
    ).fetchone()[0]
    assert granted == 0


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        ("select durable.start('app.whoami', %s)", [Jsonb({"x": "y" * 2000})]),
        ("select durable.signal(%s, 'x', %s)", None),
    ],
)
def test_oversized_payloads_are_refused(conn, as_role, sql, params):
    conn.execute(
        "update durable._settings set value = '1000'"
        " where key = 'limits.max_payload_bytes'"
    )
    try:
        alice = as_role("alice")
        if params is None:
            run = start(alice, "app.escape", {"attempt": "reset role"})
            params = [run, Jsonb({"x": "y" * 2000})]
        assert sqlstate_of(alice, sql, params) == "54000"
    finally:
        conn.execute(
            "update durable._settings set value = '1048576'"
            " where key = 'limits.max_payload_bytes'"
        )


def test_a_deeply_nested_definition_is_refused(conn):
    """A definition nested deeper than limits.max_payload_depth is refused (54000)
    before it is validated, and nothing is written."""
    conn.execute("create schema if not exists app")
    deep = {"steps": [{"name": "s", "sql": "select 1", "note": [[[[[[1]]]]]]}]}
    conn.execute(
        "update durable._settings set value = '5'"
        " where key = 'limits.max_payload_depth'"
    )
    try:
        state = sqlstate_of(
            conn, "select durable.define_workflow('app.deep', %s)", [Jsonb(deep)]
        )
    finally:
        conn.execute(
            "update durable._settings set value = '100'"
            " where key = 'limits.max_payload_depth'"
        )
    assert state == "54000"
    assert (
        conn.execute(
            "select count(*) from durable._sql_workflows where name = 'app.deep'"
        ).fetchone()[0]
        == 0
    )


def test_limits_on_results_steps_and_children(conn, as_role):
    conn.execute(
        "update durable._settings set value = case key"
        " when 'limits.max_payload_bytes' then '1000'"
        " when 'limits.max_steps_per_run' then '5'"
        " when 'limits.max_children' then '3' else value end"
    )
    try:
        alice = as_role("alice")
        runs = [
            start(alice, "app.big", {"size": 5000}),
            start(alice, "app.many_steps", {"n": 6}),
            start(alice, "app.many_children", {"n": 4}),
        ]
        drain(alice)
        states = [
            alice.execute(
                "select status, error->>'sqlstate' from durable.runs where id = %s", [r]
            ).fetchone()
            for r in runs
        ]
        assert states == [("failed", "54000")] * 3
    finally:
        conn.execute(
            "update durable._settings set value = case key"
            " when 'limits.max_payload_bytes' then '1048576'"
            " when 'limits.max_steps_per_run' then '10000'"
            " when 'limits.max_children' then '1000' else value end"
        )


@pytest.mark.parametrize(
    "sql",
    [
        "select durable.start('app.whoami''; drop table app.bob_private; --')",
        "select durable.start('app.whoami', '{}',"
        " queue => 'q''; drop table app.bob_private')",
        "select durable.schedule('x''); drop table app.bob_private; --', '* * * * *',"
        " 'app.whoami')",
        "select durable.signal(durable.start('app.whoami'),"
        " 'go''; drop table app.bob_private; --')",
        'select durable.define_workflow(\'app.inj\', \'{"steps": [{"name":'
        ' "x\\"; drop table app.bob_private; --", "sql": "select 1"}]}\')',
    ],
)
def test_injection_attempts_are_data(conn, sql):
    try:
        conn.execute(sql)
    except psycopg.Error as exc:
        assert exc.sqlstate not in (None, "XX000", "38000")
    assert conn.execute("select to_regclass('app.bob_private') is not null").fetchone()[
        0
    ]


@pytest.mark.parametrize(
    "sql",
    [
        "select durable.start(null)",
        "select durable.start('app.whoami', queue => null)",
        "select durable.status(null)",
        "select durable.result(null)",
        "select durable.wait(null)",
        "select durable.signal(null, 'x')",
        "select durable.signal(gen_random_uuid(), null)",
        "select durable.cancel(null)",
        "select durable.retry(null)",
        "select durable.migrate_run(null)",
        "select durable.schedule(null, '* * * * *', 'app.whoami')",
        "select durable.schedule('s', null, 'app.whoami')",
        "select durable.schedule('s', '* * * * *', null)",
        "select durable.unschedule(null)",
        "select durable.define_workflow(null, '{}')",
        "select durable.define_workflow('app.n', null)",
        "select durable.register_workflow(null)",
        "select durable.grant_usage(null)",
        "select durable.explain(null)",
        "select durable.graph(null)",
    ],
)
def test_nulls_are_clear_errors(conn, sql):
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(sql)
    assert raised.value.sqlstate not in (None, "XX000", "38000")
    assert raised.value.diag.message_primary


def test_invalid_uuid_is_a_clear_error(conn):
    assert sqlstate_of(conn, "select durable.status('not-a-uuid')") == "22P02"


def test_registering_a_function_one_cannot_execute_is_refused(conn, as_role):
    conn.execute(
        """
        create or replace function app.admin_only(input jsonb) returns jsonb
        language plpython3u as $$ return {} $$;
        revoke execute on function app.admin_only(jsonb) from public;
        """
    )
    bob = as_role("bob")
    for sql in (
        "select durable.register_workflow('app.admin_only', max_attempts => 2)",
        "select durable.schedule('b', '* * * * *', 'app.admin_only')",
        "select durable.start('app.admin_only')",
    ):
        assert sqlstate_of(bob, sql) == "42501", sql
