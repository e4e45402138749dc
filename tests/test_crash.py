"""Real faults: terminated worker backends, concurrent workers, step timeouts."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import run_state, start, wait_until, work_until_finished

WORKFLOWS = """
create schema if not exists app;
create table if not exists app.effects (run_id uuid, step text);

create or replace function app.three(input jsonb) returns jsonb
language plpython3u as $$
wf.step("one", "insert into app.effects values ($1, 'one')", [wf.run_id])
wf.step("two", "insert into app.effects select $1, 'two' from pg_sleep($2)",
        [wf.run_id, input.get("sleep", 0)])
wf.step("three", "insert into app.effects values ($1, 'three')", [wf.run_id])
return {"ok": True}
$$;

create or replace function app.stuck(input jsonb) returns jsonb
language plpython3u as $$
wf.step("stuck", "select pg_sleep(30)", timeout="0.5 seconds",
        retry={"max_attempts": 2, "initial_interval": 0.01})
$$;
"""


@pytest.fixture(autouse=True)
def workflows(conn):
    conn.execute(WORKFLOWS)


def effects(conn, run):
    return dict(
        conn.execute(
            "select step, count(*) from app.effects where run_id = %s group by step",
            [run],
        ).fetchall()
    )


def test_terminated_worker_is_replaced_and_no_committed_step_repeats(connect):
    conn = connect()
    run = start(conn, "app.three", {"sleep": 30})
    victim = connect()
    victim_pid = victim.info.backend_pid
    thread = threading.Thread(
        target=lambda: pytest.raises(
            Exception,
            victim.execute,
            "call durable.run_worker(max_runtime => '60 seconds')",
        )
    )
    thread.start()
    wait_until(
        lambda: conn.execute(
            "select count(*) from pg_stat_activity where pid = %s"
            " and wait_event = 'PgSleep'",
            [victim_pid],
        ).fetchone()[0]
        == 1
    )
    conn.execute("select pg_terminate_backend(%s)", [victim_pid])
    thread.join(10)
    # The interrupted step runs again (quickly this time) on another worker.
    conn.execute(
        "update durable._runs set input = '{\"sleep\": 0}' where id = %s", [run]
    )
    work_until_finished(conn, [run])
    assert run_state(conn, run)["status"] == "succeeded"
    assert effects(conn, run) == {"one": 1, "two": 1, "three": 1}
    lost = conn.execute(
        "select seq, error->>'sqlstate' from durable._step_attempts where run_id = %s",
        [run],
    ).fetchall()
    assert lost == [(2, "DU040")]


def test_two_workers_execute_each_of_500_runs_once(connect):
    conn = connect()
    runs = [
        row[0]
        for row in conn.execute(
            "select durable.start('app.three')::text from generate_series(1, 500)"
        ).fetchall()
    ]

    def worker():
        connect().execute("call durable.run_worker(drain => true)")

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    work_until_finished(conn, runs)
    counts = conn.execute(
        "select count(*), count(distinct (run_id, step)) from app.effects"
        " where run_id = any(%s::uuid[])",
        [runs],
    ).fetchone()
    assert counts == (1500, 1500)
    assert (
        conn.execute(
            "select count(*) from durable.runs where id = any(%s::uuid[])"
            " and status = 'succeeded'",
            [runs],
        ).fetchone()[0]
        == 500
    )


def test_step_timeout_cancels_the_step_and_counts_an_attempt(connect):
    conn = connect()
    run = start(conn, "app.stuck")

    def worker():
        connect().execute("call durable.run_worker(max_runtime => '6 seconds')")

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    wait_until(
        lambda: run_state(conn, run)["status"] in ("failed", "succeeded"), timeout=10
    )
    elapsed = time.monotonic() - started
    for thread in threads:
        thread.join()
    state = run_state(conn, run)
    assert state["status"] == "failed"
    assert state["error"]["sqlstate"] == "57014"
    assert "timed out after" in state["error"]["message"]
    assert elapsed < 6
    attempts = conn.execute(
        "select count(*) from durable._step_attempts where run_id = %s", [run]
    ).fetchone()[0]
    assert attempts == 2
