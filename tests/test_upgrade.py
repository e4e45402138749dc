"""Updating the extension from released versions: ``ALTER EXTENSION durable UPDATE``.

Released versions are frozen in ``sql/``: the install script of each
(``sql/durable--<version>.sql``) and the update script from the release before it
(``sql/durable--<old>--<version>.sql``). ``make install`` builds the scripts of the
version in development, among them the update from the last release. These tests check,
for each released update, for the update of the version in development and for the
chain of updates from the first release, that

- an update produces exactly the extension that a fresh install does (every object
  of the extension described from the catalogs, compared line by line: routines with
  their SECURITY DEFINER and settings, privileges, columns and their defaults,
  policies, ...), also for the privileges of a role given ``durable.grant_usage()``
  before the update;
- runs in every state at the moment of the update (pending, running on a worker of the
  old version, orphaned by a worker that died, sleeping, waiting for a signal or a
  child, retrying, and finished, some of them of a role given ``durable.grant_usage()``)
  survive it and are finished by workers of the new version, each step's effects
  exactly once, and a schedule goes on firing; the role goes on working, with the
  privileges of the new version; an update that must wait for a worker's step does not
  deadlock with it;
- the update of an up-to-date extension changes nothing, and the update paths exist;
- the statement splitter that generates the idempotent part of update scripts
  (tools/build_sql.py) respects quotes, comments and dollar quotes.

Nothing is mocked: real databases (of the session cluster, and of a private cluster
for the runs, whose workers are real ``CALL durable.run_worker()`` sessions).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import difflib
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from build_sql import extension_version, idempotent_statement, split_statements
from conftest import wait_until
from faults import FINISHED
from pgcluster import Cluster
from psycopg.types.json import Jsonb

# The released versions, oldest first: their scripts are frozen in sql/.
RELEASED = ["0.1.0", "0.2.0"]
NEW = extension_version()  # the version in development (durable.control)
ROLE = "upgrade_usage"  # a role given durable.grant_usage() before the update

# The updates compared with a fresh install: each release's from the release before
# it, the version in development's from the last release, and the chain of updates
# from the first release to the version in development.
UPDATES = [
    *zip(RELEASED, RELEASED[1:]),
    (RELEASED[-1], NEW),
    (RELEASED[0], NEW),
]


def update_ids(updates: list[tuple[str, str]]) -> list[str]:
    """Test ids of (old, new) pairs."""
    return [f"{old}-to-{new}" for old, new in updates]


def version_key(version: str) -> tuple[int, ...]:
    """A version as a tuple of integers, to compare versions."""
    return tuple(int(part) for part in version.split("."))


# ------------------------------------------------------- the generated idempotent part

TRICKY_SQL = """
-- a comment; with a semicolon
create function a.f(x text) returns text language sql as $body$
    select $1 || ';' || $q$;$q$ || $$;$$;  -- other tags inside: $q$, $$
$body$;
/* a block comment; /* nested; */ still comment; */
comment on function a.f(text) is 'it''s; quoted';
create table a.t (";" text default E'\\';', x int);
create view a.v as select 1 as ";";
create or replace procedure a.p() language plpgsql as $$ begin end $$;
insert into a.t values ($x$;$x$, 1);
"""


def test_the_splitter_respects_quotes_comments_and_dollar_quotes():
    """Statements end at semicolons outside comments, strings, quoted identifiers and
    dollar quotes; the idempotent part keeps routines, views and their comments, in
    their create-or-replace form, and leaves the rest to the incremental part."""
    statements = split_statements(TRICKY_SQL)
    assert "".join(statements) == TRICKY_SQL.rstrip("\n")
    assert [s.split()[-1] for s in statements] == [
        "$body$;",
        "quoted';",
        "int);",
        '";";',
        "$$;",
        "1);",
    ]
    repeated = [idempotent_statement(s) for s in statements]
    assert [r.split("\n")[0][:40] if r else None for r in repeated] == [
        "create or replace function a.f(x text) r",
        "comment on function a.f(text) is 'it''s;",
        None,
        "create or replace view a.v as select 1 a",
        "create or replace procedure a.p() langua",
        None,
    ]
    with pytest.raises(ValueError, match="without a final"):
        split_statements("select 1; select 2")
    with pytest.raises(ValueError, match="unterminated dollar quote"):
        split_statements("create function f() returns int as $b$ select 1; $c$;")


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


def assert_same_extension(
    updated: list[str], fresh: list[str], what: str, version: str
) -> None:
    """Fail with a unified diff (fresh install → updated) when they differ."""
    if updated != fresh:
        diff = difflib.unified_diff(
            fresh, updated, "fresh install", what, lineterm="", n=0
        )
        pytest.fail(
            f"{what} differs from a fresh install of {version}:\n" + "\n".join(diff),
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


def update_extension(conn: psycopg.Connection, version: str | None = None) -> float:
    """ALTER EXTENSION durable UPDATE (to ``version``, or to the default version);
    returns the seconds it took."""
    started = time.perf_counter()
    if version is None:
        conn.execute("alter extension durable update")
    else:
        conn.execute(f"alter extension durable update to '{version}'")
    return time.perf_counter() - started


def drop_role(cluster: Cluster, role: str) -> None:
    """Drop a role of the session cluster (its databases are dropped before)."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f"drop role if exists {role}")


# Privileges to write durable's tables or use its sequences: what a role holds of them.
WRITE_PRIVILEGES = """
    select c.oid::regclass::text || ' ' || p.privilege
    from pg_class as c
    cross join unnest(array['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) as p(privilege)
    where c.relnamespace = 'durable'::regnamespace and c.relkind = 'r'
        and has_table_privilege(%(role)s, c.oid, p.privilege)
    union all
    select c.oid::regclass::text || ' ' || p.privilege
    from pg_class as c
    cross join unnest(array['USAGE', 'SELECT', 'UPDATE']) as p(privilege)
    where c.relnamespace = 'durable'::regnamespace and c.relkind = 'S'
        and has_sequence_privilege(%(role)s, c.oid, p.privilege)
"""


def write_privileges(conn: psycopg.Connection, role: str) -> list[str]:
    """The write privileges ``role`` holds on durable's tables and sequences."""
    return sorted(row[0] for row in conn.execute(WRITE_PRIVILEGES, {"role": role}))


@pytest.mark.parametrize("with_role", [False, True], ids=["plain", "granted-role"])
@pytest.mark.parametrize(("old", "new"), UPDATES, ids=update_ids(UPDATES))
def test_update_produces_the_same_extension_as_a_fresh_install(
    cluster: Cluster, old: str, new: str, with_role: bool
):
    """``old`` + ALTER EXTENSION UPDATE TO ``new`` describes exactly as a fresh install
    of ``new`` does: routines (definition, SECURITY DEFINER, settings), privileges,
    tables, columns and their defaults, constraints, indexes, views, options, row-level
    security, policies, triggers, comments, members, configuration tables, sequences
    and settings. With ``with_role``, a role was given ``durable.grant_usage()``
    before the update (in both databases): the update must leave it the privileges
    that grant_usage of ``new`` gives, no more and no fewer."""
    updated_db, fresh_db = "upgrade_updated", "upgrade_fresh"
    with contextlib.ExitStack() as stack:
        if with_role:
            with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
                admin.execute(f"drop role if exists {ROLE}")
                admin.execute(f"create role {ROLE}")
            stack.callback(drop_role, cluster, ROLE)
        stack.enter_context(databases(cluster, updated_db, fresh_db))
        with psycopg.connect(cluster.dsn(updated_db), autocommit=True) as conn:
            conn.execute(f"create extension durable version '{old}' cascade")
            if with_role:
                conn.execute("select durable.grant_usage(%s)", [ROLE])
            before = describe(cluster.dsn(updated_db))
            seconds = update_extension(conn, new)
            version = conn.execute(
                "select extversion from pg_extension where extname = 'durable'"
            ).fetchone()[0]
            assert version == new
        with psycopg.connect(cluster.dsn(fresh_db), autocommit=True) as conn:
            conn.execute(f"create extension durable version '{new}' cascade")
            if with_role:
                conn.execute("select durable.grant_usage(%s)", [ROLE])
                writes = write_privileges(conn, ROLE)
        updated = describe(cluster.dsn(updated_db))
        fresh = describe(cluster.dsn(fresh_db))
        # The description sees the difference between the two versions at all.
        assert before != fresh
        assert sum(line.startswith("routine ") for line in fresh) > 1000
        if with_role:
            assert any(f"acl {ROLE} EXECUTE" in line for line in fresh)
            # From 0.3.0 on, no role but the owner writes durable's tables.
            if version_key(new) >= (0, 3, 0):
                assert writes == []
            else:
                assert writes != []
        assert_same_extension(
            updated, fresh, f"{old} + ALTER EXTENSION UPDATE TO '{new}'", new
        )
        print(
            f"\nupdate {old} -> {new} ({'with' if with_role else 'without'} a granted"
            f" role): {seconds * 1000:.0f} ms; {len(fresh)} description lines equal"
        )


def test_update_of_the_current_version_is_a_no_op_and_the_paths_exist(
    cluster: Cluster,
):
    """ALTER EXTENSION UPDATE on an extension already at the default version only
    says so; every released version is available, with an update path to the version
    in development through each release after it (and no path back)."""
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
            assert versions == {*RELEASED, NEW}
            paths = dict(
                conn.execute(
                    "select source || '>' || target, path"
                    " from pg_extension_update_paths('durable')"
                ).fetchall()
            )
            chain = [*RELEASED, NEW]
            for i, old in enumerate(chain):
                for j, new in enumerate(chain):
                    if i < j:  # through every version in between, one step each
                        assert paths[f"{old}>{new}"] == "--".join(chain[i : j + 1])
                    elif i > j:
                        assert paths[f"{old}>{new}"] is None  # no downgrade
            print(f"\nupdate path {RELEASED[0]} -> {NEW}: {paths[f'{chain[0]}>{NEW}']}")


# ------------------------------------------------------------ runs across the update

# Seconds of the timers that must still be pending when the update has committed (it
# may wait for the slow step to end: see Scenario).
NAP = 8
SLOW_STEP = 3  # seconds of the step an old worker is in when the update starts
# The old worker works the slow queue for this long, beyond the update: it executes a
# run of that queue due NEXT_DELAY seconds after the update.
OLD_WORKER_RUNTIME = SLOW_STEP + 6
NEXT_DELAY = 1.5

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
-- (NAP seconds, jitter 10%) is still running at the update.
create function app.flaky(input jsonb) returns jsonb
language plpython3u as $$
@ENGINE@
wf.step(
    "try",
    "insert into app.effects select $1, 'try' from app.switch"
    " where 1 / (case when ok then 1 else 0 end) = 1",
    [wf.run_id],
    retry={"max_attempts": 5, "initial_interval": @NAP@, "backoff": 1},
)
return {"engine": wf.step("engine", engine)}
$$;

-- Its first step is slow: the worker holds a lock on durable._workflow_versions
-- (read in the same transaction) while it runs.
create function app.slow_first(input jsonb) returns jsonb
language plpython3u as $$
@ENGINE@
wf.step(
    "one",
    "insert into app.effects select $1, 'one' from pg_sleep($2)",
    [wf.run_id, input["sleep"]],
)
wf.step("two", "insert into app.effects values ($1, 'two')", [wf.run_id])
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
""".replace("@ENGINE@", ENGINE).replace("@NAP@", str(NAP))

# The steps with effects of each workflow.
EFFECTS = {
    "app.chain": ["one", "two"],
    "app.nap": ["before", "after"],
    "app.approval": ["asked", "answered"],
    "app.parent": ["spawn", "done"],
    "app.flaky": ["try"],
    "app.slow_first": ["one", "two"],
    "app.boom": [],
}


@dataclasses.dataclass(frozen=True)
class Scenario:
    """An update tested with runs in flight, and how it treats the old worker."""

    old: str
    new: str
    # A CALL durable.run_worker() of the old version loads the engine of the installed
    # version in its next slice (0.2.0's worker runs in slices); 0.1.0's keeps the
    # engine it started with until it returns.
    reloads_engine: bool

    @property
    def revokes_writes(self) -> bool:
        """From 0.3.0 on, no role but the owner writes durable's tables."""
        return version_key(self.new) >= (0, 3, 0)


SCENARIOS = [
    Scenario(RELEASED[0], RELEASED[1], reloads_engine=False),
    Scenario(RELEASED[-1], NEW, reloads_engine=True),
]


@contextlib.contextmanager
def cluster_with_old_version(name: str, old: str) -> Iterator[Cluster]:
    """A throwaway cluster with durable ``old`` in its ``postgres`` database, and the
    login role ROLE."""
    server = Cluster(name=name).start()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(f"create extension durable version '{old}' cascade")
            conn.execute(f"create role {ROLE} login")
        yield server
    finally:
        server.destroy()


class OldWorker(threading.Thread):
    """One ``CALL durable.run_worker(queue => ..., max_runtime => ...)`` on its own
    connection, started before the update (so on the old procedures and engine)."""

    def __init__(self, server: Cluster, queue: str = "slow"):
        super().__init__(daemon=True)
        self.server = server
        self.queue = queue
        self.pid: int | None = None
        self.error: BaseException | None = None
        self.returned_at: float | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.server.dsn(), autocommit=True) as conn:
                self.pid = conn.info.backend_pid
                conn.execute(
                    "call durable.run_worker(queue => %s, max_runtime => %s)",
                    [self.queue, f"{OLD_WORKER_RUNTIME} seconds"],
                )
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


@pytest.mark.parametrize(
    "scenario", SCENARIOS, ids=update_ids([(s.old, s.new) for s in SCENARIOS])
)
def test_runs_in_every_state_survive_the_update_and_finish_on_the_new_code(
    scenario: Scenario,
):
    """Runs pending, running (on a worker of the old version, inside a step),
    orphaned (running, its worker terminated inside a step), sleeping, waiting for a
    signal, waiting for a child, retrying after a failed step, succeeded, failed and
    cancelled when ALTER EXTENSION UPDATE runs; a schedule firing every second; runs
    of a role given durable.grant_usage() under the old version, pending and sleeping.

    The update neither waits for nor interrupts the old worker (the slow step is the
    run's second, whose transaction holds no lock on durable's tables; an update
    that must lock a table a step holds takes its locks once that step has committed,
    see sql/updates/0.2.0--0.3.0.sql): that worker finishes its step and its run on
    the engine it loaded, then executes a run of its queue that comes due after the
    update (on the new engine when ``scenario.reloads_engine``), until its CALL
    returns cleanly. Everything unfinished is then finished by workers of the new
    version (the orphaned run reclaimed from its dead worker), the role's runs by a
    worker of the role, with the expected results; the finished runs are untouched;
    every step's effects exist exactly once; the schedule fires again after the
    update; the role goes on starting and working its runs, with the privileges of
    the new version (none to write durable's tables from 0.3.0 on)."""
    old_version, new_version = scenario.old, scenario.new
    started = time.monotonic()
    with (
        cluster_with_old_version(f"upgrade-runs-{old_version}", old_version) as server,
        psycopg.connect(server.dsn(), autocommit=True) as conn,
        psycopg.connect(server.dsn(user=ROLE), autocommit=True) as role_conn,
    ):
        conn.execute(WORKFLOWS)
        conn.execute("select durable.register_workflow('app.boom', max_attempts => 1)")
        conn.execute("select durable.grant_usage(%s)", [ROLE])
        conn.execute(f"grant usage on schema app to {ROLE}")
        conn.execute(f"grant select, insert on app.effects, app.switch to {ROLE}")

        def begin(workflow: str, value: dict | None = None, *, on=conn, **options):
            names = "".join(f", {key} => %s" for key in options)
            return on.execute(
                f"select durable.start(%s, %s{names})::text",
                [workflow, Jsonb(value or {}), *options.values()],
            ).fetchone()[0]

        # --- on the old version: runs brought to each state by an old worker
        runs = {
            "succeeded": begin("app.chain", {"n": 1}),
            "failed": begin("app.boom"),
            "sleeping": begin("app.nap", {"seconds": NAP}),
            "waiting": begin("app.approval"),
            "waiting-child": begin("app.parent", {"seconds": NAP}),
            "retrying": begin("app.flaky"),
            "cancelled": begin("app.nap", {"seconds": 3600}),
            "role-sleeping": begin("app.nap", {"seconds": NAP}, on=role_conn),
        }
        conn.execute("select durable.schedule('tick', '1 second', 'app.tick')")
        conn.execute("call durable.run_worker(queue => 'default', drain => true)")
        role_conn.execute("call durable.run_worker(queue => 'default', drain => true)")
        assert conn.execute(
            "select durable.cancel(%s, 'before the update')", [runs["cancelled"]]
        ).fetchone()[0]
        conn.execute("call durable.run_worker(queue => 'default', drain => true)")
        runs["child"] = conn.execute(
            "select id::text from durable._runs where parent_id = %s",
            [runs["waiting-child"]],
        ).fetchone()[0]
        runs["pending"] = begin("app.chain", {"n": 2})
        runs["role-pending"] = begin("app.chain", {"n": 6}, on=role_conn)
        later = conn.execute(
            "select now() + make_interval(secs => %s)", [NAP]
        ).fetchone()[0]
        runs["pending-later"] = begin("app.chain", {"n": 3}, start_at=later)
        runs["running"] = begin("app.chain", {"n": 4, "sleep": SLOW_STEP}, queue="slow")

        # --- an old worker inside the slow step of the running run
        old = OldWorker(server)
        old.start()

        def in_slow_step(worker: OldWorker = old) -> bool:
            return worker.pid is not None and conn.execute(
                "select wait_event = 'PgSleep' from pg_stat_activity where pid = %s",
                [worker.pid],
            ).fetchone() == (True,)

        wait_until(in_slow_step, timeout=10)

        # --- a run whose worker ended inside a step (terminated): its row is left in
        # durable._workers, and the run stays running until a worker reclaims it.
        runs["orphaned"] = begin(
            "app.chain", {"n": 8, "sleep": SLOW_STEP}, queue="doomed"
        )
        doomed = OldWorker(server, queue="doomed")
        doomed.start()
        wait_until(lambda: in_slow_step(doomed), timeout=10)
        conn.execute("select pg_terminate_backend(%s)", [doomed.pid])
        doomed.join(timeout=10)
        assert isinstance(doomed.error, psycopg.errors.AdminShutdown)
        assert in_slow_step(), "the old worker left its step before the update"
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
            "orphaned": "running",
            "role-sleeping": "sleeping",
            "role-pending": "pending",
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
        role_writes_before = write_privileges(conn, ROLE)
        old_procedure = conn.execute(
            "select 'durable._run_worker(text,interval,boolean,jsonb)'"
            "::regprocedure::oid"
        ).fetchone()[0]

        # --- the update
        seconds = update_extension(conn, new_version)
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
        ).fetchone() == (new_version,)
        # It neither waited for the old worker nor interrupted it: that worker is
        # still inside its step, and the update changed no data.
        assert in_slow_step(), "the old worker left its step during the update"
        assert snapshot(conn, config_tables, []) == data_before
        assert statuses(conn, runs) == before_update
        # The timers of the sleeping runs were not due yet at the update.
        timers = [
            runs[name]
            for name in (
                "sleeping",
                "child",
                "retrying",
                "pending-later",
                "role-sleeping",
            )
        ]
        not_due = conn.execute(
            "select count(*) from durable._runs where id = any(%s::uuid[])"
            " and wake_at > %s",
            [timers, updated_at],
        ).fetchone()[0]
        assert not_due == len(timers)

        # A run of the slow queue that comes due after the update: the old worker,
        # which works that queue beyond the update, executes it.
        due = conn.execute(
            "select clock_timestamp() + make_interval(secs => %s)", [NEXT_DELAY]
        ).fetchone()[0]
        runs["running-next"] = begin("app.chain", {"n": 5}, queue="slow", start_at=due)
        assert conn.execute(
            "select durable.signal(%s, 'answer', '\"go\"')", [runs["waiting"]]
        ).fetchone() == (True,)
        conn.execute("update app.switch set ok = true")
        # The role goes on starting runs.
        runs["role-after"] = begin("app.chain", {"n": 7}, on=role_conn)

        # --- workers of the new version: the default queue while the old worker
        # still works the slow queue, the role's runs by a worker of the role, then
        # every queue.
        default_runs = [
            run
            for name, run in runs.items()
            if not name.startswith(("running", "role-", "orphaned"))
        ]
        role_runs = [run for name, run in runs.items() if name.startswith("role-")]
        work(conn, default_runs, "default", timeout=30)
        work(role_conn, role_runs, None, timeout=30)
        old.join(timeout=OLD_WORKER_RUNTIME + 30)
        assert not old.is_alive(), "the old worker did not return"
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
            "select id::text, status, result, error ->> 'sqlstate', owner"
            " from durable._runs where id = any(%s::uuid[])",
            [list(runs.values())],
        ).fetchall()
        outcome = {row[0]: row[1:4] for row in final}
        owners = {row[0]: row[4] for row in final}
        got = {name: outcome[run] for name, run in runs.items()}
        old_engine, new_engine = [old_version], [new_version]
        next_engine = new_engine if scenario.reloads_engine else old_engine
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
            # Executed to its end by the old worker, on the engine it was running.
            "running": ("succeeded", {"n": 4, "engine": old_engine}, None),
            # Executed by the old worker's CALL after the update.
            "running-next": ("succeeded", {"n": 5, "engine": next_engine}, None),
            # Reclaimed and executed again from its interrupted step.
            "orphaned": ("succeeded", {"n": 8, "engine": new_engine}, None),
            "role-sleeping": ("succeeded", {"slept": NAP, "engine": new_engine}, None),
            "role-pending": ("succeeded", {"n": 6, "engine": new_engine}, None),
            "role-after": ("succeeded", {"n": 7, "engine": new_engine}, None),
        }
        assert {
            name: owners[run] for name, run in runs.items() if name.startswith("role-")
        } == dict.fromkeys(("role-sleeping", "role-pending", "role-after"), ROLE)
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
        workflows = dict(
            conn.execute(
                "select id::text, workflow from durable._runs"
                " where id = any(%s::uuid[])",
                [list(runs.values())],
            ).fetchall()
        )
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
        # The old worker executed a run of its queue after the update.
        assert conn.execute(
            "select started_at > %s from durable._runs where id = %s",
            [updated_at, runs["running-next"]],
        ).fetchone() == (True,)

        # The role kept what grant_usage gave it, but for the write privileges that
        # the new version no longer grants.
        role_writes = write_privileges(conn, ROLE)
        assert role_writes_before != []
        if scenario.revokes_writes:
            assert role_writes == []
        else:
            assert role_writes == role_writes_before

        old_returned = old.returned_at - started if old.returned_at else None
        print(
            f"\nALTER EXTENSION durable UPDATE ({old_version} -> {new_version}) with"
            f" runs in flight: {seconds * 1000:.0f} ms; runs at the update:"
            f" {dict(sorted(counts.items()))} (+1 of the old worker's queue due after"
            f" it, +1 started by the role after it); {len(expected)} step effects"
            f" exactly once; {fires_after} schedule fires after the update; old worker"
            f" returned at {old_returned:.1f}s; {elapsed:.1f}s in all; the old"
            f" worker's CALL ended with"
            f" {'no error' if old.error is None else repr(old.error.sqlstate)}"
        )
        # The old worker's CALL returns cleanly: the update replaces the procedure it
        # is executing in place (a dropped one would fail its return with XX000
        # "cache lookup failed for function").
        assert old.error is None, repr(old.error)


def test_an_update_waiting_for_a_step_does_not_deadlock_with_its_worker():
    """A worker of the last release inside the first step of a run holds a lock on
    durable._workflow_versions (it read the run's pinned source in that transaction)
    until the step commits; the update to the version in development changes that
    table, so it must wait. It takes all its locks at once, when the step has
    committed: the worker's next writes (its checkpoint) then wait for the update,
    instead of the two waiting for each other (a deadlock, which would abort one).
    The step is neither interrupted nor repeated, and the run finishes."""
    old_version = RELEASED[-1]
    with (
        cluster_with_old_version(f"upgrade-lock-{old_version}", old_version) as server,
        psycopg.connect(server.dsn(), autocommit=True) as conn,
    ):
        conn.execute(WORKFLOWS)
        run = conn.execute(
            "select durable.start('app.slow_first', %s, queue => 'slow')::text",
            [Jsonb({"sleep": SLOW_STEP})],
        ).fetchone()[0]
        old = OldWorker(server)
        old.start()

        def locks_in_step() -> bool:
            return old.pid is not None and conn.execute(
                "select a.wait_event = 'PgSleep' and exists ("
                " select from pg_locks as l where l.pid = a.pid and l.granted"
                " and l.relation = 'durable._workflow_versions'::regclass)"
                " from pg_stat_activity as a where a.pid = %s",
                [old.pid],
            ).fetchone() == (True,)

        wait_until(locks_in_step, timeout=10)
        seconds = update_extension(conn, NEW)
        updated_at = conn.execute("select clock_timestamp()").fetchone()[0]
        # The step committed before the update took its locks.
        assert conn.execute(
            "select finished_at < %s from durable._steps"
            " where run_id = %s and name = 'one'",
            [updated_at, run],
        ).fetchone() == (True,)
        work(conn, [run], "slow", timeout=10)
        old.join(timeout=OLD_WORKER_RUNTIME + 30)
        assert not old.is_alive(), "the old worker did not return"
        assert old.error is None, repr(old.error)
        assert conn.execute(
            "select status, result from durable._runs where id = %s", [run]
        ).fetchone() == ("succeeded", {"engine": [old_version]})
        effects = conn.execute(
            "select step, count(*) from app.effects where run_id = %s group by 1",
            [run],
        ).fetchall()
        assert dict(effects) == {"one": 1, "two": 1}
        print(
            f"\nALTER EXTENSION durable UPDATE ({old_version} -> {NEW}) waited"
            f" {seconds:.1f}s for a {SLOW_STEP}s step of a worker, without deadlock"
        )
