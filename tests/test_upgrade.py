"""Updating the extension from the released 0.1.0: ``ALTER EXTENSION durable UPDATE``.

``sql/durable--0.1.0.sql`` is the frozen install script of 0.1.0, and ``make install``
builds the update script ``durable--0.1.0--<version>.sql`` of the version in
development. These tests check that

- an update produces exactly the extension that a fresh install does (every object
  of the extension described from the catalogs, compared line by line), also for the
  privileges of a role given ``durable.grant_usage()`` before the update;
- runs in every state at the moment of the update (pending, running on a 0.1.0 worker,
  sleeping, waiting for a signal or a child, retrying, and finished) survive it and are
  finished by workers of the new version, each step's effects exactly once, and a
  schedule goes on firing;
- the update of an up-to-date extension changes nothing, and the update path exists.

Nothing is mocked: real databases (of the session cluster, and of a private cluster
for the runs, whose workers are real ``CALL durable.run_worker()`` sessions).
"""

from __future__ import annotations

import collections
import contextlib
import difflib
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from build_sql import extension_version
from conftest import wait_until
from faults import FINISHED
from pgcluster import Cluster
from psycopg.types.json import Jsonb

# The first released version: its install script is sql/durable--0.1.0.sql.
OLD = "0.1.0"
NEW = extension_version()  # the version in development (durable.control)
ROLE = "upgrade_usage"  # a role given durable.grant_usage() before the update

# ---------------------------------------------------------------- the description

# Each query returns one text column: lines describing one aspect of the objects of the
# extension, free of OIDs (names are qualified: the describing session's search_path is
# pg_catalog only). ACLs are exploded with grantee and grantor names; a NULL ACL is
# shown as the default privileges it stands for.
MEMBERS = """
    select d.classid, d.objid, d.objsubid
    from pg_depend as d
    where d.refclassid = 'pg_extension'::regclass and d.deptype = 'e'
        and d.refobjid = (select oid from pg_extension where extname = 'durable')
"""
RELATIONS = f"""
    select c.* from pg_class as c
    where c.oid in (select objid from ({MEMBERS}) as m
                    where m.classid = 'pg_class'::regclass)
"""
ROUTINES = f"""
    select p.*, p.oid::regprocedure::text as signature from pg_proc as p
    where p.oid in (select objid from ({MEMBERS}) as m
                    where m.classid = 'pg_proc'::regclass)
"""


def acl_query(prefix: str, acl: str, source: str) -> str:
    """A query of one line per privilege in the ACL expression ``acl`` of each row of
    ``source``; the lines start with the text expression ``prefix``."""
    return f"""
    select {prefix} || ' acl ' || case a.grantee when 0 then 'PUBLIC'
            else pg_get_userbyid(a.grantee) end
        || ' ' || a.privilege_type || ' grantable=' || a.is_grantable
        || ' by ' || pg_get_userbyid(a.grantor)
    from {source}
    cross join lateral aclexplode({acl}) as a
    """


DESCRIPTION = [
    # The extension itself, its configuration tables (by name, with their condition).
    """
    select format('extension %s version=%s relocatable=%s schema=%s owner=%s',
        extname, extversion, extrelocatable, extnamespace::regnamespace,
        pg_get_userbyid(extowner))
    from pg_extension where extname = 'durable'
    """,
    """
    select format('extconfig %s condition=%L', u.tab::regclass, u.cond)
    from pg_extension as e, unnest(e.extconfig, e.extcondition) as u(tab, cond)
    where e.extname = 'durable'
    """,
    # Every member object of the extension.
    f"""
    select 'member ' || pg_describe_object(m.classid, m.objid, m.objsubid)
    from ({MEMBERS}) as m
    """,
    # Schemas of the extension: owner, privileges, comment.
    f"""
    select format('schema %s owner=%s comment=%L', n.nspname,
        pg_get_userbyid(n.nspowner), obj_description(n.oid, 'pg_namespace'))
    from pg_namespace as n
    where n.oid in (select objid from ({MEMBERS}) as m
                    where m.classid = 'pg_namespace'::regclass)
    """,
    acl_query(
        "'schema ' || n.nspname",
        "coalesce(n.nspacl, acldefault('n', n.nspowner))",
        f"""(select * from pg_namespace where oid in (
            select objid from ({MEMBERS}) as m
            where m.classid = 'pg_namespace'::regclass)) as n""",
    ),
    # Functions and procedures: the whole definition (line by line, numbered so that
    # sorting keeps the order), owner, settings, privileges, comment.
    f"""
    select format('routine %s kind=%s owner=%s config=%s comment=%L', p.signature,
        p.prokind, pg_get_userbyid(p.proowner), p.proconfig,
        obj_description(p.oid, 'pg_proc'))
    from ({ROUTINES}) as p
    """,
    f"""
    select format('routine %s def %s: %s', p.signature, lpad(l.n::text, 5, '0'), l.line)
    from ({ROUTINES}) as p
    cross join lateral regexp_split_to_table(pg_get_functiondef(p.oid), E'\\n')
        with ordinality as l(line, n)
    where p.prokind <> 'a'
    """,
    acl_query(
        "'routine ' || p.signature",
        "coalesce(p.proacl, acldefault('f', p.proowner))",
        f"({ROUTINES}) as p",
    ),
    # Tables, views and sequences: kind, owner, options, row-level security,
    # privileges, comment.
    f"""
    select format('relation %s kind=%s owner=%s persistence=%s options=%s rls=%s'
        ' force_rls=%s comment=%L', c.oid::regclass, c.relkind,
        pg_get_userbyid(c.relowner), c.relpersistence, c.reloptions,
        c.relrowsecurity, c.relforcerowsecurity, obj_description(c.oid, 'pg_class'))
    from ({RELATIONS}) as c
    """,
    acl_query(
        "'relation ' || c.oid::regclass",
        "coalesce(c.relacl, acldefault("
        "case c.relkind when 'S' then 's' else 'r' end::\"char\", c.relowner))",
        f"({RELATIONS}) as c",
    ),
    # Columns, compared by name: the position of a column is not compared, since an
    # update can only append a column (ALTER TABLE ADD COLUMN) where a fresh install
    # may declare it anywhere in the table.
    f"""
    select format('relation %s column %s type=%s not_null=%s default=%s identity=%s'
        ' generated=%s collation=%s comment=%L', c.oid::regclass, a.attname,
        format_type(a.atttypid, a.atttypmod), a.attnotnull,
        pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
        co.collname, col_description(c.oid, a.attnum))
    from ({RELATIONS}) as c
    join pg_attribute as a on a.attrelid = c.oid and a.attnum > 0
        and not a.attisdropped
    left join pg_attrdef as d on d.adrelid = c.oid and d.adnum = a.attnum
    left join pg_collation as co on co.oid = a.attcollation
    """,
    acl_query(
        "'relation ' || c.oid::regclass || ' column ' || c.attname",
        "c.attacl",
        f"""(select r.oid, a.attname, a.attacl from ({RELATIONS}) as r
            join pg_attribute as a on a.attrelid = r.oid and a.attnum > 0
            and not a.attisdropped and a.attacl is not null) as c""",
    ),
    f"""
    select format('relation %s constraint %s %s comment=%L', c.oid::regclass,
        k.conname, pg_get_constraintdef(k.oid), obj_description(k.oid, 'pg_constraint'))
    from ({RELATIONS}) as c join pg_constraint as k on k.conrelid = c.oid
    """,
    f"""
    select format('relation %s index %s options=%s comment=%L', c.oid::regclass,
        pg_get_indexdef(i.indexrelid), ic.reloptions,
        obj_description(i.indexrelid, 'pg_class'))
    from ({RELATIONS}) as c
    join pg_index as i on i.indrelid = c.oid
    join pg_class as ic on ic.oid = i.indexrelid
    """,
    f"""
    select format('view %s def %s: %s', c.oid::regclass, lpad(l.n::text, 5, '0'),
        l.line)
    from ({RELATIONS}) as c
    cross join lateral regexp_split_to_table(pg_get_viewdef(c.oid, true), E'\\n')
        with ordinality as l(line, n)
    where c.relkind in ('v', 'm')
    """,
    f"""
    select format('relation %s trigger %s enabled=%s comment=%L', c.oid::regclass,
        pg_get_triggerdef(t.oid), t.tgenabled, obj_description(t.oid, 'pg_trigger'))
    from ({RELATIONS}) as c
    join pg_trigger as t on t.tgrelid = c.oid and not t.tgisinternal
    """,
    f"""
    select format('relation %s rule %s', c.oid::regclass, pg_get_ruledef(r.oid))
    from ({RELATIONS}) as c
    join pg_rewrite as r on r.ev_class = c.oid and r.rulename <> '_RETURN'
    """,
    f"""
    select format('policy %s.%s %s permissive=%s roles=%s cmd=%s using=%s check=%s',
        p.schemaname, p.tablename, p.policyname, p.permissive, p.roles, p.cmd,
        p.qual, p.with_check)
    from pg_policies as p
    where format('%I.%I', p.schemaname, p.tablename)::regclass
        in (select oid from ({RELATIONS}) as c)
    """,
    f"""
    select format('sequence %s type=%s start=%s increment=%s min=%s max=%s cache=%s'
        ' cycle=%s owned_by=%s', c.oid::regclass, s.seqtypid::regtype, s.seqstart,
        s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
        (select d.refobjid::regclass || '.' || a.attname
         from pg_depend as d
         join pg_attribute as a on a.attrelid = d.refobjid and a.attnum = d.refobjsubid
         where d.classid = 'pg_class'::regclass and d.objid = c.oid
            and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i')))
    from ({RELATIONS}) as c join pg_sequence as s on s.seqrelid = c.oid
    """,
    # Types of the schema that are not a relation's row type or an array.
    """
    select format('type %s kind=%s owner=%s comment=%L labels=%s domain=%s',
        t.oid::regtype, t.typtype, pg_get_userbyid(t.typowner),
        obj_description(t.oid, 'pg_type'),
        (select string_agg(e.enumlabel, ',' order by e.enumsortorder)
         from pg_enum as e where e.enumtypid = t.oid),
        (select string_agg(pg_get_constraintdef(k.oid), ' ' order by k.conname)
         from pg_constraint as k where k.contypid = t.oid))
    from pg_type as t
    where t.typnamespace = 'durable'::regnamespace and t.typcategory <> 'A'
        and (t.typrelid = 0
             or (select relkind from pg_class where oid = t.typrelid) = 'c')
    """,
    # The rows the install script writes.
    "select 'setting ' || to_jsonb(s)::text from durable._settings as s",
]


def describe(dsn: str) -> list[str]:
    """The extension durable of the database ``dsn`` as sorted lines of text."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("set search_path = pg_catalog")
        lines = [row[0] for query in DESCRIPTION for row in conn.execute(query)]
    return sorted(lines)


def assert_same_extension(updated: list[str], fresh: list[str], what: str) -> None:
    """Fail with a unified diff (fresh install → updated) when they differ."""
    if updated != fresh:
        diff = difflib.unified_diff(
            fresh, updated, "fresh install", what, lineterm="", n=0
        )
        pytest.fail(
            f"{what} differs from a fresh install of {NEW}:\n" + "\n".join(diff),
            pytrace=False,
        )


@contextlib.contextmanager
def databases(cluster: Cluster, *names: str) -> Iterator[None]:
    """Create empty databases in the session cluster; drop them afterwards."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        for name in names:
            admin.execute(f"drop database if exists {name}")
            admin.execute(f"create database {name}")
    try:
        yield
    finally:
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            for name in names:
                admin.execute(f"drop database if exists {name} with (force)")


def update_extension(conn: psycopg.Connection) -> float:
    """ALTER EXTENSION durable UPDATE; returns the seconds it took."""
    started = time.perf_counter()
    conn.execute("alter extension durable update")
    return time.perf_counter() - started


def drop_role(cluster: Cluster, role: str) -> None:
    """Drop a role of the session cluster (its databases are dropped before)."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f"drop role if exists {role}")


@pytest.mark.parametrize("with_role", [False, True], ids=["plain", "granted-role"])
def test_update_produces_the_same_extension_as_a_fresh_install(
    cluster: Cluster, with_role: bool
):
    """0.1.0 + ALTER EXTENSION UPDATE describes exactly as a fresh install does:
    routines, privileges, tables, columns, constraints, indexes, views, options,
    row-level security, policies, triggers, comments, members, configuration tables,
    sequences and settings. With ``with_role``, a role was given
    ``durable.grant_usage()`` before the update (in both databases): the routines
    the update re-creates must grant it the same privileges."""
    updated_db, fresh_db = "upgrade_updated", "upgrade_fresh"
    with contextlib.ExitStack() as stack:
        if with_role:
            with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
                admin.execute(f"drop role if exists {ROLE}")
                admin.execute(f"create role {ROLE}")
            stack.callback(drop_role, cluster, ROLE)
        stack.enter_context(databases(cluster, updated_db, fresh_db))
        with psycopg.connect(cluster.dsn(updated_db), autocommit=True) as conn:
            conn.execute(f"create extension durable version '{OLD}' cascade")
            if with_role:
                conn.execute("select durable.grant_usage(%s)", [ROLE])
            before = describe(cluster.dsn(updated_db))
            seconds = update_extension(conn)
        with psycopg.connect(cluster.dsn(fresh_db), autocommit=True) as conn:
            conn.execute("create extension durable cascade")
            if with_role:
                conn.execute("select durable.grant_usage(%s)", [ROLE])
        updated = describe(cluster.dsn(updated_db))
        fresh = describe(cluster.dsn(fresh_db))
        # The description sees the difference between the two versions at all.
        assert before != fresh
        assert sum(line.startswith("routine ") for line in fresh) > 1000
        if with_role:
            assert any(f"acl {ROLE} EXECUTE" in line for line in fresh)
        assert_same_extension(updated, fresh, f"{OLD} + ALTER EXTENSION UPDATE")
        print(
            f"\nupdate {OLD} -> {NEW} ({'with' if with_role else 'without'} a granted"
            f" role): {seconds * 1000:.0f} ms; {len(fresh)} description lines equal"
        )


def test_update_of_the_current_version_is_a_no_op_and_the_path_exists(
    cluster: Cluster,
):
    """ALTER EXTENSION UPDATE on an extension already at the default version only
    says so; both versions are available, with an update path from 0.1.0 (and no
    path back)."""
    with databases(cluster, "upgrade_noop"):
        dsn = cluster.dsn("upgrade_noop")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("create extension durable cascade")
            before = describe(dsn)
            notices: list[str] = []
            conn.add_notice_handler(
                lambda notice: notices.append(notice.message_primary)
            )
            update_extension(conn)
            assert notices == [
                f'version "{NEW}" of extension "durable" is already installed'
            ]
            assert describe(dsn) == before
            versions = {
                row[0]
                for row in conn.execute(
                    "select version from pg_available_extension_versions"
                    " where name = 'durable'"
                )
            }
            assert {OLD, NEW} <= versions
            paths = dict(
                conn.execute(
                    "select source || '>' || target, path"
                    " from pg_extension_update_paths('durable')"
                ).fetchall()
            )
            assert paths[f"{OLD}>{NEW}"] is not None
            assert paths[f"{OLD}>{NEW}"].startswith(f"{OLD}--")
            assert paths[f"{NEW}>{OLD}"] is None  # no downgrade
            print(f"\nupdate path {OLD} -> {NEW}: {paths[f'{OLD}>{NEW}']}")


# ------------------------------------------------------------ runs across the update

NAP = 5  # seconds of the timers that must still be pending at the update
SLOW_STEP = 3  # seconds of the step a 0.1.0 worker is in when the update runs

# Every SQL step inserts one row (run, step) into app.effects, which has no unique
# constraint: a step whose effects committed twice would show as a count of 2. The
# "engine" step returns the version of the durable engine loaded in the session of
# the worker that executes it (the loader's import hook carries it).
ENGINE = """
def engine():
    import sys
    return [f.durable_version for f in sys.meta_path if hasattr(f, "durable_version")]
""".strip()
WORKFLOWS = """
create schema app;
create table app.effects (run_id uuid not null, step text not null);
create table app.switch (ok boolean not null);
insert into app.switch values (false);

create function app.chain(input jsonb) returns jsonb
language plpython3u as $$
@ENGINE@
wf.step("one", "insert into app.effects values ($1, 'one')", [wf.run_id])
wf.step(
    "two",
    "insert into app.effects select $1, 'two' from pg_sleep($2)",
    [wf.run_id, input.get("sleep", 0)],
)
return {"n": input["n"], "engine": wf.step("engine", engine)}
$$;

create function app.nap(input jsonb) returns jsonb
language plpython3u as $$
@ENGINE@
wf.step("before", "insert into app.effects values ($1, 'before')", [wf.run_id])
wf.sleep(input["seconds"])
wf.step("after", "insert into app.effects values ($1, 'after')", [wf.run_id])
return {"slept": input["seconds"], "engine": wf.step("engine", engine)}
$$;

create function app.approval(input jsonb) returns jsonb
language plpython3u as $$
@ENGINE@
wf.step("asked", "insert into app.effects values ($1, 'asked')", [wf.run_id])
answer = wf.wait_for_signal("answer")
wf.step("answered", "insert into app.effects values ($1, 'answered')", [wf.run_id])
return {"answer": answer, "engine": wf.step("engine", engine)}
$$;

create function app.parent(input jsonb) returns jsonb
language plpython3u as $$
@ENGINE@
wf.step("spawn", "insert into app.effects values ($1, 'spawn')", [wf.run_id])
child = wf.wait(wf.start_child("app.nap", {"seconds": input["seconds"]}))
wf.step("done", "insert into app.effects values ($1, 'done')", [wf.run_id])
return {"child": child, "engine": wf.step("engine", engine)}
$$;

-- Fails with division by zero until app.switch is turned on; the first back-off
-- (4 s, jitter 10%) is still running at the update.
create function app.flaky(input jsonb) returns jsonb
language plpython3u as $$
@ENGINE@
wf.step(
    "try",
    "insert into app.effects select $1, 'try' from app.switch"
    " where 1 / (case when ok then 1 else 0 end) = 1",
    [wf.run_id],
    retry={"max_attempts": 5, "initial_interval": 4, "backoff": 1},
)
return {"engine": wf.step("engine", engine)}
$$;

create function app.boom(input jsonb) returns jsonb
language plpython3u as $$
wf.step("boom", "select 1 / 0", retry={"max_attempts": 1})
return {}
$$;

create function app.tick(input jsonb) returns jsonb
language plpython3u as $$
return {"tick": True}
$$;
""".replace("@ENGINE@", ENGINE)

# The steps with effects of each workflow.
EFFECTS = {
    "app.chain": ["one", "two"],
    "app.nap": ["before", "after"],
    "app.approval": ["asked", "answered"],
    "app.parent": ["spawn", "done"],
    "app.flaky": ["try"],
    "app.boom": [],
}


@contextlib.contextmanager
def cluster_with_old_version(name: str) -> Iterator[Cluster]:
    """A throwaway cluster with durable 0.1.0 in its ``postgres`` database."""
    server = Cluster(name=name).start()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(f"create extension durable version '{OLD}' cascade")
        yield server
    finally:
        server.destroy()


class OldWorker(threading.Thread):
    """One ``CALL durable.run_worker(queue => 'slow', drain => true)`` on its own
    connection, started before the update (so on the 0.1.0 procedures and engine)."""

    def __init__(self, server: Cluster):
        super().__init__(daemon=True)
        self.server = server
        self.pid: int | None = None
        self.error: BaseException | None = None
        self.returned_at: float | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.server.dsn(), autocommit=True) as conn:
                self.pid = conn.info.backend_pid
                conn.execute("call durable.run_worker(queue => 'slow', drain => true)")
        except BaseException as exc:  # reported by the test
            self.error = exc
        self.returned_at = time.monotonic()


def statuses(conn: psycopg.Connection, runs: dict[str, str]) -> dict[str, str]:
    """The status of each named run."""
    found = dict(
        conn.execute(
            "select id::text, status from durable._runs where id = any(%s::uuid[])",
            [list(runs.values())],
        ).fetchall()
    )
    return {name: found[run] for name, run in runs.items()}


def snapshot(conn: psycopg.Connection, tables: list[str], runs: list[str]) -> list:
    """The rows of ``tables`` (as JSON text, sorted) that belong to ``runs`` (by id
    or run_id), or all their rows when ``runs`` is empty."""
    rows = []
    for table in tables:
        cur = conn.execute(
            f"select to_jsonb(t)::text from {table} as t"
            " where cardinality(%s::uuid[]) = 0"
            " or coalesce(to_jsonb(t) ->> 'run_id', to_jsonb(t) ->> 'id')"
            " = any(%s::text[])",
            [runs, runs],
        )
        rows += [f"{table} {row[0]}" for row in cur]
    return sorted(rows)


def work(conn: psycopg.Connection, runs: list[str], queue: str | None, timeout: float):
    """Run workers of the new version on ``conn`` until ``runs`` have finished."""
    deadline = time.monotonic() + timeout
    while True:
        conn.execute(
            "call durable.run_worker(queue => %s, max_runtime => '0.3 seconds')",
            [queue],
        )
        left = conn.execute(
            "select count(*) from durable._runs where id = any(%s::uuid[])"
            " and status not in ('succeeded', 'failed', 'cancelled')",
            [runs],
        ).fetchone()[0]
        if left == 0:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{left} run(s) still unfinished after {timeout}s")


def test_runs_in_every_state_survive_the_update_and_finish_on_the_new_code():
    """Runs pending, running (on a 0.1.0 worker, inside a step), sleeping, waiting
    for a signal, waiting for a child, retrying after a failed step, succeeded, failed
    and cancelled when ALTER EXTENSION UPDATE runs; a schedule firing every second.

    The update neither waits for nor interrupts the 0.1.0 worker: that worker
    finishes its step and its run on the 0.1.0 engine it loaded, and even claims and
    executes another run of its queue afterwards, until its CALL returns (with an
    internal error at that moment, today: see the end of the test). Everything
    unfinished is then finished by workers of the new version (one of them
    in a session that ran the 0.1.0 worker before), with the expected results; the
    finished runs are untouched; every step's effects exist exactly once; and the
    schedule fires again after the update."""
    started = time.monotonic()
    with (
        cluster_with_old_version("upgrade-runs") as server,
        psycopg.connect(server.dsn(), autocommit=True) as conn,
    ):
        conn.execute(WORKFLOWS)
        conn.execute("select durable.register_workflow('app.boom', max_attempts => 1)")

        def begin(workflow: str, value: dict | None = None, **options) -> str:
            names = "".join(f", {key} => %s" for key in options)
            return conn.execute(
                f"select durable.start(%s, %s{names})::text",
                [workflow, Jsonb(value or {}), *options.values()],
            ).fetchone()[0]

        # --- on 0.1.0: runs brought to each state by a 0.1.0 worker
        runs = {
            "succeeded": begin("app.chain", {"n": 1}),
            "failed": begin("app.boom"),
            "sleeping": begin("app.nap", {"seconds": NAP}),
            "waiting": begin("app.approval"),
            "waiting-child": begin("app.parent", {"seconds": NAP}),
            "retrying": begin("app.flaky"),
            "cancelled": begin("app.nap", {"seconds": 3600}),
        }
        conn.execute("select durable.schedule('tick', '1 second', 'app.tick')")
        conn.execute("call durable.run_worker(queue => 'default', drain => true)")
        assert conn.execute(
            "select durable.cancel(%s, 'before the update')", [runs["cancelled"]]
        ).fetchone()[0]
        conn.execute("call durable.run_worker(queue => 'default', drain => true)")
        runs["child"] = conn.execute(
            "select id::text from durable._runs where parent_id = %s",
            [runs["waiting-child"]],
        ).fetchone()[0]
        runs["pending"] = begin("app.chain", {"n": 2})
        later = conn.execute(
            "select now() + make_interval(secs => %s)", [NAP]
        ).fetchone()[0]
        runs["pending-later"] = begin("app.chain", {"n": 3}, start_at=later)
        runs["running"] = begin("app.chain", {"n": 4, "sleep": SLOW_STEP}, queue="slow")
        workflows = dict(
            conn.execute(
                "select id::text, workflow from durable._runs"
                " where id = any(%s::uuid[])",
                [list(runs.values())],
            ).fetchall()
        )

        # --- a 0.1.0 worker inside the slow step of the running run
        old = OldWorker(server)
        old.start()

        def in_slow_step() -> bool:
            return old.pid is not None and conn.execute(
                "select wait_event = 'PgSleep' from pg_stat_activity where pid = %s",
                [old.pid],
            ).fetchone() == (True,)

        wait_until(in_slow_step, timeout=10)
        before_update = statuses(conn, runs)
        assert before_update == {
            "succeeded": "succeeded",
            "failed": "failed",
            "sleeping": "sleeping",
            "waiting": "waiting",
            "waiting-child": "waiting",
            "retrying": "sleeping",
            "cancelled": "cancelled",
            "child": "sleeping",
            "pending": "pending",
            "pending-later": "pending",
            "running": "running",
        }
        counts = collections.Counter(before_update.values())
        finished = [
            run for name, run in runs.items() if before_update[name] in FINISHED
        ]
        finished_tables = ["durable._runs", "durable._steps", "durable._step_attempts"]
        finished_before = snapshot(conn, finished_tables, finished)
        config_tables = [
            row[0]
            for row in conn.execute(
                "select unnest(extconfig)::regclass::text from pg_extension"
                " where extname = 'durable'"
            )
            if not row[0].endswith("_seq")
        ]
        data_before = snapshot(conn, config_tables, [])
        old_procedure = conn.execute(
            "select 'durable._run_worker(text,interval,boolean,jsonb)'"
            "::regprocedure::oid"
        ).fetchone()[0]

        # --- the update
        seconds = update_extension(conn)
        updated_at = conn.execute("select clock_timestamp()").fetchone()[0]
        # The procedure the old worker is executing was replaced, not dropped.
        assert (
            conn.execute(
                "select 'durable._run_worker(text,interval,boolean,jsonb)'"
                "::regprocedure::oid"
            ).fetchone()[0]
            == old_procedure
        )
        assert conn.execute(
            "select extversion from pg_extension where extname = 'durable'"
        ).fetchone() == (NEW,)
        # It neither waited for the 0.1.0 worker nor interrupted it: that worker is
        # still inside its step, and the update changed no data.
        assert in_slow_step(), "the 0.1.0 worker left its step during the update"
        assert snapshot(conn, config_tables, []) == data_before
        assert statuses(conn, runs) == before_update
        # The timers of the sleeping runs were not due yet at the update.
        timers = [runs[n] for n in ("sleeping", "child", "retrying", "pending-later")]
        not_due = conn.execute(
            "select count(*) from durable._runs where id = any(%s::uuid[])"
            " and wake_at > %s",
            [timers, updated_at],
        ).fetchone()[0]
        assert not_due == 4

        # A run of the slow queue started after the update: the 0.1.0 worker, which
        # drains its queue, takes it after the run it is executing.
        runs["running-next"] = begin("app.chain", {"n": 5}, queue="slow")
        workflows[runs["running-next"]] = "app.chain"
        assert conn.execute(
            "select durable.signal(%s, 'answer', '\"go\"')", [runs["waiting"]]
        ).fetchone() == (True,)
        conn.execute("update app.switch set ok = true")

        # --- workers of the new version: the default queue while the 0.1.0 worker
        # still works the slow queue, then every queue.
        default_runs = [
            run for name, run in runs.items() if not name.startswith("running")
        ]
        work(conn, default_runs, "default", timeout=30)
        old.join(timeout=30)
        assert not old.is_alive(), "the 0.1.0 worker did not return"
        assert conn.execute("select count(*) from durable._workers").fetchone() == (0,)
        work(conn, list(runs.values()), None, timeout=10)

        def schedule_fired_after_update() -> bool:
            conn.execute("call durable.run_worker(max_runtime => '0.3 seconds')")
            return (
                conn.execute(
                    "select count(*) from durable.schedule_fires as f"
                    " join durable._runs as r on r.id = f.run_id"
                    " where f.schedule = 'tick' and f.fired_at > %s"
                    " and r.status = 'succeeded'",
                    [updated_at],
                ).fetchone()[0]
                > 0
            )

        wait_until(schedule_fired_after_update, timeout=10)
        elapsed = time.monotonic() - started

        # --- outcomes
        final = conn.execute(
            "select id::text, status, result, error ->> 'sqlstate'"
            " from durable._runs where id = any(%s::uuid[])",
            [list(runs.values())],
        ).fetchall()
        outcome = {row[0]: row[1:] for row in final}
        got = {name: outcome[run] for name, run in runs.items()}
        old_engine, new_engine = [OLD], [NEW]
        assert got == {
            "succeeded": ("succeeded", {"n": 1, "engine": old_engine}, None),
            "failed": ("failed", None, "22012"),
            "cancelled": ("cancelled", None, "DU003"),
            "sleeping": ("succeeded", {"slept": NAP, "engine": new_engine}, None),
            "child": ("succeeded", {"slept": NAP, "engine": new_engine}, None),
            "waiting-child": (
                "succeeded",
                {"child": {"slept": NAP, "engine": new_engine}, "engine": new_engine},
                None,
            ),
            "waiting": ("succeeded", {"answer": "go", "engine": new_engine}, None),
            "retrying": ("succeeded", {"engine": new_engine}, None),
            "pending": ("succeeded", {"n": 2, "engine": new_engine}, None),
            "pending-later": ("succeeded", {"n": 3, "engine": new_engine}, None),
            # Executed to their end by the 0.1.0 worker, after the update.
            "running": ("succeeded", {"n": 4, "engine": old_engine}, None),
            "running-next": ("succeeded", {"n": 5, "engine": old_engine}, None),
        }
        # The retried step failed once before the update, then succeeded after it.
        attempts = conn.execute(
            "select attempt, error ->> 'sqlstate' from durable._step_attempts"
            " where run_id = %s and error is not null order by attempt",
            [runs["retrying"]],
        ).fetchall()
        assert attempts == [(1, "22012")]
        # The finished runs, their steps and attempts are untouched.
        assert snapshot(conn, finished_tables, finished) == finished_before

        # Each step's effects exactly once, and no others.
        effects = conn.execute(
            "select run_id::text, step, count(*) from app.effects group by 1, 2"
        ).fetchall()
        expected = {
            (run, step): 1
            for name, run in runs.items()
            for step in EFFECTS[workflows[run]]
            if name != "cancelled"
        }
        expected[(runs["cancelled"], "before")] = 1
        assert {(run, step): n for run, step, n in effects} == expected

        # The schedule fired after the update, and is still enabled and due again.
        fires_after = conn.execute(
            "select count(*) from durable.schedule_fires"
            " where schedule = 'tick' and fired_at > %s",
            [updated_at],
        ).fetchone()[0]
        assert fires_after > 0
        assert conn.execute(
            "select enabled, next_fire_at > %s from durable.schedules"
            " where name = 'tick'",
            [updated_at],
        ).fetchone() == (True, True)
        # The 0.1.0 worker executed the rest of the running run after the update.
        assert conn.execute(
            "select finished_at > %s from durable._steps"
            " where run_id = %s and name = 'engine'",
            [updated_at, runs["running"]],
        ).fetchone() == (True,)
        old_returned = old.returned_at - started if old.returned_at else None
        print(
            f"\nALTER EXTENSION durable UPDATE ({OLD} -> {NEW}) with runs in flight:"
            f" {seconds * 1000:.0f} ms; runs at the update:"
            f" {dict(sorted(counts.items()))}"
            f" (+1 started after it on the 0.1.0 worker's queue);"
            f" {len(expected)} step effects exactly once; {fires_after} schedule"
            f" fires after the update; 0.1.0 worker returned at {old_returned:.1f}s;"
            f" {elapsed:.1f}s in all; the 0.1.0 worker's CALL ended with"
            f" {'no error' if old.error is None else repr(old.error.sqlstate)}"
        )
        # The 0.1.0 worker's CALL returns cleanly: the update replaces the
        # procedure it is executing in place (a dropped one would fail its return
        # with XX000 "cache lookup failed for function").
        assert old.error is None, repr(old.error)
