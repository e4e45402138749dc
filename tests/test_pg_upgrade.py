"""A major-version upgrade with runs in flight: pg_upgrade from PostgreSQL 16 to 18.

A 16 cluster holds runs pending (due after the upgrade), sleeping on a timer, waiting
for a signal, and a schedule firing every second. It is stopped, upgraded with the 18
server's pg_upgrade into a new cluster (durable installed in the 18 build beforehand,
as a DBA does), and started; workers of the new server then finish every run exactly
once and the schedule goes on firing once per slot. The procedure is the one
docs/workers.md gives.

The source is 16, not Debian's 15: the 15 server of this platform gives every column
an attribute option ``pg_attver`` that upstream PostgreSQL does not know, and the 18
server's pg_restore refuses it ("unrecognized parameter"), for any database. Both
servers here are the pinned builds of tools/pgbinaries.py; the test runs once, in the
PostgreSQL 15 suite.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from pgcluster import Cluster, server_major

ROOT = Path(__file__).resolve().parent.parent
SOURCE = "16"
TARGET = "18"
# pg_cron is packaged for 15 only: the upgraded cluster must not need it.
NO_PRELOAD = {"shared_preload_libraries": ""}

WORKFLOWS = """
create schema app;
create table app.effects (run_id uuid, step text, primary key (run_id, step));
create function app.flow(input jsonb) returns jsonb language plpython3u as $$
wf.step("a", "insert into app.effects values ($1::uuid, 'a')", [wf.run_id])
got = None
if input.get("sleep"):
    wf.sleep(input["sleep"])
if input.get("signal"):
    got = wf.wait_for_signal("go")
wf.step("b", "insert into app.effects values ($1::uuid, 'b')", [wf.run_id])
return {"got": got}
$$;
create function app.tick(input jsonb) returns jsonb language plpython3u as $$
wf.step("t", "insert into app.effects values ($1::uuid, 't')", [wf.run_id])
return {}
$$;
"""

UNFINISHED = "status not in ('succeeded', 'failed', 'cancelled')"


def build(major: str) -> Path:
    """The bin directory of a major's pinned build (fetched unless cached), with
    durable installed into it."""
    tools = ROOT / "tools" / "pgbinaries.py"
    subprocess.run([sys.executable, str(tools), "fetch", major], check=True)
    pg_config = subprocess.run(
        [sys.executable, str(tools), "pg-config", major],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run(
        ["make", "-s", "install", f"PG_CONFIG={pg_config}"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    return Path(pg_config).parent


def wait_for(
    conn: psycopg.Connection, sql: str, params: list | None = None, timeout: float = 30
) -> None:
    """Run worker slices until ``sql`` returns true (or fail at the deadline)."""
    deadline = time.monotonic() + timeout
    while not conn.execute(sql, params).fetchone()[0]:
        if time.monotonic() > deadline:
            pytest.fail(f"not true within {timeout}s: {sql}")
        conn.execute("call durable.run_worker(max_runtime => '0.5 seconds')")


@pytest.mark.skipif(
    server_major() != 15, reason="upgrades 16 to 18 once: in the PostgreSQL 15 suite"
)
def test_pg_upgrade_from_16_to_18_finishes_every_run_once():
    bindir = build(TARGET)
    old = Cluster(settings=NO_PRELOAD, name="upgrade-old", bindir=build(SOURCE)).start()
    new = Cluster(
        settings=NO_PRELOAD,
        name="upgrade-18",
        bindir=bindir,
        initdb_options=["--no-data-checksums"],  # as the 15 cluster (18 turns them on)
    )
    try:
        with psycopg.connect(old.dsn(), autocommit=True) as conn:
            conn.execute("create database app")
        with psycopg.connect(old.dsn("app"), autocommit=True) as conn:
            conn.execute("create extension durable cascade")
            conn.execute(WORKFLOWS)
            runs = {
                "pending": "select durable.start('app.flow', '{}',"
                " start_at => now() + interval '20 seconds')",
                "sleeping": "select durable.start('app.flow', '{\"sleep\": 3}')",
                "waiting": "select durable.start('app.flow', '{\"signal\": true}')",
            }
            ids = {
                state: conn.execute(sql).fetchone()[0] for state, sql in runs.items()
            }
            conn.execute("select durable.schedule('tick', '1 seconds', 'app.tick')")
            wait_for(
                conn,
                "select count(*) >= 2 from durable.schedule_fires"
                " where schedule = 'tick'",
            )
            states = dict(
                conn.execute(
                    "select id, status from durable._runs where id = any(%s)",
                    [list(ids.values())],
                ).fetchall()
            )
            assert [states[ids[state]] for state in runs] == list(runs)
            fired_before = conn.execute(
                "select max(slot) from durable._schedule_fires"
            ).fetchone()[0]
        old.stop()

        new.init()
        upgrade = new._run(
            bindir / "pg_upgrade",
            "-b",
            old.bindir,
            "-B",
            bindir,
            "-d",
            old.datadir,
            "-D",
            new.datadir,
            "-p",
            str(old.port),
            "-P",
            str(new.port),
            "-U",
            "postgres",
            "--socketdir",
            new.base,
            check=False,
        )
        if upgrade.returncode != 0:
            logs = sorted(new.datadir.glob("pg_upgrade_output.d/*/log/*.log"))
            tails = "".join(
                f"\n--- {log.name}\n"
                + "".join(
                    line
                    for line in log.read_text().splitlines(True)
                    if "error" in line.lower()
                )
                for log in logs
            )
            pytest.fail(f"pg_upgrade failed:\n{upgrade.stdout}{tails}")
        new.start()

        with psycopg.connect(new.dsn("app"), autocommit=True) as conn:
            assert conn.execute("show server_version_num").fetchone()[0] >= "180000"
            conn.execute("select durable.signal(%s, 'go', '\"yes\"')", [ids["waiting"]])
            wait_for(
                conn,
                f"select count(*) = 0 from durable._runs where id = any(%s)"
                f" and {UNFINISHED}",
                [list(ids.values())],
                timeout=60,
            )
            wait_for(
                conn,
                "select count(*) >= 2 from durable._schedule_fires where slot > %s",
                [fired_before],
            )
            results = dict(
                conn.execute(
                    "select id, status from durable._runs where id = any(%s)",
                    [list(ids.values())],
                ).fetchall()
            )
            assert set(results.values()) == {"succeeded"}
            assert conn.execute(
                "select result from durable._runs where id = %s", [ids["waiting"]]
            ).fetchone()[0] == {"got": "yes"}
            # Each SQL step's effect exactly once (the primary key refuses a second),
            # every step of every run there.
            effects = conn.execute(
                "select count(*) from app.effects where run_id = any(%s)",
                [list(ids.values())],
            ).fetchone()[0]
            assert effects == 2 * len(ids)
            # One run per slot: fired slots are distinct, each started one run, and
            # every tick run wrote its effect once.
            slots, distinct, started = conn.execute(
                "select count(*), count(distinct slot), count(distinct run_id)"
                " from durable._schedule_fires where schedule = 'tick'"
                " and outcome = 'started'"
            ).fetchone()
            assert slots == distinct == started
            conn.execute("call durable.run_worker(drain => true)")
            ticks = conn.execute(
                "select count(*) from durable._runs where workflow = 'app.tick'"
            ).fetchone()[0]
            tick_effects = conn.execute(
                "select count(*) from app.effects where step = 't'"
            ).fetchone()[0]
            assert ticks == tick_effects
    finally:
        new.destroy()
        old.destroy()
