"""Names other roles could squat or confuse: SQL workflow names, schedules, launchers.

Roles (non-superuser, LOGIN, given durable.grant_usage()): sn_owner owns schema app;
sn_user has only USAGE on app and owns schema sn_mine; sn_other also gets CREATE on app;
sn_admin is a member of durable_admin with CREATE on app.
"""

from __future__ import annotations

import time

import psycopg
import pytest
from conftest import create_roles
from psycopg.types.json import Jsonb

ROLES = ("sn_owner", "sn_user", "sn_other", "sn_admin")

SETUP = """
create schema app authorization sn_owner;
grant usage on schema app to sn_user, sn_other, sn_admin;
grant create on schema app to sn_other, sn_admin;
create schema sn_mine authorization sn_user;
create function public.sn_tick(input jsonb) returns jsonb
language plpython3u as $$
return {"tick": True}
$$;
revoke execute on function public.sn_tick(jsonb) from public;
grant execute on function public.sn_tick(jsonb) to sn_user, sn_other;
"""

ONE_STEP = {"steps": [{"name": "one", "sql": "select 1 as one"}]}
TWO_STEPS = {
    "steps": [
        {"name": "one", "sql": "select 1 as one"},
        {"name": "two", "sql": "select 2 as two"},
    ]
}


@pytest.fixture(scope="module", autouse=True)
def roles(cluster, dbname):
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        create_roles(conn, ROLES, admins=("sn_admin",))
        for role in ROLES:
            conn.execute("select durable.grant_usage(%s)", [role])
        conn.execute(SETUP)


def define(conn, name, definition):
    return conn.execute(
        "select durable.define_workflow(%s, %s)", [name, Jsonb(definition)]
    ).fetchone()[0]


def error_of(conn, sql, params=()):
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(sql, params)
    return raised.value


def definition_of(conn, name):
    """(owner, definition) of a SQL workflow, read as the superuser."""
    row = conn.execute(
        "select w.owner, v.source::jsonb from durable._sql_workflows as w"
        " join durable._workflow_versions as v on v.id = w.version_id"
        " where w.name = %s",
        [name],
    ).fetchone()
    if row is None:
        return None
    return row[0], {
        "steps": [{k: step[k] for k in ("name", "sql")} for step in row[1]["steps"]]
    }


# SQL workflow names


def test_defining_needs_create_on_the_schema_and_does_not_tell_if_the_name_exists(
    as_role, conn
):
    owner, user = as_role("sn_owner"), as_role("sn_user")
    assert define(owner, "app.taken", ONE_STEP) == "app.taken"

    free = error_of(
        user, "select durable.define_workflow('app.free', %s)", [Jsonb(ONE_STEP)]
    )
    taken = error_of(
        user, "select durable.define_workflow('app.taken', %s)", [Jsonb(TWO_STEPS)]
    )
    assert free.sqlstate == taken.sqlstate == "42501"
    assert free.diag.message_primary.replace("free", "NAME") == (
        taken.diag.message_primary.replace("taken", "NAME")
    )
    assert free.diag.message_hint == taken.diag.message_hint
    assert "CREATE" in free.diag.message_hint
    assert "app.free" in free.diag.message_primary
    # the same through search_path (unqualified name, current schema app)
    user.execute("set search_path = app, public")
    unqualified = error_of(
        user, "select durable.define_workflow('taken', %s)", [Jsonb(TWO_STEPS)]
    )
    assert unqualified.sqlstate == "42501"
    assert unqualified.diag.message_primary == taken.diag.message_primary

    assert definition_of(conn, "app.free") is None
    assert definition_of(conn, "app.taken") == ("sn_owner", ONE_STEP)


def test_the_schema_owner_defines_and_redefines(as_role, conn):
    owner = as_role("sn_owner")
    assert define(owner, "app.mine", ONE_STEP) == "app.mine"
    assert define(owner, "app.mine", TWO_STEPS) == "app.mine"
    assert definition_of(conn, "app.mine") == ("sn_owner", TWO_STEPS)
    versions = conn.execute(
        "select count(*), bool_and(owner = 'sn_owner') from durable._workflow_versions"
        " where workflow = 'app.mine'"
    ).fetchone()
    assert versions == (2, True)


def test_names_are_per_schema(as_role, conn):
    define(as_role("sn_owner"), "app.shared_name", ONE_STEP)
    user = as_role("sn_user")
    assert define(user, "sn_mine.shared_name", TWO_STEPS) == "sn_mine.shared_name"
    assert definition_of(conn, "app.shared_name") == ("sn_owner", ONE_STEP)
    assert definition_of(conn, "sn_mine.shared_name") == ("sn_user", TWO_STEPS)


def test_replacing_another_roles_definition_is_refused(as_role, conn):
    define(as_role("sn_owner"), "app.guarded", ONE_STEP)
    other = as_role("sn_other")  # has CREATE on app
    error = error_of(
        other, "select durable.define_workflow('app.guarded', %s)", [Jsonb(TWO_STEPS)]
    )
    assert error.sqlstate == "42501"
    assert "app.guarded" in error.diag.message_primary
    assert "durable_admin" in error.diag.message_hint
    assert definition_of(conn, "app.guarded") == ("sn_owner", ONE_STEP)
    # while a name nobody took is free for it
    assert define(other, "app.others", ONE_STEP) == "app.others"


def test_a_durable_admin_may_replace_and_the_owner_stays(as_role, conn):
    define(as_role("sn_owner"), "app.managed", ONE_STEP)
    assert define(as_role("sn_admin"), "app.managed", TWO_STEPS) == "app.managed"
    assert definition_of(conn, "app.managed") == ("sn_owner", TWO_STEPS)
    # and the owner may still replace it afterwards
    define(as_role("sn_owner"), "app.managed", ONE_STEP)
    assert definition_of(conn, "app.managed") == ("sn_owner", ONE_STEP)


# Schedules


def schedules_seen(conn):
    return conn.execute(
        "select coalesce(array_agg(name || '/' || owner order by name, owner), '{}')"
        " from durable.schedules"
    ).fetchone()[0]


def test_a_roles_schedules_are_invisible_and_unchangeable_to_another(as_role, conn):
    user, other = as_role("sn_user"), as_role("sn_other")
    user.execute("select durable.schedule('nightly', '0 3 * * *', 'public.sn_tick')")
    before = conn.execute(
        "select cron, next_fire_at from durable._schedules"
        " where name = 'nightly' and owner = 'sn_user'"
    ).fetchone()

    assert schedules_seen(other) == []
    assert schedules_seen(user) == ["nightly/sn_user"]
    assert other.execute("select durable.unschedule('nightly')").fetchone()[0] is False
    # the same name is another role's own schedule, not a change of sn_user's
    other.execute("select durable.schedule('nightly', '0 4 * * *', 'public.sn_tick')")
    assert schedules_seen(other) == ["nightly/sn_other"]
    assert other.execute("select durable.unschedule('nightly')").fetchone()[0] is True
    # the worker-side functions act only on the session user's schedules
    conn.execute(
        "update durable._schedules set next_fire_at = now() - interval '1 minute'"
        " where name = 'nightly' and owner = 'sn_user'"
    )
    assert (
        other.execute("select count(*) from durable._due_schedules(20)").fetchone()[0]
        == 0
    )
    assert (
        other.execute(
            "select durable._schedule_fired('nightly', '{}', '{}', now())"
        ).fetchone()[0]
        is False
    )
    after = conn.execute(
        "select cron, next_fire_at < now() from durable._schedules"
        " where name = 'nightly' and owner = 'sn_user'"
    ).fetchone()
    assert after == (before[0], True)
    assert user.execute("select durable.unschedule('nightly')").fetchone()[0] is True


def test_a_fire_records_only_runs_of_its_own_role(as_role, conn):
    user, other = as_role("sn_user"), as_role("sn_other")
    user.execute("select durable.schedule('mine', '0 3 * * *', 'public.sn_tick')")
    run = other.execute("select durable.start('public.sn_tick')::text").fetchone()[0]
    error = error_of(
        user,
        "select durable._schedule_fired('mine', array[now()], array[%s::uuid], now())",
        [run],
    )
    assert error.sqlstate == "22023"
    assert error.diag.message_hint
    user.execute("select durable.unschedule('mine')")


def test_a_workers_fires_start_runs_of_its_role(as_role, conn):
    user = as_role("sn_user")
    user.execute(
        "select durable.schedule('every-second', '1 second', 'public.sn_tick')"
    )
    try:
        user.execute("call durable.run_worker(max_runtime => '1.5 seconds')")
        fires = user.execute(
            "select count(*), bool_and(outcome = 'started') from durable.schedule_fires"
            " where schedule = 'every-second'"
        ).fetchone()
        assert fires[0] > 0 and fires[1]
        owners = conn.execute(
            "select array_agg(distinct r.owner) from durable._schedule_fires as f"
            " join durable._runs as r on r.id = f.run_id"
            " where f.schedule = 'every-second'"
        ).fetchone()[0]
        assert owners == ["sn_user"]
        last = conn.execute(
            "select last_run is not null and last_fire_at is not null"
            " from durable._schedules where name = 'every-second'"
        ).fetchone()[0]
        assert last
    finally:
        user.execute("select durable.unschedule('every-second')")


# Launchers (pg_cron)


@pytest.fixture
def cron_db(cluster, pg_cron):
    """The database of pg_cron (cron.database_name is postgres in the test cluster)."""
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute("create extension if not exists pg_cron")
        conn.execute("create extension if not exists durable cascade")
        create_roles(conn, ROLES, admins=("sn_admin",))
        conn.execute("select durable.grant_usage('sn_user')")
        conn.execute("select durable.uninstall_workers()")
        try:
            yield conn
        finally:
            conn.execute("select durable.uninstall_workers()")
            conn.execute("select pg_terminate_backend(pid) from durable._workers")
            time.sleep(0.1)


def pools(conn):
    """{queue of the job's command: number of jobs} of this database's durable jobs."""
    rows = conn.execute(
        "select command from cron.job where database = current_database()"
        " and jobname like 'durable-worker%'"
    ).fetchall()
    found: dict = {}
    for (command,) in rows:
        queue = None
        if "queue => " in command:
            queue = command.split("queue => '", 1)[1].split("', max_runtime", 1)[0]
            queue = queue.replace("''", "'")
        found[queue] = found.get(queue, 0) + 1
    return found


LONG_A = "q" * 80 + "a"
LONG_B = "q" * 80 + "b"


def test_launcher_names_do_not_collide_and_match_exactly(cron_db):
    conn = cron_db
    for queue, count in [
        (None, 2),
        ("*", 1),
        ("a", 1),
        ("a:b", 1),
        ("a'b", 1),
        (LONG_A, 1),
        (LONG_B, 1),
    ]:
        conn.execute("select durable.install_workers(%s, queue => %s)", [count, queue])
    expected = {None: 2, "*": 1, "a": 1, "a:b": 1, "a'b": 1, LONG_A: 1, LONG_B: 1}
    assert pools(conn) == expected
    names = [
        r[0]
        for r in conn.execute(
            "select jobname from cron.job where jobname like 'durable-worker%'"
        ).fetchall()
    ]
    assert len(set(names)) == len(names) == 8
    assert all(len(name.encode()) <= 63 for name in names)

    # installing again replaces exactly that pool
    conn.execute("select durable.install_workers(3, queue => 'a')")
    conn.execute("select durable.install_workers(1, queue => null)")
    expected.update({"a": 3, None: 1})
    assert pools(conn) == expected

    # uninstalling one queue leaves every other, whatever its name starts with
    assert conn.execute("select durable.uninstall_workers('a')").fetchone()[0] == 3
    del expected["a"]
    assert pools(conn) == expected
    assert conn.execute("select durable.uninstall_workers('*')").fetchone()[0] == 1
    del expected["*"]
    assert pools(conn) == expected
    assert (
        conn.execute("select durable.uninstall_workers(%s)", [LONG_A]).fetchone()[0]
        == 1
    )
    del expected[LONG_A]
    assert pools(conn) == expected
    # a role filter
    assert (
        conn.execute(
            "select durable.uninstall_workers(queue => 'a:b', role => 'sn_user')"
        ).fetchone()[0]
        == 0
    )
    # no arguments: all of this database's workers
    assert conn.execute("select durable.uninstall_workers()").fetchone()[0] == 4
    assert pools(conn) == {}


def test_install_workers_needs_a_superuser(cron_db, as_role):
    user = as_role("sn_user", "postgres")
    error = error_of(user, "select durable.install_workers(1)")
    assert error.sqlstate == "42501"
    assert "sn_user" in error.diag.message_primary
    assert "superuser" in error.diag.message_hint
    assert "durablectl worker" in error.diag.message_hint
    error = error_of(user, "select durable.install_workers(1, role => 'sn_user')")
    assert error.sqlstate == "42501"
    assert pools(cron_db) == {}
    # a superuser installs the role's pool; the role sees and removes only its own jobs
    cron_db.execute(
        "select durable.install_workers(1, queue => 'q', role => 'sn_user')"
    )
    cron_db.execute("select durable.install_workers(1, queue => 'q')")
    error = error_of(user, "select durable.uninstall_workers()")
    assert error.sqlstate == "42501"
    assert "superuser" in error.diag.message_hint
    cron_db.execute("grant usage on schema cron to sn_user")
    try:
        assert user.execute("select durable.uninstall_workers()").fetchone()[0] == 1
    finally:
        cron_db.execute("revoke usage on schema cron from sn_user")
    assert pools(cron_db) == {"q": 1}
    owner = cron_db.execute(
        "select username from cron.job where jobname like 'durable-worker%'"
    ).fetchone()[0]
    assert owner == "postgres"
