"""Installing and removing the extension."""

from __future__ import annotations

import psycopg
import pytest


@pytest.fixture
def scratch(cluster):
    """A database without the extension, dropped afterwards."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute("drop database if exists install_scratch")
        admin.execute("create database install_scratch")
    with psycopg.connect(cluster.dsn("install_scratch"), autocommit=True) as conn:
        yield conn
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute("drop database install_scratch")


def test_create_extension_cascade_installs_plpython(scratch):
    scratch.execute("create extension durable cascade")
    languages = {
        row[0] for row in scratch.execute("select extname from pg_extension").fetchall()
    }
    assert {"durable", "plpython3u"} <= languages
    assert scratch.execute(
        "select to_regprocedure('durable.start(text,jsonb,timestamptz,"
        "text,text,integer)') is not null"
    ).fetchone()[0]


def test_drop_extension_leaves_nothing_behind(scratch):
    before = scratch.execute("select count(*) from pg_class").fetchone()[0]
    scratch.execute("create extension durable cascade")
    scratch.execute("drop extension durable")
    assert scratch.execute("select to_regnamespace('durable')").fetchone()[0] is None
    assert scratch.execute("select count(*) from pg_class").fetchone()[0] == before
    leftovers = scratch.execute(
        "select count(*) from pg_proc where prosrc like '%durable._load%'"
    ).fetchone()[0]
    assert leftovers == 0


def test_install_script_refuses_psql(cluster):
    import subprocess

    from build_sql import extension_version, installed_extension_dir

    script = installed_extension_dir() / f"durable--{extension_version()}.sql"
    result = subprocess.run(
        [cluster.bindir / "psql", cluster.dsn(), "-X", "-f", str(script)],
        capture_output=True,
        text=True,
    )
    assert 'Use "CREATE EXTENSION durable CASCADE"' in result.stdout + result.stderr


def test_admin_role_exists_and_reinstall_in_second_database(cluster, scratch):
    scratch.execute("create extension durable cascade")
    # The template database installed it before: the role creation must not fail.
    assert (
        scratch.execute(
            "select count(*) from pg_roles where rolname = 'durable_admin'"
        ).fetchone()[0]
        == 1
    )


def test_engine_loads_once_per_session_under_a_versioned_key(scratch):
    scratch.execute("create extension durable cascade")
    key = scratch.execute("select durable._load()").fetchone()[0]
    version = scratch.execute(
        "select extversion from pg_extension where extname = 'durable'"
    ).fetchone()[0]
    assert key == f"durable-{version}"
    assert scratch.execute("select durable._load()").fetchone()[0] == key


def test_no_preload_or_restart_needed(scratch):
    preload = scratch.execute("show shared_preload_libraries").fetchone()[0]
    assert "durable" not in preload
