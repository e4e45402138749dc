"""Child workflows: start_child and wait, parallel fan-out, race."""

from __future__ import annotations

import threading

import pytest
from conftest import run_state, start, work_until_finished

WORKFLOWS = """
create schema if not exists app;
create table if not exists app.child_pids (run_id uuid, pid int, at timestamptz);

create or replace function app.square(input jsonb) returns jsonb
language plpython3u as $$
if input.get("fail"):
    raise ValueError("cannot square %s" % input["n"])
if input.get("nap"):
    wf.sleep(input["nap"])
if input.get("sleep"):
    wf.step("work", "insert into app.child_pids"
            " select $1, pg_backend_pid(), clock_timestamp() from pg_sleep($2)",
            [wf.run_id, input["sleep"]])
return {"n": input["n"] ** 2}
$$;

create or replace function app.parent(input jsonb) returns jsonb
language plpython3u as $$
child = wf.start_child("app.square", {"n": 3})
one = wf.wait(child)
many = wf.parallel([("app.square", {"n": n, "sleep": input.get("sleep")})
                    for n in input["ns"]])
return {"one": one, "many": many, "child_is_text": isinstance(child, str)}
$$;

create or replace function app.failing_parent(input jsonb) returns jsonb
language plpython3u as $$
import durable
try:
    wf.parallel([("app.square", {"n": 1}), ("app.square", {"n": 2, "fail": True})])
except durable.ChildFailed as failure:
    return {"child": failure.child, "message": failure.error["child_error"]["message"]}
$$;

create or replace function app.racer(input jsonb) returns jsonb
language plpython3u as $$
index, result = wf.race([("app.square", {"n": 5, "nap": 60}), ("app.square", {"n": 7})])
return {"index": index, "result": result}
$$;
"""


@pytest.fixture(autouse=True)
def workflows(conn):
    conn.execute(WORKFLOWS)


def test_children_results_in_input_order(conn):
    run = start(conn, "app.parent", {"ns": [1, 2, 3, 4]})
    work_until_finished(conn, [run])
    state = run_state(conn, run)
    assert state["status"] == "succeeded", state["error"]
    assert state["result"] == {
        "one": {"n": 9},
        "many": [{"n": 1}, {"n": 4}, {"n": 9}, {"n": 16}],
        "child_is_text": True,
    }
    children = conn.execute(
        "select count(*) from durable.runs where parent_id = %s", [run]
    ).fetchone()[0]
    assert children == 5


def test_failed_child_raises_child_failed(conn):
    run = start(conn, "app.failing_parent")
    work_until_finished(conn, [run])
    result = run_state(conn, run)["result"]
    assert result["message"] == "cannot square 2"
    assert run_state(conn, result["child"])["status"] == "failed"


def test_race_first_to_finish_wins_and_the_others_are_cancelled(conn):
    run = start(conn, "app.racer")
    work_until_finished(conn, [run])
    assert run_state(conn, run)["result"] == {"index": 1, "result": {"n": 49}}
    slow = conn.execute(
        "select id from durable.runs where parent_id = %s and input->>'n' = '5'", [run]
    ).fetchone()[0]
    work_until_finished(conn, [slow])
    assert run_state(conn, slow)["status"] == "cancelled"


def test_children_run_concurrently_on_different_workers(connect):
    conn = connect()
    run = start(conn, "app.parent", {"ns": [1, 2], "sleep": 1.0})

    def worker():
        connect().execute("call durable.run_worker(max_runtime => '4 seconds')")

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert run_state(conn, run)["status"] == "succeeded"
    pids, overlap = conn.execute(
        "select count(distinct p.pid),"
        " max(p.at) - min(p.at) < interval '0.9 seconds'"
        " from app.child_pids p join durable.runs r on r.id = p.run_id"
        " where r.parent_id = %s",
        [run],
    ).fetchone()
    assert pids == 2
    assert overlap
