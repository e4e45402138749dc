"""Attacks by ordinary roles on durable's tables, locks, sequences, names and internals.

The attackers are LOGIN roles without superuser: alice and bob use durable
(durable.grant_usage), carol is a member of durable_admin. They do not go through the
API only: they write the tables, take the advisory locks a worker took, call the
worker's internal functions, and hand the worker hostile data. Each test states what
must be impossible (docs/security.md, DESIGN.md section 5).

Workflow functions are created by the superuser in schema app (PL/Python is
untrusted) and granted to alice and bob. State is read by the superuser, so that a
test does not depend on what the attacker may read.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from conftest import create_roles, drain, wait_until
from psycopg.types.json import Jsonb

ROLES = ("alice", "bob", "carol")

# The advisory lock class a worker of durable 0.1/0.2 held for its lifetime:
# pg_advisory_lock(WORKER_LOCK_CLASS, worker id).
WORKER_LOCK_CLASS = 1146442306

FINISHED = ("succeeded", "failed", "cancelled")

# start_at of runs that must stay pending.
FAR_FUTURE = "2999-01-01 00:00:00+00"

# A queue without runs: a worker of it stays idle, so its row does not change.
IDLE_QUEUE = "bobonly_idle"

# Every run, schedule, signal and workflow of bob's carries this mark, so that a row
# of bob's is recognised in any table or view (also in aggregates like queue_stats).
BOB_MARK = "bobonly"

# A JSON document nested 5000 levels deep (PostgreSQL parses it; Python's json does
# not, past its recursion limit).
DEEP = "(repeat('[', 5000) || repeat(']', 5000))::jsonb"

SETUP = """
create schema if not exists app;
grant usage on schema app to alice, bob;
create schema if not exists bobonly_flows authorization bob;

create or replace function app.greet(input jsonb) returns jsonb
language plpython3u as $$
rows = wf.step("greet", "select 'hello' as greeting")
return rows[0]
$$;

create or replace function app.slow(input jsonb) returns jsonb
language plpython3u as $$
wf.step("slow", "select pg_sleep($1) as slept", [input.get("seconds", 2)])
return {"slept": True}
$$;

create or replace function app.victim_flow(input jsonb) returns jsonb
language plpython3u as $$
rows = wf.step("legit", "select 'legitimate' as source")
return rows[0]
$$;

create or replace function app.bobonly_greet(input jsonb) returns jsonb
language plpython3u as $$
rows = wf.step("greet", "select 'hello bob' as greeting")
return rows[0]
$$;

create or replace function app.bobonly_fails(input jsonb) returns jsonb
language plpython3u as $$
wf.step("boom", "select 1 / 0 as never", retry={"max_attempts": 1})
$$;

create or replace function app.bobonly_waits(input jsonb) returns jsonb
language plpython3u as $$
return {"got": wf.wait_for_signal("bobonly_go")}
$$;

revoke execute on function app.greet(jsonb), app.slow(jsonb),
    app.victim_flow(jsonb), app.bobonly_greet(jsonb), app.bobonly_fails(jsonb),
    app.bobonly_waits(jsonb) from public;
grant execute on function app.greet(jsonb), app.slow(jsonb),
    app.victim_flow(jsonb) to alice, bob;
grant execute on function app.bobonly_greet(jsonb), app.bobonly_fails(jsonb),
    app.bobonly_waits(jsonb) to bob;
"""


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module", autouse=True)
def roles(cluster, dbname):
    """alice and bob use durable; carol is a durable_admin member (not superuser)."""
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        create_roles(conn, ROLES, admins=("carol",))
        for role in ROLES:
            conn.execute("select durable.grant_usage(%s)", [role])
        conn.execute(SETUP)


class Background:
    """One statement running on its own connection in a thread."""

    def __init__(self, conn: psycopg.Connection, sql: str, params=()):
        self.conn = conn
        self.pid = conn.info.backend_pid
        self.error: psycopg.Error | None = None
        self.thread = threading.Thread(target=self._run, args=(sql, params))
        self.thread.daemon = True
        self.thread.start()

    def _run(self, sql, params):
        try:
            self.conn.execute(sql, params)
        except psycopg.Error as exc:
            self.error = exc

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: float) -> None:
        """Wait for the statement to end; fail the test at the deadline."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            pytest.fail(
                f"statement of backend {self.pid} still running after {timeout}s"
            )


@pytest.fixture
def background(as_role, conn) -> Iterator:
    """Start statements in threads; those still running at the end are terminated
    (before their connections are closed)."""
    started: list[Background] = []

    def run(connection, sql, params=()):
        job = Background(connection, sql, params)
        started.append(job)
        return job

    yield run
    for job in started:
        if job.running:
            conn.execute("select pg_terminate_backend(%s)", [job.pid])
        job.thread.join(10)


def start(conn, workflow, value=None, **options) -> str:
    """durable.start() with a JSON input and named options; the run id as text."""
    names = "".join(f", {key} => %s" for key in options)
    return conn.execute(
        f"select durable.start(%s, %s{names})::text",
        [workflow, Jsonb({} if value is None else value), *options.values()],
    ).fetchone()[0]


def attempt(conn, sql, params=()):
    """Run one statement (autocommit: a success takes effect).

    Returns (SQLSTATE or None when it succeeded, first row or None)."""
    try:
        cur = conn.execute(sql, params)
    except psycopg.Error as exc:
        return exc.sqlstate, None
    return None, cur.fetchone() if cur.description else None


def attempt_rolled_back(conn, sql, params=()):
    """Run one statement in a transaction that is rolled back; its SQLSTATE or None."""
    conn.execute("begin")
    try:
        conn.execute(sql, params)
    except psycopg.Error as exc:
        return exc.sqlstate
    finally:
        conn.execute("rollback")
    return None


def raised(conn, sql, params=()) -> psycopg.Error | None:
    """The error a statement raises, or None when it succeeds (autocommit)."""
    try:
        conn.execute(sql, params)
    except psycopg.Error as exc:
        return exc
    return None


def status_of(su, run) -> str:
    return su.execute(
        "select status from durable._runs where id = %s", [run]
    ).fetchone()[0]


def run_row(su, run) -> dict:
    cur = su.execute(
        "select status, result, error, workflow from durable._runs where id = %s", [run]
    )
    names = [column.name for column in cur.description]
    return dict(zip(names, cur.fetchone()))


def work_until_finished(worker, su, runs, timeout=30.0) -> dict:
    """Run workers on ``worker`` (a role's connection) until every run has finished
    or the deadline has passed; the runs' statuses."""
    deadline = time.monotonic() + timeout
    while True:
        worker.execute("call durable.run_worker(max_runtime => '0.5 seconds')")
        states = {run: status_of(su, run) for run in runs}
        if all(state in FINISHED for state in states.values()):
            return states
        if time.monotonic() > deadline:
            return states


def worker_row(su, pid):
    """The durable._workers row registered by backend ``pid`` (None if none)."""
    cur = su.execute(
        "select id, pid, role::text as role, run_id, step_deadline"
        " from durable._workers where pid = %s",
        [pid],
    )
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([column.name for column in cur.description], row))


def idle_worker(su, conn, background) -> Background:
    """A worker on ``conn`` of a queue without runs (its row does not change)."""
    worker = background(
        conn,
        "call durable.run_worker(queue => %s, max_runtime => '60 seconds')",
        [IDLE_QUEUE],
    )
    wait_until(lambda: worker_row(su, worker.pid) is not None)
    return worker


def dead_workers(su, role) -> int:
    """Rows of ``role``'s workers whose backend has ended."""
    return su.execute(
        "select count(*) from durable._workers as w where w.role = %s"
        " and not exists (select from pg_stat_activity as a where a.pid = w.pid)",
        [role],
    ).fetchone()[0]


def in_pg_sleep(su, pid) -> bool:
    return (
        su.execute(
            "select count(*) from pg_stat_activity"
            " where pid = %s and wait_event = 'PgSleep'",
            [pid],
        ).fetchone()[0]
        == 1
    )


def backend_alive(su, pid) -> bool:
    return (
        su.execute(
            "select count(*) from pg_stat_activity where pid = %s", [pid]
        ).fetchone()[0]
        == 1
    )


def session_works(conn) -> bool:
    try:
        conn.execute("select 1")
    except psycopg.OperationalError:
        return False
    return True


def durable_relations(su, kinds) -> list[str]:
    """Qualified names of the relations of schema durable of the given relkinds."""
    return [
        row[0]
        for row in su.execute(
            "select format('%%I.%%I', n.nspname, c.relname) from pg_class as c"
            " join pg_namespace as n on c.relnamespace = n.oid"
            " where n.nspname = 'durable' and c.relkind = any(%s) order by c.relname",
            [list(kinds)],
        )
    ]


# ------------------------------------------- 1. writing durable's tables directly


def test_no_durable_table_can_be_written_directly(conn, as_role):
    """No role but the extension owner holds INSERT, UPDATE, DELETE or TRUNCATE on a
    table of schema durable: each such statement of alice's fails with 42501."""
    alice = as_role("alice")
    tables = durable_relations(conn, ("r", "p"))
    assert "durable._runs" in tables
    problems = []
    for table in tables:
        column = conn.execute(
            "select quote_ident(attname) from pg_attribute"
            " where attrelid = %s::regclass and attnum > 0 and not attisdropped"
            " and attidentity = '' and attgenerated = '' order by attnum limit 1",
            [table],
        ).fetchone()[0]
        statements = {
            "INSERT": f"insert into {table} default values",
            "UPDATE": f"update {table} set {column} = {column} where false",
            "DELETE": f"delete from {table} where false",
            "TRUNCATE": f"truncate {table}",
        }
        for verb, sql in statements.items():
            state = attempt_rolled_back(alice, sql)
            if state != "42501":
                problems.append(f"{verb} {table}: {state or 'succeeded'}")
        held = alice.execute(
            "select array_remove(array["
            " case when has_any_column_privilege(%(t)s, 'INSERT') then 'INSERT' end,"
            " case when has_any_column_privilege(%(t)s, 'UPDATE') then 'UPDATE' end,"
            " case when has_table_privilege(%(t)s, 'DELETE') then 'DELETE' end,"
            " case when has_table_privilege(%(t)s, 'TRUNCATE') then 'TRUNCATE' end"
            "], null)",
            {"t": table},
        ).fetchone()[0]
        if held:
            problems.append(f"alice holds {', '.join(held)} on {table}")
    assert problems == []


def test_no_durable_sequence_can_be_advanced_or_set(conn, as_role):
    """nextval and setval on every sequence of schema durable fail with 42501."""
    alice = as_role("alice")
    sequences = durable_relations(conn, ("S",))
    assert sequences, "durable has no sequence to attack"
    problems = []
    for sequence in sequences:
        last = conn.execute(f"select last_value from {sequence}").fetchone()[0]
        for sql in (
            f"select nextval('{sequence}')",
            # Forward only: harmless if it were allowed.
            f"select setval('{sequence}', {last + 1000})",
        ):
            state, _ = attempt(alice, sql)
            if state != "42501":
                problems.append(f"{sql}: {state or 'succeeded'}")
    assert problems == []


def test_planted_source_is_never_executed(conn, as_role):
    """alice writes her own Python into durable._workflow_versions (a new version, or
    the source of a version she has) or points a run at it: every statement fails
    with 42501, and her worker then executes only the function's real source."""
    alice = as_role("alice")
    marker = f"/tmp/durable-attack-{uuid.uuid4().hex}"
    evil = f"open({marker!r}, 'w').write('executed')\nreturn {{'planted': True}}"
    try:
        legit = start(alice, "app.victim_flow")
        version = conn.execute(
            "select version_id from durable._runs where id = %s", [legit]
        ).fetchone()[0]
        outcomes = {}
        outcomes["insert a version"], row = attempt(
            alice,
            "insert into durable._workflow_versions"
            " (workflow, kind, source_hash, source, argname)"
            " values ('app.victim_flow', 'python', md5(%s), %s, 'input') returning id",
            [evil, evil],
        )
        planted = row[0] if row else version
        outcomes["update a version's source"], _ = attempt(
            alice,
            "update durable._workflow_versions set source = %s where id = %s",
            [evil, version],
        )
        outcomes["insert a run"], _ = attempt(
            alice,
            "insert into durable._runs (workflow, version_id, original_version_id,"
            " wake_at) values ('app.victim_flow', %s, %s, now())",
            [planted, planted],
        )
        outcomes["repoint a run"], _ = attempt(
            alice,
            "update durable._runs set version_id = %s where id = %s",
            [planted, legit],
        )
        drain(alice)
        assert {
            "statements": outcomes,
            "planted source executed": os.path.exists(marker),
            "result of alice's run": run_row(conn, legit)["result"],
        } == {
            "statements": dict.fromkeys(outcomes, "42501"),
            "planted source executed": False,
            "result of alice's run": {"source": "legitimate"},
        }
    finally:
        if os.path.exists(marker):
            os.remove(marker)


# ------------------------------ 2. killing another backend through someone's worker


def test_a_forged_worker_row_cannot_get_a_session_killed(conn, as_role):
    """alice cannot insert or update rows of durable._workers; a superuser's worker
    doing housekeeping leaves alice's and bob's unrelated sessions alone."""
    alice = as_role("alice")
    victims = {
        "bob's session": as_role("bob"),
        "alice's other session": as_role("alice"),
    }
    outcomes = {}
    for who, victim in victims.items():
        outcomes[f"insert a worker with {who}"], row = attempt(
            alice,
            "insert into durable._workers (pid, role, step_deadline)"
            " values (%s, 'alice', now() - interval '1 hour') returning id",
            [victim.info.backend_pid],
        )
        if row is not None:
            # What made the forged worker look alive to durable 0.2.
            alice.execute(
                "select pg_advisory_lock(%s, %s)", [WORKER_LOCK_CLASS, row[0]]
            )
    outcomes["update workers"], _ = attempt(
        alice, "update durable._workers set step_deadline = now() - interval '1 hour'"
    )
    drain(conn)  # the superuser's worker: housekeeping first
    survivors = {who: session_works(victim) for who, victim in victims.items()}
    assert {"statements": outcomes, "alive": survivors} == {
        "statements": dict.fromkeys(outcomes, "42501"),
        "alive": dict.fromkeys(victims, True),
    }
    for victim in victims.values():
        assert backend_alive(conn, victim.info.backend_pid)


def test_worker_functions_refuse_another_sessions_worker(conn, as_role, background):
    """alice calling the worker's internal functions with the id of bob's worker gets
    an error, and bob's worker row and backend are untouched."""
    functions = {
        "_worker_step": "{id}, null, 0",
        "_worker_heartbeat": "{id}",
        "_worker_unregister": "{id}",
    }
    kinds = dict(
        conn.execute(
            "select proname::text, prokind::text from pg_proc"
            " where pronamespace = 'durable'::regnamespace and proname = any(%s)",
            [list(functions)],
        ).fetchall()
    )
    assert sorted(kinds) == sorted(functions), "internal worker functions missing"
    worker = idle_worker(conn, as_role("bob"), background)
    before = worker_row(conn, worker.pid)
    alice = as_role("alice")
    outcomes = {}
    for name, args in functions.items():
        verb = "call" if kinds[name] == "p" else "select"
        sql = f"{verb} durable.{name}({args.format(id=before['id'])})"
        outcomes[name], _ = attempt(alice, sql)
    assert all(state not in (None, "42883") for state in outcomes.values()), outcomes
    assert worker_row(conn, worker.pid) == before
    assert worker.running, f"bob's worker ended: {worker.error}"
    assert backend_alive(conn, worker.pid)


# --------------------------------------------------------------- 3. advisory locks


def test_advisory_locks_held_by_another_role_cannot_block_a_worker(conn, as_role):
    """alice holds the advisory locks a worker took for its id: bob's worker still
    registers, executes bob's ready run and returns."""
    sequence = conn.execute(
        "select pg_get_serial_sequence('durable._workers', 'id')"
    ).fetchone()[0]
    last = 0
    if sequence is not None:
        last = conn.execute(f"select last_value from {sequence}").fetchone()[0]
    ids = sorted(set(range(1, 201)) | set(range(last + 1, last + 21)))
    alice = as_role("alice")
    alice.execute(
        "select count(pg_advisory_lock(%s, n)) from unnest(%s::integer[]) as n",
        [WORKER_LOCK_CLASS, ids],
    )
    bob = as_role("bob")
    bob.execute("set statement_timeout = '10s'")
    run = start(bob, "app.greet")
    try:
        drain(bob)
    except psycopg.Error as exc:
        pytest.fail(f"bob's worker failed ({exc.sqlstate}): {exc}")
    assert run_row(conn, run)["status"] == "succeeded"


def test_an_advisory_lock_cannot_keep_a_dead_worker_alive(conn, as_role, background):
    """bob's worker is terminated in the middle of a step while alice holds the
    advisory lock of its id: a new worker of bob's reclaims and finishes the run, and
    durable.workers does not show the dead worker as alive."""
    bob = as_role("bob")
    run = start(bob, "app.slow", {"seconds": 2})
    first = background(bob, "call durable.run_worker(drain => true)")
    wait_until(lambda: in_pg_sleep(conn, first.pid))
    dead = worker_row(conn, first.pid)["id"]
    alice = as_role("alice")
    locker = background(
        alice, "select pg_advisory_lock(%s, %s)", [WORKER_LOCK_CLASS, dead]
    )
    conn.execute("select pg_terminate_backend(%s)", [first.pid])
    first.join(10)
    locker.join(10)  # alice now holds the lock
    assert locker.error is None
    states = work_until_finished(as_role("bob"), conn, [run], timeout=20)
    dead_shown_alive = conn.execute(
        "select count(*) from durable.workers where id = %s and alive", [dead]
    ).fetchone()[0]
    assert (states[run], dead_shown_alive) == ("succeeded", 0)


# ------------------------------------------------------------------ 4. poison pills


def nesting_error(error: psycopg.Error) -> str:
    """SQLSTATE, and whether the message or hint names the nesting limit."""
    text = f"{error.diag.message_primary} {error.diag.message_hint}"
    return f"{error.sqlstate} names-limit={bool(re.search('nest|depth', text, re.I))}"


def test_a_deeply_nested_input_cannot_be_started(conn, as_role):
    alice = as_role("alice")
    count = "select count(*) from durable._runs where owner = 'alice'"
    before = conn.execute(count).fetchone()[0]
    try:
        error = raised(alice, f"select durable.start('app.greet', {DEEP})")
        assert error is not None, "durable.start() accepted 5000 levels of nesting"
        assert nesting_error(error) == "54000 names-limit=True", str(error)
        assert conn.execute(count).fetchone()[0] == before
    finally:
        # durable 0.2 accepts it: leave no poison pill to the next tests.
        conn.execute(
            "delete from durable._runs where owner = 'alice'"
            " and input #> '{0,0,0,0}' is not null"
        )


def test_a_deeply_nested_signal_cannot_be_sent(conn, as_role):
    alice = as_role("alice")
    run = start(alice, "app.greet", start_at=FAR_FUTURE)
    count = "select count(*) from durable._signals where run_id = %s"
    try:
        error = raised(alice, f"select durable.signal(%s, 'x', {DEEP})", [run])
        assert error is not None, "durable.signal() accepted 5000 levels of nesting"
        assert nesting_error(error) == "54000 names-limit=True", str(error)
        assert conn.execute(count, [run]).fetchone()[0] == 0
    finally:
        conn.execute("delete from durable._signals where run_id = %s", [run])
        conn.execute("delete from durable._runs where id = %s", [run])


def test_a_deeply_nested_run_cannot_stop_a_worker(conn, as_role):
    """A run whose input is too deep exists anyway (written by the superuser): alice's
    worker fails that run and goes on with her other runs, without an error."""
    alice = as_role("alice")
    legit = start(alice, "app.greet")
    drain(alice)
    poison = conn.execute(
        "insert into durable._runs"
        " (workflow, version_id, original_version_id, input, owner, priority, wake_at)"
        f" select workflow, version_id, version_id, {DEEP}, owner, 10, now()"
        " from durable._runs where id = %s returning id::text",
        [legit],
    ).fetchone()[0]
    try:
        others = [start(alice, "app.greet"), start(alice, "app.greet")]
        error = raised(alice, "call durable.run_worker(drain => true)")
        poisoned = run_row(conn, poison)
        assert error is None, f"the worker failed ({error.sqlstate}): {error}"
        assert (poisoned["status"], poisoned["error"] is not None) == ("failed", True)
        assert [status_of(conn, run) for run in others] == ["succeeded"] * 2
    finally:
        conn.execute("delete from durable._steps where run_id = %s", [poison])
        conn.execute("delete from durable._runs where id = %s", [poison])


def test_an_undecodable_checkpoint_cannot_stop_a_worker(conn, as_role):
    """A checkpoint nested deeper than the engine reads (one written before 0.3.0)
    fails its run when it resumes (DU022); the worker goes on with the others."""
    alice = as_role("alice")
    run = sleeping_run(conn, alice, "app.nap_poisoned")
    conn.execute(
        f"update durable._steps set output = {DEEP} where run_id = %s and seq = 1",
        [run],
    )
    try:
        others = [start(alice, "app.greet"), start(alice, "app.greet")]
        work_until_finished(alice, conn, [run, *others])
        poisoned = run_row(conn, run)
        assert (poisoned["status"], poisoned["error"]["sqlstate"]) == (
            "failed",
            "DU022",
        )
        assert [status_of(conn, other) for other in others] == ["succeeded"] * 2
    finally:
        conn.execute("delete from durable._steps where run_id = %s", [run])
        conn.execute("delete from durable._runs where id = %s", [run])


# --------------------------------------------------- 5. fail-open privilege check


NAP = """
create or replace function {name}(input jsonb) returns jsonb
language plpython3u as $$
wf.step("before", "select 1 as one")
wf.sleep(input.get("seconds", 1))
return {{"woke": True}}
$$;
revoke execute on function {name}(jsonb) from public;
grant execute on function {name}(jsonb) to alice;
"""


def sleeping_run(conn, alice, workflow) -> str:
    """A run of ``workflow`` (a copy of app.nap) of alice's, asleep for a second."""
    conn.execute(NAP.format(name=workflow))
    run = start(alice, workflow, {"seconds": 1})
    drain(alice)
    assert status_of(conn, run) == "sleeping"
    return run


def assert_refused_on_resume(conn, alice, run, workflow) -> None:
    work_until_finished(alice, conn, [run])
    row = run_row(conn, run)
    message = (row["error"] or {}).get("message", "")
    assert (row["status"], workflow in message) == ("failed", True), row


def test_a_dropped_workflow_cannot_resume(conn, as_role):
    alice = as_role("alice")
    run = sleeping_run(conn, alice, "app.nap_dropped")
    conn.execute("drop function app.nap_dropped(jsonb)")
    assert_refused_on_resume(conn, alice, run, "app.nap_dropped")


def test_an_overload_cannot_hide_a_revoked_execute(conn, as_role):
    alice = as_role("alice")
    run = sleeping_run(conn, alice, "app.nap_overloaded")
    conn.execute(
        "create function app.nap_overloaded(input text) returns jsonb"
        " language plpython3u as $$ return None $$;"
        " revoke execute on function app.nap_overloaded(jsonb) from alice"
    )
    assert_refused_on_resume(conn, alice, run, "app.nap_overloaded")


# ------------------------------------------------------------ 6. admins can cancel


def test_an_admin_cannot_be_refused_cancelling_a_running_run(conn, as_role, background):
    """carol (durable_admin, not superuser) cancels bob's run while bob's worker runs
    its slow step: true, no error, and the run ends cancelled."""
    bob = as_role("bob")
    run = start(bob, "app.slow", {"seconds": 5})
    worker = background(bob, "call durable.run_worker(drain => true)")
    wait_until(lambda: in_pg_sleep(conn, worker.pid))
    carol = as_role("carol")
    state, row = attempt(carol, "select durable.cancel(%s)", [run])
    worker.join(30)
    assert (state, row) == (None, (True,))
    assert status_of(conn, run) == "cancelled"


# --------------------------------------------------------------- 7. isolation sweep


@pytest.fixture(scope="module")
def bob_data(cluster, dbname, roles) -> dict:
    """bob's runs (succeeded, failed, waiting, pending), signals, schedules (one has
    fired), workflow options and a SQL workflow. Every one carries BOB_MARK."""
    with (
        psycopg.connect(cluster.dsn(dbname, user="bob"), autocommit=True) as bob,
        psycopg.connect(cluster.dsn(dbname), autocommit=True) as su,
    ):
        runs = {
            "succeeded": start(bob, "app.bobonly_greet", queue="bobonly_q"),
            "failed": start(bob, "app.bobonly_fails", queue="bobonly_q"),
            "waiting": start(bob, "app.bobonly_waits", queue="bobonly_q"),
            "pending": start(
                bob, "app.bobonly_greet", queue="bobonly_q", start_at=FAR_FUTURE
            ),
        }
        bob.execute(
            "select durable.signal(%s, 'bobonly_other', '{}')", [runs["waiting"]]
        )
        bob.execute(
            "select durable.register_workflow('app.bobonly_greet', max_attempts => 2)"
        )
        bob.execute(
            "select durable.define_workflow('bobonly_flows.flow',"
            ' \'{"steps": [{"name": "one", "sql": "select 1"}]}\')'
        )
        bob.execute(
            "select durable.schedule('bobonly_daily', '0 3 * * *', 'app.bobonly_greet')"
        )
        bob.execute(
            "select durable.schedule('bobonly_tick', '1 seconds', 'app.bobonly_greet')"
        )
        deadline = time.monotonic() + 15
        fires = "select count(*) from durable._schedule_fires where owner = 'bob'"
        while su.execute(fires).fetchone()[0] == 0:
            assert time.monotonic() < deadline, "bob's schedule never fired"
            bob.execute("call durable.run_worker(max_runtime => '0.3 seconds')")
        bob.execute(
            "select durable.schedule('bobonly_tick', '1 seconds', 'app.bobonly_greet',"
            " enabled => false)"
        )
        drain(bob)
        states = {name: status_of(su, run) for name, run in runs.items()}
        assert states == {name: name for name in runs}
    return runs


def bob_rows(conn, relation, marks) -> int | str:
    """How many rows of ``relation`` that ``conn`` reads are bob's (or the SQLSTATE
    of the error reading it)."""
    try:
        rows = conn.execute(f"select to_jsonb(t)::text from {relation} as t").fetchall()
    except psycopg.Error as exc:
        return exc.sqlstate
    count = 0
    for (text,) in rows:
        row = json.loads(text)
        if (
            row.get("owner") == "bob"
            or row.get("role") == "bob"
            or any(mark in text for mark in marks)
        ):
            count += 1
    return count


def test_another_roles_rows_cannot_be_seen_in_any_table_or_view(
    conn, as_role, background, bob_data
):
    worker = idle_worker(conn, as_role("bob"), background)
    # Rows of bob's ended workers go when housekeeping sees them: wait, so that the
    # rows do not change during the sweep.
    wait_until(lambda: not dead_workers(conn, "bob"))
    marks = [BOB_MARK, *conn.execute(
        "select array_agg(id::text) from durable._runs where owner = 'bob'"
    ).fetchone()[0]]  # fmt: skip
    alice, carol = as_role("alice"), as_role("carol")
    relations = durable_relations(conn, ("r", "p", "v", "m"))
    everything = {rel: bob_rows(conn, rel, marks) for rel in relations}
    seen = {
        "alice": {rel: bob_rows(alice, rel, marks) for rel in relations},
        "carol": {rel: bob_rows(carol, rel, marks) for rel in relations},
    }
    assert worker.running
    with_bob = {rel for rel, count in everything.items() if count}
    assert {"durable._runs", "durable._signals", "durable._schedules"} <= with_bob
    assert {"durable.runs", "durable.workers", "durable.schedules"} <= with_bob
    leaked = {
        rel: count for rel, count in seen["alice"].items() if count not in (0, "42501")
    }
    assert leaked == {}
    assert seen["carol"] == everything


STEERING = (
    "select durable.status(%s)",
    "select durable.result(%s)",
    "select durable.signal(%s, 'bobonly_go')",
    "select durable.cancel(%s)",
    "select durable.retry(%s)",
    "select durable.migrate_run(%s)",
    "select durable.wait(%s, '0.1 seconds')",
    "select durable.explain(%s)",
)


def test_another_roles_run_cannot_be_steered(conn, as_role, bob_data):
    """alice calling any steering function on one of bob's runs gets "not found"
    (DU010); carol, an admin, finds them."""
    alice, carol = as_role("alice"), as_role("carol")
    outcomes = {
        (status, sql): attempt(alice, sql, [run])[0]
        for status, run in bob_data.items()
        for sql in STEERING
    }
    assert outcomes == dict.fromkeys(outcomes, "DU010")
    assert {
        status: carol.execute("select durable.status(%s)", [run]).fetchone()[0]
        for status, run in bob_data.items()
    } == {status: status for status in bob_data}
    for run in bob_data.values():
        assert carol.execute("select durable.explain(%s)", [run]).fetchone()[0]
    assert {status: status_of(conn, run) for status, run in bob_data.items()} == {
        status: status for status in bob_data
    }
