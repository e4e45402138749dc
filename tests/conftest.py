"""Fixtures: one throwaway cluster per test session, one database per test module.

The cluster runs as the ``postgres`` OS user, with pg_cron preloaded where the server
has it (Debian packages it for PostgreSQL 15 only). The server is the one of
``$PG_CONFIG`` (``make test PG=17``), named in the session's header. A template database
gets ``CREATE EXTENSION durable CASCADE`` once; each test module works in its own clone
of it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from build_sql import stale_scripts
from pgcluster import Cluster, pg_bindir, pg_cron_missing, server_version

TEMPLATE = "durable_template"


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which server the session runs against, and whether pg_cron is there."""
    try:
        server = f"PostgreSQL {server_version()} ({pg_bindir()})"
    except (RuntimeError, OSError, ValueError) as exc:
        return [f"PostgreSQL: none found ({exc})"]
    return [f"{server}, {pg_cron_missing() or 'pg_cron: preloaded'}"]


@pytest.fixture
def pg_cron() -> None:
    """For a test that needs pg_cron preloaded: skips it, naming the missing package,
    where the server has no pg_cron (Debian packages it for PostgreSQL 15 only)."""
    missing = pg_cron_missing()
    if missing:
        pytest.skip(missing)


def install_options() -> str:
    """How `make install` selects the server of this session (none for the default)."""
    config = os.environ.get("PG_CONFIG")
    return f" PG_CONFIG={config}" if config and config != "pg_config" else ""


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The session's throwaway cluster (removed at the end)."""
    stale = stale_scripts()
    if stale:
        pytest.exit(
            f"{', '.join(map(str, stale))} missing or older than the sources:"
            f" run `make install{install_options()}`",
            2,
        )
    server = Cluster().start()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(f"create database {TEMPLATE}")
        with psycopg.connect(server.dsn(TEMPLATE), autocommit=True) as conn:
            conn.execute("create extension durable cascade")
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="module")
def dbname(cluster: Cluster, request: pytest.FixtureRequest) -> str:
    """A database of this test module, cloned from the template."""
    name = "t_" + re.sub(r"\W", "_", request.module.__name__.split(".")[-1])
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"drop database if exists {name}")
        conn.execute(f"create database {name} template {TEMPLATE}")
    return name


@pytest.fixture
def connect(
    cluster: Cluster, dbname: str
) -> Iterator[Callable[..., psycopg.Connection]]:
    """Open connections to the module's database; all are closed after the test."""
    opened: list[psycopg.Connection] = []

    def open_connection(autocommit: bool = True, **kwargs) -> psycopg.Connection:
        conn = psycopg.connect(cluster.dsn(dbname), autocommit=autocommit, **kwargs)
        opened.append(conn)
        return conn

    yield open_connection
    for conn in opened:
        conn.close()


@pytest.fixture
def conn(connect: Callable[..., psycopg.Connection]) -> psycopg.Connection:
    """An autocommit connection to the module's database."""
    return connect()


@pytest.fixture
def as_role(
    cluster: Cluster, dbname: str
) -> Iterator[Callable[..., psycopg.Connection]]:
    """Open autocommit connections as a role (a LOGIN role made with create_roles),
    to the module's database or another; all are closed after the test."""
    opened: list[psycopg.Connection] = []

    def connect(role: str, database: str | None = None) -> psycopg.Connection:
        conn = psycopg.connect(
            cluster.dsn(database or dbname, user=role), autocommit=True
        )
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


def create_roles(
    conn: psycopg.Connection, roles: tuple[str, ...], admins: tuple[str, ...] = ()
) -> None:
    """Create LOGIN roles that do not exist yet (roles belong to the cluster, not to
    a module's database) and make ``admins`` members of durable_admin."""
    for role in roles:
        exists = conn.execute(
            "select count(*) from pg_roles where rolname = %s", [role]
        ).fetchone()[0]
        if not exists:
            conn.execute(f"create role {role} login")
    for admin in admins:
        conn.execute(f"grant durable_admin to {admin}")


def drain(conn: psycopg.Connection, queue: str | None = None) -> None:
    """Run a worker on ``conn`` until nothing is ready."""
    conn.execute("call durable.run_worker(queue => %s, drain => true)", [queue])


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(0.02)


def work_until_finished(
    conn: psycopg.Connection, runs: list, timeout: float = 15.0
) -> None:
    """Run a worker on ``conn`` until every run in ``runs`` has finished."""
    deadline = time.monotonic() + timeout
    while True:
        conn.execute("call durable.run_worker(max_runtime => '0.3 seconds')")
        pending = conn.execute(
            "select count(*) from durable._runs where id = any(%s::uuid[])"
            " and status not in ('succeeded', 'failed', 'cancelled')",
            [[str(r) for r in runs]],
        ).fetchone()[0]
        if pending == 0:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{pending} run(s) still unfinished after {timeout}s")


def start(conn: psycopg.Connection, workflow: str, value=None, **options) -> str:
    """durable.start() with a JSON input and named options; returns the run id text."""
    from psycopg.types.json import Jsonb

    names = "".join(f", {key} => %s" for key in options)
    row = conn.execute(
        f"select durable.start(%s, %s{names})::text",
        [workflow, Jsonb({} if value is None else value), *options.values()],
    ).fetchone()
    return row[0]


def run_state(conn: psycopg.Connection, run: str) -> dict:
    """The row of one run in durable.runs, as a dict."""
    cur = conn.execute("select * from durable.runs where id = %s", [run])
    names = [column.name for column in cur.description]
    return dict(zip(names, cur.fetchone()))
