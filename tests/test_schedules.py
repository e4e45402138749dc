"""Schedules: exactly-once firing, catch-up and overlap policies, bad input, pg_cron."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from conftest import wait_until

WORKFLOWS = """
create schema if not exists app;
create or replace function app.tick(input jsonb) returns jsonb
language plpython3u as $$
return {"input": input}
$$;
create or replace function app.slow(input jsonb) returns jsonb
language plpython3u as $$
wf.sleep(input.get("seconds", 60))
return {}
$$;
create or replace function app.other(input jsonb) returns jsonb
language plpython3u as $$
return {}
$$;
"""


@pytest.fixture(autouse=True)
def workflows(conn):
    conn.execute(WORKFLOWS)
    conn.execute("delete from durable._schedules")
    conn.execute("delete from durable._schedule_fires")


def schedule(conn, name, cron, workflow="app.tick", **options):
    names = "".join(f", {key} => %s" for key in options)
    return conn.execute(
        f"select durable.schedule(%s, %s, %s{names})",
        [name, cron, workflow, *options.values()],
    ).fetchone()[0]


def runs_of(conn, name):
    return conn.execute(
        "select count(*) from durable.runs where idempotency_key like %s",
        [f"schedule:{name}:%"],
    ).fetchone()[0]


def test_every_second_with_two_workers_one_run_per_slot(connect):
    conn = connect()
    schedule(conn, "every-second", "1 second")

    def worker():
        connect().execute("call durable.run_worker(max_runtime => '6 seconds')")

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    slots = [
        row[0]
        for row in conn.execute(
            "select extract(epoch from slot)::bigint from durable.schedule_fires"
            " where schedule = 'every-second' order by slot"
        ).fetchall()
    ]
    assert len(slots) >= 5
    assert slots == list(range(slots[0], slots[0] + len(slots)))
    assert runs_of(conn, "every-second") == len(slots)
    late = conn.execute(
        "select max(lateness) < interval '0.5 seconds' from durable.schedule_fires"
        " where schedule = 'every-second'"
    ).fetchone()[0]
    assert late


@pytest.mark.parametrize(
    ("catch_up", "expected"), [("none", 0), ("latest", 1), ("all", 6)]
)
def test_catch_up_after_downtime(conn, catch_up, expected):
    name = f"minutely-{catch_up}"
    # overlap => 'allow': with 'skip', the slots after the first one would be skipped
    # while the first run is unfinished.
    schedule(conn, name, "* * * * *", catch_up=catch_up, overlap="allow")
    # Downtime: the schedule should have fired at each of the last six minutes.
    conn.execute(
        "update durable._schedules set next_fire_at = date_trunc('minute', now())"
        " - interval '5 minutes' where name = %s",
        [name],
    )
    conn.execute(
        "update durable._settings set value = '0' where key = 'schedule.misfire_grace'"
    )
    try:
        conn.execute("call durable.run_worker(drain => true)")
    finally:
        conn.execute(
            "update durable._settings set value = '60'"
            " where key = 'schedule.misfire_grace'"
        )
    assert runs_of(conn, name) == expected
    future = conn.execute(
        "select next_fire_at > now() from durable.schedules where name = %s", [name]
    ).fetchone()[0]
    assert future


def test_overlap_skip_starts_nothing_while_the_previous_run_is_unfinished(conn):
    schedule(conn, "skip", "1 second", workflow="app.slow", overlap="skip")
    conn.execute("call durable.run_worker(max_runtime => '2.5 seconds')")
    assert runs_of(conn, "skip") == 1
    outcomes = dict(
        conn.execute(
            "select outcome, count(*) from durable.schedule_fires"
            " where schedule = 'skip'"
            " group by outcome"
        ).fetchall()
    )
    assert outcomes["started"] == 1
    assert outcomes["skipped"] >= 1


def test_overlap_allow_starts_a_run_for_every_slot(conn):
    schedule(conn, "allow", "1 second", workflow="app.slow", overlap="allow")
    conn.execute("call durable.run_worker(max_runtime => '2.5 seconds')")
    assert runs_of(conn, "allow") >= 2


def test_overlap_queue_waits_for_the_previous_run(conn):
    schedule(conn, "queue", "1 second", workflow="app.slow", overlap="queue",
             input=psycopg.types.json.Jsonb({"seconds": 1.5}))  # fmt: skip
    conn.execute("call durable.run_worker(max_runtime => '1.2 seconds')")
    assert runs_of(conn, "queue") == 1
    conn.execute("call durable.run_worker(max_runtime => '3 seconds')")
    assert runs_of(conn, "queue") >= 2
    overlapping = conn.execute(
        "select count(*) from durable.runs a join durable.runs b"
        " on a.id < b.id and a.started_at < b.finished_at"
        " and b.started_at < a.finished_at"
        " where a.idempotency_key like 'schedule:queue:%'"
        " and b.idempotency_key like 'schedule:queue:%'"
    ).fetchone()[0]
    assert overlapping == 0


def test_disabled_schedule_does_not_fire_and_unschedule(conn):
    schedule(conn, "paused", "1 second", enabled=False)
    conn.execute("call durable.run_worker(max_runtime => '1.2 seconds')")
    assert runs_of(conn, "paused") == 0
    assert conn.execute("select durable.unschedule('paused')").fetchone()[0] is True
    assert conn.execute("select durable.unschedule('paused')").fetchone()[0] is False


def test_schedule_is_an_upsert_by_name(conn):
    schedule(conn, "upsert", "0 3 * * *", timezone="Europe/Berlin")
    schedule(conn, "upsert", "30 4 * * *", timezone="Europe/Berlin")
    row = conn.execute(
        "select cron, to_char(next_fire_at at time zone 'Europe/Berlin', 'HH24:MI')"
        " from durable.schedules where name = 'upsert'"
    ).fetchone()
    assert row == ("30 4 * * *", "04:30")


@pytest.mark.parametrize(
    ("cron", "workflow", "options", "sqlstate", "fragment"),
    [
        ("61 * * * *", "app.tick", {}, "22023", "minute"),
        ("0 seconds", "app.tick", {}, "22023", "0 seconds"),
        ("61 seconds", "app.tick", {}, "22023", "61 seconds"),
        ("0 0 0 * *", "app.tick", {}, "22023", "day"),
        ("not cron", "app.tick", {}, "22023", "cron"),
        (
            "* * * * *",
            "app.tick",
            {"timezone": "Mars/Olympus"},
            "22023",
            "Mars/Olympus",
        ),
        ("* * * * *", "app.missing", {}, "42883", "app.missing"),
        ("* * * * *", "app.tick", {"overlap": "sometimes"}, "22023", "overlap"),
        ("* * * * *", "app.tick", {"catch_up": "maybe"}, "22023", "catch_up"),
        ("* * * * *", "app.other", {}, "42710", "already exists for workflow app.tick"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(
    conn, cron, workflow, options, sqlstate, fragment
):
    schedule(conn, "existing", "0 * * * *")
    with pytest.raises(psycopg.Error) as raised:
        schedule(conn, "existing" if workflow == "app.other" else "bad", cron, workflow,
                 **options)  # fmt: skip
    assert raised.value.sqlstate == sqlstate
    assert fragment in raised.value.diag.message_primary
    assert raised.value.diag.message_hint
    names = conn.execute("select array_agg(name) from durable.schedules").fetchone()[0]
    assert names == ["existing"]


def test_install_workers_without_pg_cron_names_durablectl(conn):
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("select durable.install_workers(2)")
    assert raised.value.sqlstate == "0A000"
    assert "durablectl worker" in raised.value.diag.message_hint


def test_install_workers_with_pg_cron_executes_runs(cluster, pg_cron):
    """pg_cron lives in the database named by cron.database_name (postgres here)."""
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute("create extension if not exists pg_cron")
        conn.execute("create extension if not exists durable cascade")
        conn.execute(WORKFLOWS)
        try:
            assert conn.execute("select durable.install_workers(2)").fetchone()[0] == 2
            jobs = conn.execute(
                "select command, database, username from cron.job"
                " where jobname like 'durable-worker:%' order by jobname"
            ).fetchall()
            assert jobs == [
                ("CALL durable.run_worker(max_runtime => '59 seconds')", "postgres",
                 "postgres"),
            ] * 2  # fmt: skip
            run = conn.execute("select durable.start('app.tick')").fetchone()[0]
            wait_until(
                lambda: conn.execute("select durable.status(%s)", [run]).fetchone()[0]
                == "succeeded",
                timeout=75,
            )
        finally:
            removed = conn.execute("select durable.uninstall_workers()").fetchone()[0]
            conn.execute("select pg_terminate_backend(pid) from durable._workers")
        assert removed == 2
        assert (
            conn.execute(
                "select count(*) from cron.job where jobname like 'durable-worker:%'"
            ).fetchone()[0]
            == 0
        )
        time.sleep(0.1)
