"""Observability and day-2 operations: the views, settings, purge, durablectl top."""

from __future__ import annotations

import threading
from datetime import timedelta

import psycopg
import pytest
from conftest import drain, start, wait_until, work_until_finished
from durablectl.cli import main

WORKFLOWS = """
create schema if not exists obs;

create or replace function obs.ok(input jsonb) returns jsonb
language plpython3u as $$
wf.step("one", "select 1 as one")
return {"ok": True}
$$;

create or replace function obs.boom(input jsonb) returns jsonb
language plpython3u as $$
wf.step("divide", "select 1 / $1::int as q", [input["by"]],
        retry={"max_attempts": 2, "initial_interval": 0})
return {}
$$;

create or replace function obs.slow(input jsonb) returns jsonb
language plpython3u as $$
wf.step("sleep", "select pg_sleep($1)", [input["seconds"]])
return {}
$$;
"""

TABLES = (
    "durable._runs, durable._steps, durable._step_attempts, durable._signals,"
    " durable._schedule_fires, durable._workers"
)


@pytest.fixture(autouse=True)
def clean(conn):
    """The workflows exist, and every test starts without runs or workers."""
    conn.execute(WORKFLOWS)
    conn.execute(f"truncate {TABLES}")


def finish_old(conn, runs, age="10 days", status=None):
    """Make runs look finished ``age`` ago (optionally with another status)."""
    conn.execute(
        "update durable._runs set finished_at = now() - %s::interval,"
        " started_at = now() - %s::interval - interval '1 second',"
        " status = coalesce(%s, status), wake_at = null"
        " where id = any(%s::uuid[])",
        [age, age, status, runs],
    )


def one(conn, sql, params=()):
    cur = conn.execute(sql, params)
    names = [column.name for column in cur.description]
    row = cur.fetchone()
    return None if row is None else dict(zip(names, row))


# ------------------------------------------------------------------- queue_stats


def test_queue_stats_counts_runs_by_state(conn):
    done = [start(conn, "obs.ok", queue="q_done") for _ in range(4)]
    failed = start(conn, "obs.boom", {"by": 0}, queue="q_done")
    work_until_finished(conn, [*done, failed])
    for seconds, run in enumerate(done, start=1):
        conn.execute(
            "update durable._runs"
            " set started_at = finished_at - make_interval(secs => %s) where id = %s",
            [seconds, run],
        )
    old = start(conn, "obs.ok", queue="q_done")
    drain(conn, "q_done")
    finish_old(conn, [old], "2 hours")

    ready = [start(conn, "obs.ok", queue="q1") for _ in range(2)]
    conn.execute(
        "update durable._runs set wake_at = now() - interval '10 minutes'"
        " where id = %s",
        [ready[0]],
    )
    start(conn, "obs.ok", queue="q1", start_at="2999-01-01")  # scheduled
    states = [start(conn, "obs.ok", queue="q1") for _ in range(4)]
    conn.execute(
        "update durable._runs as r set status = s.status, wake_at = s.wake_at"
        " from (values (%s::uuid, 'sleeping', now() + interval '1 hour'),"
        " (%s::uuid, 'waiting', null::timestamptz),"
        " (%s::uuid, 'sleeping', now() - interval '1 second'),"
        " (%s::uuid, 'running', now())) as s (id, status, wake_at)"
        " where r.id = s.id",
        states,
    )

    q1 = one(conn, "select * from durable.queue_stats where queue = 'q1'")
    assert q1["workflow"] == "obs.ok"
    assert (q1["ready"], q1["running"], q1["scheduled"]) == (3, 1, 1)
    assert (q1["sleeping"], q1["waiting"]) == (1, 1)
    assert (q1["succeeded_1h"], q1["failed_1h"], q1["cancelled_1h"]) == (0, 0, 0)
    assert timedelta(minutes=10) <= q1["oldest_ready_age"] < timedelta(minutes=11)
    assert q1["p50_duration"] is None

    ok = one(
        conn,
        "select * from durable.queue_stats where queue = 'q_done'"
        " and workflow = 'obs.ok'",
    )
    assert (ok["ready"], ok["succeeded_1h"], ok["failed_1h"]) == (0, 4, 0)
    assert ok["oldest_ready_age"] is None
    assert ok["p50_duration"] == timedelta(seconds=2.5)
    assert ok["p95_duration"] == timedelta(seconds=3.85)
    boom = one(
        conn,
        "select * from durable.queue_stats where queue = 'q_done'"
        " and workflow = 'obs.boom'",
    )
    assert (boom["succeeded_1h"], boom["failed_1h"]) == (0, 1)
    groups = conn.execute("select count(*) from durable.queue_stats").fetchone()[0]
    assert groups == 3


# ----------------------------------------------------------------------- workers


def test_workers_view_while_a_worker_runs_and_after(conn, connect):
    run = start(conn, "obs.slow", {"seconds": 1.0}, queue="wq")
    worker_conn = connect()
    thread = threading.Thread(
        target=worker_conn.execute,
        args=["call durable.run_worker(queue => 'wq', max_runtime => '1.5 seconds')"],
    )
    thread.start()
    try:
        wait_until(
            lambda: conn.execute(
                "select count(*) from durable.workers where run_id = %s", [run]
            ).fetchone()[0]
            == 1
        )
        row = one(conn, "select * from durable.workers")
        assert row["alive"] is True
        assert row["pid"] == worker_conn.info.backend_pid
        assert (row["queue"], row["workflow"]) == ("wq", "obs.slow")
        assert str(row["run_id"]) == run
        assert row["role"] == conn.execute("select session_user").fetchone()[0]
    finally:
        thread.join()
    assert conn.execute("select count(*) from durable.workers").fetchone()[0] == 0


def test_worker_is_alive_only_while_the_backend_that_registered_it_exists(
    conn, connect
):
    holder = connect()
    worker_id = holder.execute(
        "select id from durable._worker_register(null)"
    ).fetchone()[0]

    def alive(worker: int) -> bool:
        return conn.execute(
            "select alive from durable.workers where id = %s", [worker]
        ).fetchone()[0]

    assert alive(worker_id) is True
    # The same pid with another start time is another backend: not that worker.
    forged = conn.execute(
        "insert into durable._workers (pid, backend_start, role)"
        " select pid, backend_start - interval '1 second', usename"
        " from pg_stat_activity where pid = %s returning id",
        [holder.info.backend_pid],
    ).fetchone()[0]
    assert alive(forged) is False
    # An advisory lock proves nothing (0.2.0 took one per worker; anyone can).
    conn.execute("select pg_advisory_lock(1146442306, %s)", [forged])
    assert alive(forged) is False
    conn.execute("select pg_advisory_unlock(1146442306, %s)", [forged])
    holder.close()  # the backend ends a moment later
    wait_until(lambda: alive(worker_id) is False)


# ---------------------------------------------------------------------- failures


def test_failures_group_runs_that_failed_the_same_way(conn):
    same = [start(conn, "obs.boom", {"by": 0}) for _ in range(2)]
    other = start(conn, "obs.boom", {"by": "x"})
    work_until_finished(conn, [*same, other])

    rows = conn.execute(
        "select kind, workflow, step, sqlstate, message, count, runs,"
        " example_run::text, first_seen <= last_seen"
        " from durable.failures order by sqlstate, kind"
    ).fetchall()
    by_key = {(row[0], row[3]): row for row in rows}
    assert set(by_key) == {
        ("run", "22012"),
        ("step", "22012"),
        ("run", "22P02"),
        ("step", "22P02"),
    }
    run_group = by_key["run", "22012"]
    assert run_group[1:5] == ("obs.boom", "divide", "22012", "division by zero")
    assert run_group[5:7] == (2, 2)
    assert run_group[7] in same
    assert run_group[8] is True
    step_group = by_key["step", "22012"]
    assert step_group[5:7] == (4, 2)  # two attempts of each run
    assert by_key["run", "22P02"][5:8] == (1, 1, other)


def test_failures_leave_out_what_is_older_than_a_day(conn):
    run = start(conn, "obs.boom", {"by": 0})
    work_until_finished(conn, [run])
    finish_old(conn, [run], "25 hours")
    conn.execute(
        "update durable._step_attempts set finished_at = now() - interval '25 hours'"
    )
    assert conn.execute("select count(*) from durable.failures").fetchone()[0] == 0


def test_step_attempts_lists_every_failed_attempt(conn):
    run = start(conn, "obs.boom", {"by": 0})
    work_until_finished(conn, [run])
    rows = conn.execute(
        "select attempt, workflow, seq, name, run_attempt, sqlstate, message,"
        " error_type, duration = finished_at - started_at and duration >= '0'"
        " from durable.step_attempts where run_id = %s order by attempt",
        [run],
    ).fetchall()
    failure = (
        "obs.boom",
        1,
        "divide",
        1,
        "22012",
        "division by zero",
        "DivisionByZero",
    )
    assert rows == [(1, *failure, True), (2, *failure, True)]


# ---------------------------------------------------------------------- settings


def setting(conn, key):
    return conn.execute("select durable.setting(%s)", [key]).fetchone()[0]


def test_setting_reads_every_key(conn):
    rows = conn.execute("select key, value from durable.settings").fetchall()
    assert {"retention", "retention.batch_size", "limits.max_payload_bytes"} <= {
        key for key, _ in rows
    }
    for key, value in rows:
        assert setting(conn, key) == value
    assert setting(conn, "retention") == "7 days"
    assert setting(conn, "retention.batch_size") == "1000"
    assert setting(conn, "limits.max_payload_bytes") == "1048576"


def test_unknown_setting_is_an_error_listing_the_keys(conn):
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        setting(conn, "retention.days")
    assert info.value.diag.message_primary == 'unknown setting "retention.days"'
    assert "retention, retention.batch_size" in info.value.diag.message_hint
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("select durable.set_setting('no.such', '1')")
    missing = "select count(*) from durable._settings where key = 'no.such'"
    assert conn.execute(missing).fetchone()[0] == 0


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("worker.poll_interval", "0", "greater than 0"),
        ("worker.poll_interval", "fast", "greater than 0"),
        ("worker.housekeeping_interval", "-1", "a number, 0 or more"),
        ("step.terminate_after", "NaN", "a number, 0 or more"),
        ("retry.max_attempts", "0", "a whole number from 1 to 2147483647"),
        ("retry.max_attempts", "2.5", "a whole number from 1"),
        ("retry.max_attempts", "3000000000", "a whole number from 1"),
        ("retry.backoff", "0.5", "a number, 1 or more"),
        ("retry.jitter", "1.5", "a number from 0 to 1"),
        ("retry.initial_interval", "400", "must not be less than"),
        ("retry.max_interval", "0.5", "must not be less than"),
        ("schedule.max_catch_up", "0", "a whole number from 1"),
        ("schedule.misfire_grace", "infinity", "a number, 0 or more"),
        ("retention", "-1 day", "an interval, 0 or more"),
        ("retention", "a week", "an interval, 0 or more"),
        ("retention.batch_size", "-1", "a whole number from 0"),
        ("limits.max_payload_bytes", "1MB", "a whole number, 1 or more"),
        ("limits.max_payload_bytes", "0", "a whole number, 1 or more"),
    ],
)
def test_bad_setting_values_are_refused_and_change_nothing(conn, key, value, expected):
    before = setting(conn, key)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        conn.execute("select durable.set_setting(%s, %s)", [key, value])
    assert expected in info.value.diag.message_primary
    assert f'setting "{key}"' in info.value.diag.message_primary
    assert info.value.diag.message_hint
    assert setting(conn, key) == before


def test_null_setting_value_is_refused(conn):
    with pytest.raises(psycopg.errors.NullValueNotAllowed):
        conn.execute("select durable.set_setting('retention', null)")


@pytest.mark.parametrize(
    ("key", "value", "stored"),
    [
        ("retention", " 1 week ", "7 days"),
        ("retention", "0", "00:00:00"),
        ("retention.batch_size", "0", "0"),
        ("retry.max_attempts", "1e1", "10"),
        ("retry.jitter", "0.25", "0.25"),
        ("worker.poll_interval", "0.1", "0.1"),
        ("limits.max_payload_bytes", "10000000000", "10000000000"),
    ],
)
def test_set_setting_stores_the_canonical_value(conn, key, value, stored):
    before = setting(conn, key)
    try:
        returned = conn.execute(
            "select durable.set_setting(%s, %s)", [key, value]
        ).fetchone()[0]
        assert returned == stored
        assert setting(conn, key) == stored
    finally:
        conn.execute(
            "update durable._settings set value = %s where key = %s", [before, key]
        )


# ------------------------------------------------------------------------- purge


def count(conn, table, runs):
    return conn.execute(
        f"select count(*) from durable.{table} where run_id = any(%s::uuid[])", [runs]
    ).fetchone()[0]


def test_purge_deletes_old_finished_runs_and_their_rows(conn):
    ok = start(conn, "obs.ok")
    boom = start(conn, "obs.boom", {"by": 0})
    cancelled = start(conn, "obs.ok")
    recent = start(conn, "obs.ok")
    conn.execute("select durable.cancel(%s)", [cancelled])
    work_until_finished(conn, [ok, boom, cancelled, recent])
    unfinished = start(conn, "obs.ok")
    old_unfinished = start(conn, "obs.ok", start_at="2000-01-01")
    finish_old(conn, [ok, boom, cancelled])
    conn.execute(
        "update durable._runs set created_at = now() - interval '30 days'"
        " where id = %s",
        [old_unfinished],
    )
    for run in (ok, recent):
        conn.execute(
            "insert into durable._signals (run_id, name, consumed_seq)"
            " values (%s, 'go', 1)",
            [run],
        )
        conn.execute(
            "insert into durable._schedule_fires (schedule, slot, outcome, run_id)"
            " values ('s', now() - random() * interval '1 day', 'started', %s)",
            [run],
        )
    old = [ok, boom, cancelled]
    assert count(conn, "_steps", old) > 0
    assert count(conn, "_step_attempts", old) == 2

    assert conn.execute("select durable.purge()").fetchone()[0] == 3

    left = {
        row[0] for row in conn.execute("select id::text from durable._runs").fetchall()
    }
    assert left == {recent, unfinished, old_unfinished}
    for table in ("_steps", "_step_attempts", "_signals", "_schedule_fires"):
        assert count(conn, table, old) == 0, table
    assert count(conn, "_signals", [recent]) == 1
    assert count(conn, "_schedule_fires", [recent]) == 1
    assert count(conn, "_steps", [recent]) == 1
    assert conn.execute("select durable.purge()").fetchone()[0] == 0
    assert conn.execute("select durable.purge('0')").fetchone()[0] == 1  # recent


def test_purge_batch_deletes_at_most_batch_size(conn):
    runs = [start(conn, "obs.ok") for _ in range(5)]
    drain(conn)
    finish_old(conn, runs)

    def batch(size):
        return conn.execute(
            "select durable._purge_batch('1 day', %s)", [size]
        ).fetchone()[0]

    assert batch(0) == 0
    assert [batch(2), batch(2), batch(2), batch(2)] == [2, 2, 1, 0]


def test_purge_works_in_batches_of_the_setting(conn):
    runs = [start(conn, "obs.ok") for _ in range(5)]
    drain(conn)
    finish_old(conn, runs)
    conn.execute("select durable.set_setting('retention.batch_size', '2')")
    try:
        assert conn.execute("select durable.purge('1 day')").fetchone()[0] == 5
    finally:
        conn.execute("select durable.set_setting('retention.batch_size', '1000')")


def test_purge_keeps_children_of_parents_that_are_kept(conn):
    kept = ["running_parent", "child", "grandchild", "recent_parent", "young_child"]
    names = [*kept, "root", "root_child", "orphan"]
    run = {name: start(conn, "obs.ok") for name in names}
    parents = {
        "child": "running_parent",
        "grandchild": "child",
        "young_child": "recent_parent",
        "root_child": "root",
    }
    for name, parent in parents.items():
        conn.execute(
            "update durable._runs set parent_id = %s where id = %s",
            [run[parent], run[name]],
        )
    conn.execute(
        "update durable._runs set parent_id = gen_random_uuid() where id = %s",
        [run["orphan"]],
    )
    # Children finish before their parents, so a pass meets them first.
    ages = {"root": 10, "recent_parent": 10, "child": 11, "young_child": 11}
    ages.update(root_child=11, grandchild=12, orphan=12)
    for name, days in ages.items():
        finish_old(conn, [run[name]], f"{days} days", status="succeeded")
    conn.execute(
        "update durable._runs set status = 'running' where id = %s",
        [run["running_parent"]],
    )
    conn.execute(
        "update durable._runs set finished_at = now() - interval '1 hour'"
        " where id = %s",
        [run["recent_parent"]],
    )

    assert conn.execute("select durable.purge('1 day')").fetchone()[0] == 3
    left = {
        row[0] for row in conn.execute("select id::text from durable._runs").fetchall()
    }
    assert left == {run[name] for name in kept}

    finish_old(conn, [run["running_parent"]], status="failed")
    assert conn.execute("select durable.purge('1 day')").fetchone()[0] == 3


def test_purge_batch_deletes_a_child_after_its_parent(conn):
    parent, child = start(conn, "obs.ok"), start(conn, "obs.ok")
    conn.execute(
        "update durable._runs set parent_id = %s where id = %s", [parent, child]
    )
    finish_old(conn, [parent], "10 days", status="succeeded")
    finish_old(conn, [child], "11 days", status="succeeded")

    def purge_batch():
        return conn.execute("select durable._purge_batch('1 day', 10)").fetchone()[0]

    def left():
        rows = conn.execute("select id::text from durable._runs").fetchall()
        return {row[0] for row in rows}

    assert purge_batch() == 1
    assert left() == {child}
    assert (purge_batch(), left(), purge_batch()) == (1, set(), 0)


@pytest.mark.parametrize(
    "call",
    [
        "select durable.purge('-1 day')",
        "select durable.purge(null)",
        "select durable._purge_batch('1 day', -1)",
    ],
)
def test_purge_refuses_bad_arguments(conn, call):
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        conn.execute(call)
    assert info.value.diag.message_hint


# --------------------------------------------------------------------------- top


def test_top_once_prints_queues_workers_and_failures(conn, cluster, dbname, capsys):
    failed = start(conn, "obs.boom", {"by": 0}, queue="boomq")
    work_until_finished(conn, [failed])
    for _ in range(2):
        start(conn, "obs.ok", queue="topq")
    conn.execute(
        "insert into durable._workers (pid, backend_start, role, queue)"
        " values (0, now(), current_user, 'topq')"
    )

    code = main(["--dsn", cluster.dsn(dbname), "top", "--once"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert "\x1b" not in out
    assert out.startswith(f"durable top: database {dbname} at ")
    lines = out.splitlines()
    for title in ("Queues", "Workers", "Failures in the last 24 hours"):
        assert title in lines
    queue = next(line for line in lines if line.startswith("topq"))
    assert queue.split()[:5] == ["topq", "obs.ok", "2", "0", "0"]
    worker = lines[lines.index("Workers") + 3]
    role = conn.execute("select session_user").fetchone()[0]
    assert worker.split()[1:5] == ["0", role, "topq", "false"]
    failure = next(line for line in lines if line.startswith("run "))
    assert failure.split()[:6] == ["run", "obs.boom", "divide", "22012", "1", "1"]
    assert failure.endswith("division by zero")


def test_top_once_on_an_empty_database(cluster, dbname, capsys):
    assert main(["--dsn", cluster.dsn(dbname), "top", "--once"]) == 0
    out = capsys.readouterr().out
    assert "(no runs)" in out
    assert "(no workers)" in out
    assert "(none)" in out


def test_top_live_redraws_with_ansi_clear(cluster, dbname, capsys):
    code = main(
        ["--dsn", cluster.dsn(dbname), "top", "--count", "2", "--interval", "0"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("\x1b[H\x1b[2J") == 2
    assert out.count("durable top: database") == 2


def test_top_reports_a_failed_connection(capsys):
    assert main(["--dsn", "host=/nonexistent port=1", "top", "--once"]) == 1
    assert capsys.readouterr().err.startswith("durablectl: ERROR")


def test_workers_purge_runs_older_than_the_retention(conn):
    old = start(conn, "obs.ok")
    recent = start(conn, "obs.ok")
    work_until_finished(conn, [old, recent])
    finish_old(conn, [old], age="8 days")
    conn.execute("select durable.set_setting('retention', '7 days')")
    conn.execute("call durable.run_worker(max_runtime => '0.2 seconds')")
    left = conn.execute(
        "select array_agg(id::text) from durable._runs where id = any(%s::uuid[])",
        [[old, recent]],
    ).fetchone()[0]
    assert left == [recent]
    steps = conn.execute(
        "select count(*) from durable._steps where run_id = %s", [old]
    ).fetchone()[0]
    assert steps == 0
